"""The `fly-machines` pool's variables, the job configuration a run resolves to, and the Machine
it becomes: pure data, no network.

The variables' JSON schema is the pool's `variables` section (Prefect's UI and
`prefect work-pool get-default-base-job-template --type fly-machines` show it); the job
configuration is what `run()` receives after the pool defaults, the deployment's and the flow
run's job variables are merged.

Anyone who may create a flow run may pass job variables, so what reaches a Machine that holds the
runs app's secrets is checked here (`refusal`): the Machines API and logs hosts are the worker's
own settings (FLY_API_URL, FLY_LOGS_URL), never variables; a deployment or a run may not change
the app, the command, or the image outside the runs app's registry, nor put secrets or
redirections in env.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Literal

from prefect.settings import get_current_settings
from prefect.workers.base import BaseJobConfiguration, BaseVariables
from pydantic import Field, PrivateAttr
from pydantic.json_schema import SkipJsonSchema

DEFAULT_APP = "vibeinsight-runs"
DEFAULT_IMAGE = f"registry.fly.io/{DEFAULT_APP}:latest"
DEFAULT_MAX_RUNTIME_S = 6 * 3600
FLOW_RUN_KEY = "prefect_flow_run_id"  # config.metadata key: finds a run's Machine (ambiguous creates, the sweep)
POOL_KEY = "prefect_work_pool"
MAX_RUNTIME_KEY = "prefect_max_runtime_s"  # read back by any worker's sweep: the limit travels with the Machine
# Never in a Machine's config: anyone holding the app token can read a config back with GET.
# PREFECT_API_KEY (and an auth string) reach the Machine as Fly app secrets instead.
SECRET_ENV = ("FLY_API_TOKEN", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")
# Job variables a deployment or a flow run may not set at all: the hosts the worker's token goes to
# are its own settings, and the command is Prefect's (a run's command would run beside every secret).
RESERVED_VARIABLES = ("api_url", "logs_url", "command")
# env names a deployment or a run may not set: secrets (they belong in Fly secrets), and names that
# redirect where a run sends its credentials or what code it loads (OPENAI_BASE_URL, HTTPS_PROXY,
# LD_PRELOAD, PYTHONPATH ...). Pool defaults are the operator's and are not checked.
FORBIDDEN_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|URL|URI|ENDPOINT|HOST|PROXY"
                           r"|CA_BUNDLE|CERT)|^(LD_|PYTHON(?!UNBUFFERED$)|PATH$|HOME$|SSL_|PREFECT_API_|AWS_|FLY_)",
                           re.IGNORECASE)


class RunRefused(ValueError):
    """A run's job variables ask for something only the operator may set; no Machine is made."""


def registry_image(image: str, app: str) -> bool:
    """Whether `image` is in the runs app's own Fly registry: registry.fly.io/<app>:<tag> or @sha256:<digest>."""
    return re.fullmatch(rf"registry\.fly\.io/{re.escape(app)}(:[\w][\w.-]{{0,127}}|@sha256:[0-9a-f]{{64}})", image) is not None


def refusal(overrides: dict[str, Any], pool_app: str, pool_max_runtime_s: int | None = None) -> str | None:
    """Why these job variables (a deployment's and a flow run's, merged) are refused, or None."""
    for name in RESERVED_VARIABLES:
        if name in overrides:
            return (f"job variable {name!r} may not be set by a deployment or a flow run"
                    + (" (the worker's FLY_API_URL / FLY_LOGS_URL decide where it calls)" if name != "command" else ""))
    app = overrides.get("app", pool_app)
    if app != pool_app:
        return f"job variable 'app' may not change the runs app ({pool_app!r})"
    if "image" in overrides and not registry_image(str(overrides["image"]), pool_app):
        return f"job variable 'image' must be an image of the runs app's registry (registry.fly.io/{pool_app}:<tag>)"
    if pool_max_runtime_s is not None and "max_runtime_s" in overrides:
        try:
            longer = int(overrides["max_runtime_s"]) > pool_max_runtime_s
        except (TypeError, ValueError):
            longer = True
        if longer:
            return f"job variable 'max_runtime_s' may only shorten the pool's ({pool_max_runtime_s} s)"
    env = overrides.get("env") or {}
    if not isinstance(env, dict):
        return "job variable 'env' must be a mapping"
    bad = sorted(k for k in env if FORBIDDEN_ENV.search(str(k)))
    if bad:
        return f"job variable 'env' may carry only non-secret settings; refused: {', '.join(bad)}"
    return None


