"""The `fly-machines` pool's variables, the job configuration a run resolves to, and the Machine
it becomes: pure data, no network.

The variables' JSON schema is the pool's `variables` section (Prefect's UI and
`prefect work-pool get-default-base-job-template --type fly-machines` show it); the job
configuration is what `run()` receives after the pool defaults, the deployment's and the flow
run's job variables are merged.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Literal

from prefect.settings import get_current_settings
from prefect.workers.base import BaseJobConfiguration, BaseVariables
from pydantic import Field

DEFAULT_API_URL = "https://api.machines.dev"
DEFAULT_LOGS_URL = "https://api.fly.io"  # GET /api/v1/apps/{app}/logs: flyctl's, not part of the Machines API
DEFAULT_APP = "vibeinsight-runs"
DEFAULT_IMAGE = f"registry.fly.io/{DEFAULT_APP}:latest"
FLOW_RUN_KEY = "prefect_flow_run_id"  # config.metadata key: finds a run's Machine (ambiguous creates, the sweep)
POOL_KEY = "prefect_work_pool"
# Never in a Machine's config: anyone holding the app token can read a config back with GET.
# PREFECT_API_KEY (and an auth string) reach the Machine as Fly app secrets instead.
SECRET_ENV = ("FLY_API_TOKEN", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")


class FlyMachinesVariables(BaseVariables):
    """What a pool admin (or a deployment's job_variables) may set."""

    app: str = Field(DEFAULT_APP, description="Fly app the run Machines are created in (its secrets reach every Machine)")
    image: str = Field(DEFAULT_IMAGE, description="image the Machine boots, with the project and the model baked in")
    region: str = Field("nrt", description="Fly region, or a prioritized comma list such as 'nrt,hkg'")
    cpu_kind: Literal["performance", "shared"] = Field("performance", description="shared vCPUs are throttled")
    cpus: int = Field(2, ge=1, description="vCPUs per Machine")
    memory_mb: int = Field(4096, ge=256, description="performance: 2048-8192 MB per vCPU, in multiples of 2048")
    api_url: str = Field(DEFAULT_API_URL, description="Machines API; http://_api.internal:4280 inside Fly's network")
    logs_url: str = Field(DEFAULT_LOGS_URL, description="Fly's logs API (what `fly logs` reads): a run whose Machine "
                                                       "fails before Prefect starts gets the Machine's last lines")
    max_runtime_s: int = Field(6 * 3600, ge=1, description="the worker stops the Machine of a run past this")
    env: dict[str, str | None] = Field(default_factory=lambda: {"PYTHONUNBUFFERED": "1"},
                                       description="environment of the run (never secrets: use Fly app secrets)")


class FlyMachinesJobConfiguration(BaseJobConfiguration):
    app: str = Field(DEFAULT_APP)
    image: str = Field(DEFAULT_IMAGE)
    region: str = Field("nrt")
    cpu_kind: str = Field("performance")
    cpus: int = Field(2)
    memory_mb: int = Field(4096)
    api_url: str = Field(DEFAULT_API_URL)
    logs_url: str = Field(DEFAULT_LOGS_URL)
    max_runtime_s: int = Field(6 * 3600)

    def prepare_for_flow_run(self, flow_run: Any, deployment: Any = None, flow: Any = None,
                             work_pool: Any = None, worker_name: str | None = None,
                             worker_id: Any = None) -> None:
        super().prepare_for_flow_run(flow_run, deployment, flow, work_pool, worker_name, worker_id)
        # Prefect copies every setting set on the worker into the run's env, the API key too.
        for name in SECRET_ENV:
            self.env.pop(name, None)
        api_url = get_current_settings().api.url
        if api_url and not self.env.get("PREFECT_API_URL"):
            self.env["PREFECT_API_URL"] = api_url
        self.env["PREFECT__FLOW_RUN_ID"] = str(flow_run.id)

    def machine_request(self, flow_run_id: str, pool_name: str | None = None) -> dict[str, Any]:
        """The POST /v1/apps/{app}/machines body for one flow run."""
        command = shlex.split(self.command) if self.command else ["prefect", "flow-run", "execute"]
        metadata = {FLOW_RUN_KEY: flow_run_id}
        if pool_name:
            metadata[POOL_KEY] = pool_name
        return {
            "name": machine_name(self.name, flow_run_id),
            "region": self.region,
            "config": {
                "image": self.image,
                "init": {"cmd": command},
                "env": {k: str(v) for k, v in self.env.items() if v is not None and k not in SECRET_ENV},
                "guest": {"cpu_kind": self.cpu_kind, "cpus": self.cpus, "memory_mb": self.memory_mb},
                # One run, one Machine: Fly destroys it when the command exits, and never restarts it
                # (the default on-failure policy would re-run a crashed flow up to 10 times).
                "auto_destroy": True,
                "restart": {"policy": "no"},
                # Fly's default is SIGINT; Prefect's flow-run command handles SIGTERM.
                "stop_config": {"signal": "SIGTERM", "timeout": "30s"},
                "metadata": metadata,
            },
        }


def machine_name(name: str | None, flow_run_id: str) -> str:
    """A DNS-safe name: the run's name (Prefect's flow-run name by default) and the run id's head."""
    slug = re.sub(r"[^a-z0-9-]+", "-", (name or "run").lower()).strip("-")[:40] or "run"
    return f"prefect-{slug}-{flow_run_id[:8]}"


def exit_code_of(machine: dict[str, Any]) -> int | None:
    """The exit code in the Machine's newest `exit` event (events are newest first); OOM is 137.

    Fly puts it under `request.exit_event` or `request.MonitorEvent.exit_event` (fly-go checks both).
    """
    events = sorted(machine.get("events") or [], key=lambda e: e.get("timestamp") or 0, reverse=True)
    for event in events:
        if event.get("type") != "exit":
            continue
        request = event.get("request") or {}
        exit_event = (request.get("MonitorEvent") or {}).get("exit_event") or request.get("exit_event") or {}
        if exit_event.get("oom_killed"):
            return 137
        if exit_event.get("exit_code") is not None:
            return int(exit_event["exit_code"])
    return None


def auth_header(token: str) -> str:
    """A macaroon (`FlyV1 fm2_…`, as `fly tokens create` prints it) goes as it is; anything else as Bearer."""
    token = token.strip()
    return token if token.startswith("FlyV1 ") else f"Bearer {token}"
