"""The `fly-machines` Prefect worker type: one Fly Machine per flow run.

Registered through the `prefect.collections` entry point (pyproject.toml), which imports this
module, so `prefect worker start --pool NAME` and `prefect work-pool create --type fly-machines`
find the worker once the project is installed.
"""

from deployments.fly_worker.worker import FlyMachinesJobConfiguration, FlyMachinesVariables, FlyMachinesWorker

__all__ = ["FlyMachinesJobConfiguration", "FlyMachinesVariables", "FlyMachinesWorker"]
