"""The `fly-machines` worker: one Fly Machine per flow run, watched until it exits.

run(): create the Machine (paced; an ambiguous create is resolved by metadata, so one run never
gets two), report `<app>:<machine_id>` as the infrastructure id, long-poll `/wait` until the
Machine stops, then read the exit code from its newest `exit` event. Non-zero (137: out of
memory, or the Machine killed) makes Prefect mark the run Crashed. A run past `max_runtime_s`
is stopped like kill_infrastructure stops one: SIGTERM, then a forced delete.

A run whose job variables ask for what only the operator may set (another API host, app, command,
an image outside the runs app's registry, secrets in env: config.refusal) is failed before any
Machine exists. The Machines API and logs hosts are the worker's own settings (FLY_API_URL,
FLY_LOGS_URL), the only places its FLY_API_TOKEN goes.

On start, then every VIBEINSIGHT_FLY_SWEEP_INTERVAL_S, the worker sweeps the pool's Machines,
whichever worker created them: one whose flow run is over (or gone), or which is older than the
max_runtime_s written in its own metadata, is stopped and deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import anyio
import anyio.abc
from prefect.exceptions import InfrastructureNotAvailable, InfrastructureNotFound, ObjectNotFound
from prefect.states import Crashed, Failed
from prefect.utilities.engine import propose_state
from prefect.workers.base import BaseWorker, BaseWorkerResult

from deployments.fly_worker.client import FlyMachinesClient, MachineNotFound
from deployments.fly_worker.config import (
    DEFAULT_APP,
    DEFAULT_MAX_RUNTIME_S,
    FLOW_RUN_KEY,
    MAX_RUNTIME_KEY,
    POOL_KEY,
    FlyMachinesJobConfiguration,
    FlyMachinesVariables,
    RunRefused,
    exit_code_of,
)
from deployments.machine_usage import book_machine_run
from vibeinsight.settings import FlyWorkerSettings

GONE = ("destroyed", "destroying")
DONE = ("stopped", "failed", *GONE)
TERMINAL_RUN_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
MAX_RUNTIME_EXIT = -1  # reported when the worker had to stop a Machine that ran past max_runtime_s
WAIT_POLL_S = 15  # one /wait long-poll (Fly caps it at 60 s); between two, the run's state is read
# A run can be final before its command exits (hooks, uploads of logs): give the Machine this long.
TERMINAL_GRACE_S = 30
FORWARDED_LOG_LINES = 50  # of a Machine that failed before Prefect started, into the run's logs


class FlyMachinesWorkerResult(BaseWorkerResult):
    """identifier is `<app>:<machine_id>`; status_code the Machine's exit code."""