class FlyMachinesVariables(BaseVariables):
    """What a pool admin sets; a deployment's or a flow run's job variables may override only region,
    size (cpu_kind, cpus, memory_mb), a shorter max_runtime_s, non-secret env, name and labels, and
    image within the runs app's registry (see `refusal`)."""

    app: str = Field(DEFAULT_APP, description="Fly app the run Machines are created in (its secrets reach every Machine)")
    image: str = Field(DEFAULT_IMAGE, description="image the Machine boots, with the project and the model baked in")
    region: str = Field("nrt", description="Fly region, or a prioritized comma list such as 'nrt,hkg'")
    cpu_kind: Literal["performance", "shared"] = Field("performance", description="shared vCPUs are throttled")
    cpus: int = Field(2, ge=1, description="vCPUs per Machine")
    memory_mb: int = Field(4096, ge=256, description="performance: 2048-8192 MB per vCPU, in multiples of 2048")
    max_runtime_s: int = Field(DEFAULT_MAX_RUNTIME_S, ge=1,
                               description="any worker stops and deletes a Machine older than this")
    env: dict[str, str | None] = Field(default_factory=lambda: {"PYTHONUNBUFFERED": "1"},
                                       description="environment of the run: non-secret settings only (secrets are "
                                                   "Fly app secrets; names with KEY, TOKEN, URL ... are refused)")
    # Prefect's `prefect flow-run execute`, always: not a variable (a deployment or run setting it is refused).
    command: SkipJsonSchema[str | None] = None


class FlyMachinesJobConfiguration(BaseJobConfiguration):
    app: str = Field(DEFAULT_APP)
    image: str = Field(DEFAULT_IMAGE)
    region: str = Field("nrt")
    cpu_kind: str = Field("performance")
    cpus: int = Field(2)
    memory_mb: int = Field(4096)
    max_runtime_s: int = Field(DEFAULT_MAX_RUNTIME_S)
    # Why the run's job variables are refused (set by prepare_for_flow_run); run() fails it before any Machine.
    _refused: str | None = PrivateAttr(None)

    @property
    def refused(self) -> str | None:
        return self._refused

    @classmethod
    def json_template(cls) -> dict[str, Any]:
        """The pool's job_configuration: no `command` (not a variable; unset means Prefect's own)."""
        template = super().json_template()
        template.pop("command", None)
        return template

    def prepare_for_flow_run(self, flow_run: Any, deployment: Any = None, flow: Any = None,
                             work_pool: Any = None, worker_name: str | None = None,
                             worker_id: Any = None) -> None:
        # Prefect merges the deployment's job variables, then the run's (env key by key), over the pool's.
        deployment_vars = getattr(deployment, "job_variables", None) or {}
        run_vars = flow_run.job_variables or {}
        overrides = {**deployment_vars, **run_vars}
        if "env" in deployment_vars or "env" in run_vars:
            overrides["env"] = {**(deployment_vars.get("env") or {}), **(run_vars.get("env") or {})}
        pool_max_s = pool_default(work_pool, "max_runtime_s")
        self._refused = refusal(overrides, pool_default(work_pool, "app") or self.app,
                                int(pool_max_s) if pool_max_s is not None else None)
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
        metadata = {FLOW_RUN_KEY: flow_run_id, MAX_RUNTIME_KEY: str(self.max_runtime_s)}
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


def pool_default(work_pool: Any, name: str) -> Any:
    """A variable's default in the pool's base job template (what the operator set), or None."""
    template = getattr(work_pool, "base_job_template", None) or {}
    return ((template.get("variables") or {}).get("properties") or {}).get(name, {}).get("default")


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