class FlyMachinesWorker(BaseWorker[FlyMachinesJobConfiguration, FlyMachinesVariables, FlyMachinesWorkerResult]):
    type = "fly-machines"
    job_configuration = FlyMachinesJobConfiguration
    job_configuration_variables = FlyMachinesVariables
    _display_name = "Fly Machines"
    _description = "Runs each flow run in its own Fly Machine, destroyed when the run ends."
    _documentation_url = "https://fly.io/docs/machines/api/"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fly_settings = FlyWorkerSettings()  # read once, from the worker's own environment
        self._fly_client: FlyMachinesClient | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def _fly(self) -> FlyMachinesClient:
        """One client for the worker's lifetime (all runs share its pacing), on the worker's own hosts."""
        if self._fly_client is None:
            self._fly_client = await FlyMachinesClient(self.fly_settings.api_url,
                                                       logs_url=self.fly_settings.logs_url).__aenter__()
        return self._fly_client

    async def __aenter__(self) -> FlyMachinesWorker:
        await super().__aenter__()
        await self._sweep_once()
        self._sweeper = asyncio.create_task(self._sweep_loop())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            if self._sweeper is not None:
                self._sweeper.cancel()
                await asyncio.gather(self._sweeper, return_exceptions=True)
                self._sweeper = None
            await super().__aexit__(*exc_info)
        finally:
            if self._fly_client is not None:
                await self._fly_client.__aexit__(None, None, None)
                self._fly_client = None

    async def _sweep_once(self) -> None:
        try:
            await self.sweep()
        except Exception as exc:  # noqa: BLE001 - a failed sweep must not keep the worker from serving runs
            self._logger.warning("sweep of the pool's Machines failed: %s", exc)

    async def _sweep_loop(self) -> None:
        """Max runtime is enforced by every worker, not only the one that created a Machine (it may be gone)."""
        while True:
            await asyncio.sleep(self.fly_settings.sweep_interval_s)
            await self._sweep_once()

    # -- one run --

    async def run(self, flow_run: Any, configuration: FlyMachinesJobConfiguration,
                  task_status: anyio.abc.TaskStatus[str] | None = None) -> FlyMachinesWorkerResult:
        logger = self.get_flow_run_logger(flow_run)
        if configuration.refused:
            await self._refuse(flow_run, configuration.refused, logger)
        client = await self._fly()
        app = configuration.app
        body = configuration.machine_request(str(flow_run.id), self._work_pool_name)
        started = time.monotonic()
        machine = await client.create_machine(app, body)
        identifier = f"{app}:{machine['id']}"
        logger.info("Flow run runs in Fly Machine %s (%s, %s)", machine["id"], app, machine.get("region", "?"))
        if task_status is not None:
            task_status.started(identifier)
        code = await self._watch(client, app, machine, configuration.max_runtime_s, logger, flow_run.id)
        if code not in (0, MAX_RUNTIME_EXIT) and not await self._run_started(flow_run.id):
            # Boot, pull or import failures happen before Prefect's engine logs anything: only Fly has them.
            await self._forward_machine_logs(client, app, machine["id"], code, logger)
        await self._settle_cancelling(flow_run.id, machine["id"], logger)
        # Fly bills the Machine from its create to its exit: its seconds, size and price go to the
        # usage ledger (a thread: the ledger is blocking I/O; booking never fails the run).
        await anyio.to_thread.run_sync(book_machine_run, flow_run, body["config"]["guest"], time.monotonic() - started,
                                       machine.get("region") or configuration.region, machine["id"])
        return FlyMachinesWorkerResult(identifier=identifier, status_code=code)

    async def _refuse(self, flow_run: Any, reason: str, logger: logging.Logger | logging.LoggerAdapter) -> None:
        """Fail the run (Failed: a refusal is final, not a crash of infrastructure) and raise, so no Machine is made.

        Prefect's worker then logs the submission failure and proposes Crashed, which the server turns
        down for a run already Failed."""
        message = f"Flow run refused by the fly-machines worker: {reason}. No Machine was created."
        logger.error(message)
        try:
            await propose_state(self.client, Failed(message=message), flow_run_id=flow_run.id)
        except Exception as exc:  # noqa: BLE001 - the raise below still keeps the Machine from being made
            logger.warning("could not mark the refused run Failed: %s", exc)
        raise RunRefused(reason)

    async def _watch(self, client: FlyMachinesClient, app: str, machine: dict[str, Any], max_runtime_s: int,
                     logger: logging.Logger | logging.LoggerAdapter, flow_run_id: UUID | None = None) -> int:
        """Long-poll until the Machine is stopped or gone; its exit code (MAX_RUNTIME_EXIT when stopped by us).

        Between polls it reads the run's state: a run that is over (cancelled from the UI, say) while its
        Machine still runs past TERMINAL_GRACE_S gets the Machine stopped and deleted, whatever happens
        inside it, and 0 back (Prefect has the run's final state already)."""
        machine_id, instance_id = machine["id"], machine.get("instance_id")
        deadline = time.monotonic() + max_runtime_s
        over_since: float | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                logger.error("Machine %s ran past max_runtime_s=%d; stopping it", machine_id, max_runtime_s)
                await self._stop_and_delete(client, app, machine_id, grace_seconds=30)
                return MAX_RUNTIME_EXIT
            try:
                reached = await client.wait(app, machine_id, "stopped", instance_id, timeout_s=min(WAIT_POLL_S, left))
            except MachineNotFound:
                reached = True  # auto_destroy already removed it: GET still shows its events
            if not reached:
                if flow_run_id is not None and await self._run_is_over(flow_run_id):
                    over_since = over_since or time.monotonic()
                    if time.monotonic() - over_since >= TERMINAL_GRACE_S:
                        logger.warning("Flow run is over but Machine %s still runs; stopping it", machine_id)
                        await self._stop_and_delete(client, app, machine_id, grace_seconds=10)
                        return 0
                continue
            current = await client.get_machine(app, machine_id)
            if current.get("state") not in DONE:  # waited on an older instance; go on
                instance_id = current.get("instance_id", instance_id)
                continue
            code = exit_code_of(current)
            if code is None:  # stopped but the exit event not recorded yet
                await asyncio.sleep(1)
                code = exit_code_of(await client.get_machine(app, machine_id))
            if code is None:
                logger.warning("Machine %s ended in state %s with no exit event", machine_id, current.get("state"))
                return -1 if current.get("state") == "failed" else 0
            logger.info("Machine %s exited with code %d", machine_id, code)
            return code

    async def _read_run(self, flow_run_id: UUID) -> Any | None:
        """The flow run as the API has it now; None when the API is briefly down."""
        try:
            return await self.client.read_flow_run(flow_run_id)
        except Exception:  # noqa: BLE001 - the caller asks again, or assumes the harmless answer
            return None

    async def _run_started(self, flow_run_id: UUID) -> bool:
        """Whether the run ever reached Running (Prefect's engine started in the Machine); unknown
        counts as started, so nothing is forwarded for a run that may have logged itself."""
        run = await self._read_run(flow_run_id)
        return run is None or run.start_time is not None

    async def _forward_machine_logs(self, client: FlyMachinesClient, app: str, machine_id: str,
                                    code: int, logger: logging.Logger | logging.LoggerAdapter) -> None:
        """The Machine's last lines into the flow run's logs, as prefect-aws does with CloudWatch for ECS."""
        try:
            entries = await client.recent_logs(app, machine_id)
        except Exception as exc:  # noqa: BLE001 - context for a failure, never a failure of its own
            logger.warning("Machine %s exited with code %d before the flow run started; its logs could not be "
                           "read (%s): fly logs -a %s -i %s", machine_id, code, exc, app, machine_id)
            return
        lines = [str(e.get("message", "")).rstrip() for e in entries][-FORWARDED_LOG_LINES:]
        logger.error("Machine %s exited with code %d before the flow run started; its last %d log lines:\n%s",
                     machine_id, code, len(lines), "\n".join(lines) or "(none)")

    async def _settle_cancelling(self, flow_run_id: UUID, machine_id: str,
                                 logger: logging.Logger | logging.LoggerAdapter) -> None:
        """Mark Cancelled a run still Cancelling once its Machine has exited: nothing else will.

        Prefect's worker watches a run for cancellation only while submitting it, and the engine's own
        watcher only once it is up; a run cancelled between the two (a fan-out part cancelled with its
        parent while its Machine boots) has its engine refuse to start (exit 1) and stays Cancelling."""
        run = await self._read_run(flow_run_id)
        if run is None or run.state is None or run.state.type.value != "CANCELLING":
            return
        logger.info("Flow run is still Cancelling after its Machine %s exited; marking it Cancelled", machine_id)
        await self._mark_flow_run_as_cancelled(
            run, state_updates={"message": f"Flow run cancelled; its Fly Machine {machine_id} has exited."})

    async def _run_is_over(self, flow_run_id: UUID) -> bool:
        run = await self._read_run(flow_run_id)  # None: ask again next poll
        return bool(run and run.state and run.state.type.value in TERMINAL_RUN_STATES)

    # -- cancellation and clean-up --

    async def kill_infrastructure(self, infrastructure_pid: str, configuration: FlyMachinesJobConfiguration,
                                  grace_seconds: int = 30) -> None:
        app, _, machine_id = infrastructure_pid.partition(":")
        if not machine_id or app != configuration.app:
            raise InfrastructureNotAvailable(f"{infrastructure_pid!r} is not a Machine of app {configuration.app!r}")
        client = await self._fly()
        try:
            await client.get_machine(app, machine_id)
        except MachineNotFound as exc:
            raise InfrastructureNotFound(f"Machine {machine_id} not found in {app}") from exc
        await self._stop_and_delete(client, app, machine_id, grace_seconds)

    async def _stop_and_delete(self, client: FlyMachinesClient, app: str, machine_id: str, grace_seconds: int) -> None:
        """SIGTERM (Prefect's command hands the run back), up to grace_seconds, then a forced delete, always:
        a Machine stopped but not destroyed (auto_destroy off, or a stuck destroy) still costs its rootfs."""
        try:
            current = await client.get_machine(app, machine_id)
            if current.get("state") in GONE:
                return
            await client.stop_machine(app, machine_id, "SIGTERM", grace_seconds)
            # `stopped` is waited for by instance: the one just asked to stop
            await client.wait(app, machine_id, "stopped", current.get("instance_id"), timeout_s=max(1, grace_seconds))
        except MachineNotFound:
            pass  # gone already (auto_destroy after the stop): the delete below is a no-op
        except Exception as exc:  # noqa: BLE001 - the delete below forces it anyway
            self._logger.warning("stop of Machine %s failed (%s); deleting with force", machine_id, exc)
        try:
            await client.delete_machine(app, machine_id, force=True)
        except MachineNotFound:
            pass

    def _pool_defaults(self) -> dict[str, Any]:
        variables = ((self._work_pool.base_job_template if self._work_pool else {}) or {}).get("variables", {})
        return {k: v.get("default") for k, v in (variables.get("properties") or {}).items()}

    async def sweep(self) -> list[str]:
        """Stop and delete the pool's Machines whose flow run is over (or gone), or which are older than
        their own max_runtime_s, whoever created them; returns their ids."""
        defaults = self._pool_defaults()
        app = defaults.get("app") or DEFAULT_APP
        pool_max_s = int(defaults.get("max_runtime_s") or DEFAULT_MAX_RUNTIME_S)
        client = await self._fly()
        swept = []
        for machine in await client.list_machines(app, {POOL_KEY: self._work_pool_name}):
            metadata = machine.get("config", {}).get("metadata") or {}
            run_id = _uuid(metadata.get(FLOW_RUN_KEY))
            if machine.get("state") in GONE or run_id is None:
                continue
            reason = await self._sweep_reason(machine, run_id, _int(metadata.get(MAX_RUNTIME_KEY)) or pool_max_s)
            if reason is None:
                continue
            self._logger.warning("sweeping Machine %s of flow run %s: %s", machine["id"], run_id, reason)
            await self._stop_and_delete(client, app, machine["id"], grace_seconds=10)
            swept.append(machine["id"])
            if reason.startswith("older"):  # a run still open whose Machine we killed: say why it ended
                await self._crash_run(run_id, f"Fly Machine {machine['id']} {reason}; stopped and deleted")
        return swept

    async def _sweep_reason(self, machine: dict[str, Any], run_id: UUID, max_runtime_s: int) -> str | None:
        """Why a Machine goes: its run ended TERMINAL_GRACE_S ago or more (its hooks had their time), its
        run no longer exists, or it is older than its max_runtime_s; None keeps it."""
        try:
            run = await self.client.read_flow_run(run_id)
        except ObjectNotFound:
            return "its flow run no longer exists"
        state = run.state
        if state is not None and state.type.value in TERMINAL_RUN_STATES:
            ended = state.timestamp.timestamp() if state.timestamp else 0.0
            if time.time() - ended >= TERMINAL_GRACE_S:
                return f"its flow run is {state.type.value}"
        created = _parse_time(machine.get("created_at"))
        if created is not None and time.time() - created > max_runtime_s:
            return f"older than its max_runtime_s={max_runtime_s}"
        return None

    async def _crash_run(self, run_id: UUID, message: str) -> None:
        try:
            await propose_state(self.client, Crashed(message=message), flow_run_id=run_id)
        except Exception as exc:  # noqa: BLE001 - already final (Abort), or the API away: reconcile-status repairs it
            self._logger.info("flow run %s not marked Crashed: %s", run_id, exc)


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _parse_time(value: Any) -> float | None:
    """Fly's created_at (RFC 3339, `2023-11-08T01:52:30Z`) as a POSIX time; None when absent or unreadable."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
