"""A stand-in of Fly's Machines API (the endpoints the `fly-machines` worker uses), written from Fly's
docs (fly.io/docs/machines/api: machines-resource, working-with-machines, rate limits), on 127.0.0.1.

What it models:
- auth: `Authorization: Bearer <token>` or `FlyV1 <token>`, else 401;
- create `POST /v1/apps/{app}/machines`: only `config.image` is required; `guest` is checked
  against Fly's sizing rules (422); the Machine goes created → started → (its command exits)
  stopped → destroyed when `auto_destroy` (and restart policy "no": any other policy restarts a
  non-zero exit, up to max_retries, as Fly's default on-failure does);
- rate limits per action and scope (app for create and list, Machine for the rest): 1 request/s,
  burst 3; get 5/s, burst 10; past it 429 `{"error": "rate limit exceeded"}` with `Retry-After`: the
  whole seconds until the bucket has a token again (HTTP's delta-seconds; Fly's docs name no header,
  so this is the standard one a client must honour); waits are not limited;
- events newest first: launch, start, exit (`request.exit_event.exit_code`, `oom_killed`,
  `requested_stop`, `signal`), destroy; a destroyed Machine still answers GET;
- `GET …/wait?state=&timeout=&instance_id=`: 200 `{ok, state}` once reached, 408 after timeout
  (capped at 60 s), 400 for `stopped` without instance_id, 404 once destroyed;
- stop (signal, then SIGKILL after the timeout), signal, delete (`force=true` needed while running,
  else 412), list with `metadata.{key}=value` filters and `include_deleted`;
- CPU: a Machine's command (and every process it starts) runs only on `guest.cpus` of this host's
  cores (its CPU affinity, set by `taskset` before the command execs), handed out least-used
  first, so Machines running at the same time get distinct cores while there are enough (a
  Machine's cores are free again when its process exits); a 1-cpu Machine sees one core, as on Fly;
  a `performance` Machine's processes also come first on its cores (nice -10, or -`performance_nice`;
  as root), as its dedicated vCPUs would, while a `shared` one competes with the host's processes;
- faults a test asks for: `ambiguous_creates` (the Machine is made, then the answer is a 504),
  `fail_creates` (503 before anything is made), `kill(machine_id)` (the host dies: SIGKILL, exit 137),
  `wedged_stops` (a wedged Machine: stop answers 200 but nothing reaches the process; only a forced
  delete ends it).

Every answer is logged in `requests` (time, method, path, query, status, headers sent) for tests to
assert what a client asked, not what the stand-in did about it.

A Machine "runs" `init.cmd` as a local process group with only config.env + the app's secrets +
the image's env (PATH), an empty HOME of its own, and as cwd the image's workdir. The image "local"
stands for the project's own image: this venv, where the project is installed (editable), with an
empty workdir per Machine (the real image's /app holds only the sources, which Prefect copies into
its run workspace when a deployment has no pull step; copying the project root here would copy the
venv too). Not modelled: regions and placement (recorded, not used), real boot and image pull
times, the CPU share of a `shared` vCPU (here it gets a whole core), memory limits (no OOM unless
`kill(..., oom=True)`), leases, a read-only rootfs (the venv and the project are shared, not
copied), metadata endpoints, `processes`, `files`, networking.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

RATES = {"get": (5.0, 10)}
DEFAULT_RATE = (1.0, 3)
APP_SCOPED = ("create", "list", "logs")


@dataclass
class Image:
    """What a Machine's rootfs would give it: where the command runs (None: an empty folder of its
    own) and the image's ENV."""

    workdir: Path | None
    env: dict[str, str]


def local_image() -> Image:
    """The project's image, here: the venv (the project installed in it) on PATH, an empty workdir."""
    return Image(workdir=None, env={"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
                                    "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8",
                                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})


class Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def retry_after(self) -> int:
        """Whole seconds until a token is there again (at least 1)."""
        return max(1, math.ceil((1 - self.tokens) / self.rate))


class Call(NamedTuple):
    """One request as the stand-in answered it."""

    at: float  # time.monotonic() of the answer
    method: str
    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]  # the answer's extra headers (Retry-After)


@dataclass
class Machine:
    id: str
    app: str
    name: str
    region: str
    config: dict[str, Any]
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:26].upper())
    state: str = "created"
    events: list[dict] = field(default_factory=list)  # newest first
    created_at: float = field(default_factory=time.time)
    proc: subprocess.Popen | None = None
    home: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # what the process got (tests read it)
    restarts: int = 0
    stop_requested: bool = False
    killed_signal: int | None = None
    oom: bool = False
    cores: tuple[int, ...] = ()  # the host cores its process may run on (empty: not running)

    def event(self, type_: str, status: str, request: dict | None = None, source: str = "flyd") -> None:
        ev = {"id": uuid.uuid4().hex, "type": type_, "status": status, "source": source,
              "timestamp": int(time.time() * 1000)}
        if request is not None:
            ev["request"] = request
        self.events.insert(0, ev)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "state": self.state, "region": self.region,
                "instance_id": self.instance_id, "private_ip": "fdaa::1", "config": self.config,
                "image_ref": {"registry": "local", "repository": self.config.get("image", ""), "tag": "latest"},
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at)),
                "events": list(self.events)}


# How much a performance Machine's processes come before the host's others (nice levels; as root only):
# at -10 a Machine's thread weighs ~9x a host process's, so a busy core is ~90 % the Machine's, and the
# suite's other stacks beside it still move. bench/fan_out.py, alone on the host, asks for -20 (~98.6 %):
# at -10 the host's Prefect server, databases and S3 (~0.14 of a core, sampled) took their share from two
# busy Machines and slowed the fanned-out run (docs/performance.md); Fly's dedicated vCPUs lose nothing.
PERFORMANCE_PRIORITY = 10


class FlyStandin:
    def __init__(self, token: str | None = None, images: dict[str, Image] | None = None,
                 boot_s: float = 0.2, logs: Path | None = None, performance_nice: int = PERFORMANCE_PRIORITY) -> None:
        self.token = token or f"fm2_{secrets.token_hex(16)}"
        self.images = images if images is not None else {"local": local_image()}
        self.boot_s = boot_s
        self.performance_nice = performance_nice
        self.logs = logs or Path(tempfile.mkdtemp(prefix="fly-standin-logs-"))
        self.secrets: dict[str, dict[str, str]] = {}  # app -> Fly secrets (injected into every Machine)
        self.machines: dict[str, Machine] = {}
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.requests: list[Call] = []
        self.ambiguous_creates = 0
        self.fail_creates = 0
        self.wedged_stops = False
        self.rate_limits = True
        self.host_cores = sorted(os.sched_getaffinity(0))
        self.core_use = dict.fromkeys(self.host_cores, 0)  # running Machines per host core
        self.lock = threading.RLock()
        self._closed = False
        self._homes = Path(tempfile.mkdtemp(prefix="fly-standin-homes-"))
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- set-up --

    def add_app(self, name: str, secrets_: dict[str, str] | None = None) -> None:
        with self.lock:
            self.secrets[name] = dict(secrets_ or {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FlyStandin:
        from deployments.stack import free_port

        self.port = free_port()
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", timeout_keep_alive=75)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("Fly stand-in did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self._closed = True  # Machines still booting never start
            running = [m for m in self.machines.values() if m.proc and m.proc.poll() is None]
        for m in running:
            self._signal(m, signal.SIGKILL)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        shutil.rmtree(self._homes, ignore_errors=True)

    # -- what tests read or do --

    def live(self, app: str | None = None) -> list[Machine]:
        """Machines not destroyed."""
        with self.lock:
            return [m for m in self.machines.values() if m.state != "destroyed" and (app is None or m.app == app)]

    def by_run(self, flow_run_id: str) -> list[Machine]:
        with self.lock:
            return [m for m in self.machines.values()
                    if (m.config.get("metadata") or {}).get("prefect_flow_run_id") == flow_run_id]

    def calls(self, method: str, path_part: str, status: int | None = None) -> list[Call]:
        with self.lock:
            return [c for c in self.requests
                    if c.method == method and path_part in c.path and (status is None or c.status == status)]

    def count(self, method: str, path_part: str, status: int | None = None) -> int:
        return len(self.calls(method, path_part, status))

    def create_times(self) -> list[float]:
        return [c.at for c in self.calls("POST", "/machines", 200) if c.path.endswith("/machines")]

    def kill(self, machine_id: str, oom: bool = False) -> None:
        """The Machine's host kills it (or the kernel's OOM killer): SIGKILL, exit 137."""
        m = self.machines[machine_id]
        m.oom = oom
        self._signal(m, signal.SIGKILL)

    # -- machine lifecycle --

    def _launch(self, m: Machine) -> None:
        """Boot, then run init.cmd as a process group with only the env a Machine would have."""
        time.sleep(self.boot_s)
        image = self.images[m.config["image"]]
        with self.lock:
            if m.state != "created" or self._closed:
                return
            root = Path(tempfile.mkdtemp(prefix=f"{m.id}-", dir=self._homes))  # the Machine's own disk
            m.home, workdir = root / "home", image.workdir or root / "app"
            m.home.mkdir()
            workdir.mkdir(exist_ok=True)
            command = (m.config.get("init") or {}).get("cmd") or ["true"]
            guest = m.config.get("guest") or {}
            m.cores = self._take_cores(int(guest.get("cpus", 1)))
            # taskset execs the command in its own process: the pid is the command's, the affinity
            # is set before its first instruction and every child inherits it
            cmd = ["taskset", "--cpu-list", ",".join(map(str, m.cores)), *command]
            if guest.get("cpu_kind") == "performance" and os.geteuid() == 0:
                # Fly's performance vCPUs are dedicated; this host's own processes (the Prefect server,
                # the databases, S3: Fly's platform and the world outside) only take what they leave
                cmd = ["nice", "-n", str(-self.performance_nice), *cmd]
            m.env = {**image.env, "HOME": str(m.home), **(m.config.get("env") or {}), **self.secrets.get(m.app, {}),
                     "FLY_APP_NAME": m.app, "FLY_MACHINE_ID": m.id, "FLY_REGION": m.region.split(",")[0]}
            log = (self.logs / f"{m.id}.log").open("ab")
            try:
                if shutil.which(command[0], path=m.env.get("PATH")) is None:  # as an exec of it would fail
                    raise FileNotFoundError(2, "No such file or directory", command[0])
                m.proc = subprocess.Popen(cmd, cwd=workdir, env=m.env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                self._release_cores(m)
                log.write(f"exec failed: {exc}\n".encode())
                m.state = "failed"
                m.event("exit", "failed", {"exit_event": {"exit_code": 127, "oom_killed": False,
                                                          "requested_stop": False}})
                return
            finally:
                log.close()
            m.state = "started"
            m.event("start", "started")
        threading.Thread(target=self._reap, args=(m,), daemon=True).start()

    def _reap(self, m: Machine) -> None:
        assert m.proc is not None
        rc = m.proc.wait()
        with self.lock:
            self._release_cores(m)
            sig = -rc if rc < 0 else None
            code = 128 + sig if sig else rc
            exit_event = {"exit_code": code, "guest_exit_code": code, "guest_signal": sig or -1,
                          "signal": sig or -1, "oom_killed": m.oom, "requested_stop": m.stop_requested,
                          "restarting": False, "exited_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            policy = (m.config.get("restart") or {}).get("policy", "on-failure")
            max_retries = (m.config.get("restart") or {}).get("max_retries", 10)
            restart = (not m.stop_requested and m.state != "destroyed"
                       and (policy == "always" or (policy == "on-failure" and code != 0)) and m.restarts < max_retries)
            exit_event["restarting"] = restart
            m.event("exit", "stopped", {"exit_event": exit_event})
            if m.state == "destroyed":
                return
            if restart:
                m.restarts += 1
                m.state = "created"
            else:
                m.state = "stopped"
                if m.config.get("auto_destroy") and (m.config.get("restart") or {}).get("policy") == "no":
                    self._destroy(m)
        if restart:
            self._launch(m)

    def _take_cores(self, cpus: int) -> tuple[int, ...]:
        """The `cpus` least-used host cores (lowest number first among equals); all of them when the
        Machine asks for more than the host has. Called under the lock."""
        chosen = sorted(sorted(self.host_cores, key=lambda c: (self.core_use[c], c))[:max(1, cpus)])
        for c in chosen:
            self.core_use[c] += 1
        return tuple(chosen)

    def _release_cores(self, m: Machine) -> None:
        for c in m.cores:
            self.core_use[c] -= 1
        m.cores = ()

    def _destroy(self, m: Machine) -> None:
        m.state = "destroyed"
        m.event("destroy", "destroyed", source="user")
        if m.home is not None:
            shutil.rmtree(m.home.parent, ignore_errors=True)

    def _signal(self, m: Machine, sig: int) -> bool:
        """A stop signal goes to the command's process group; SIGKILL takes every descendant too,
        as a dying VM would (Prefect's engine may run in a session of its own)."""
        if m.proc is None or m.proc.poll() is not None:
            return False
        pids = _descendants(m.proc.pid) if sig == signal.SIGKILL else []
        try:
            os.killpg(m.proc.pid, sig)
        except ProcessLookupError:
            return False
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return True

    # -- HTTP --

    def _limited(self, action: str, scope: str) -> int | None:
        """None when the request may go on, else the seconds to send as Retry-After."""
        if not self.rate_limits:
            return None
        with self.lock:
            bucket = self.buckets.get((action, scope))
            if bucket is None:
                bucket = self.buckets[(action, scope)] = Bucket(*RATES.get(action, DEFAULT_RATE))
            return None if bucket.take() else bucket.retry_after()

    def _app(self) -> Starlette:
        fly = self

        def answer(request: Request, status: int, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
            with fly.lock:
                fly.requests.append(Call(time.monotonic(), request.method, request.url.path,
                                         dict(request.query_params), status, dict(headers or {})))
            return JSONResponse(body, status_code=status, headers=headers)

        def guard(request: Request, action: str) -> JSONResponse | None:
            auth = request.headers.get("authorization", "")
            if auth not in (f"Bearer {fly.token}", f"FlyV1 {fly.token}"):
                return answer(request, 401, {"error": "unauthorized"})
            app = request.path_params["app"]
            if app not in fly.secrets:
                return answer(request, 404, {"error": f"app {app} not found"})
            scope = app if action in APP_SCOPED else request.path_params.get("id", app)
            if (wait_s := fly._limited(action, scope)) is not None:
                return answer(request, 429, {"error": "rate limit exceeded"}, {"Retry-After": str(wait_s)})
            return None

        def machine_or_404(request: Request) -> Machine | JSONResponse:
            m = fly.machines.get(request.path_params["id"])
            if m is None or m.app != request.path_params["app"]:
                return answer(request, 404, {"error": "machine not found"})
            return m

        async def create(request: Request) -> JSONResponse:
            if (denied := guard(request, "create")) is not None:
                return denied
            body = await request.json()
            config = body.get("config") or {}
            if config.get("image") not in fly.images:
                return answer(request, 422, {"error": f"image {config.get('image')!r} not found"})
            if (problem := guest_problem(config.get("guest") or {})) is not None:
                return answer(request, 422, {"error": problem})
            with fly.lock:
                if fly.fail_creates > 0:
                    fly.fail_creates -= 1
                    return answer(request, 503, {"error": "service unavailable"})
                m = Machine(id=secrets.token_hex(7), app=request.path_params["app"],
                            name=body.get("name") or f"machine-{secrets.token_hex(3)}",
                            region=body.get("region") or "nrt", config=config)
                m.event("launch", "created", source="user")
                fly.machines[m.id] = m
                ambiguous = fly.ambiguous_creates > 0
                if ambiguous:
                    fly.ambiguous_creates -= 1
            if not body.get("skip_launch"):
                threading.Thread(target=fly._launch, args=(m,), daemon=True).start()
            if ambiguous:  # made, but the caller never learns it
                return answer(request, 504, {"error": "upstream request timeout"})
            return answer(request, 200, m.view())

        async def list_(request: Request) -> JSONResponse:
            if (denied := guard(request, "list")) is not None:
                return denied
            wanted = {k.removeprefix("metadata."): v for k, v in request.query_params.items() if k.startswith("metadata.")}
            deleted = request.query_params.get("include_deleted") in ("true", "1")
            with fly.lock:
                found = [m.view() for m in fly.machines.values()
                         if m.app == request.path_params["app"] and (deleted or m.state != "destroyed")
                         and all((m.config.get("metadata") or {}).get(k) == v for k, v in wanted.items())]
            return answer(request, 200, found)

        async def get(request: Request) -> JSONResponse:
            if (denied := guard(request, "get")) is not None:
                return denied
            m = machine_or_404(request)
            return m if isinstance(m, JSONResponse) else answer(request, 200, m.view())

        async def wait(request: Request) -> JSONResponse:
            if (denied := guard(request, "wait")) is not None:
                return denied
            m = machine_or_404(request)
            if isinstance(m, JSONResponse):
                return m
            state = request.query_params.get("state", "started")
            if state not in ("started", "stopped", "suspended", "destroyed"):
                return answer(request, 400, {"error": f"invalid state {state}"})
            if state == "stopped" and not request.query_params.get("instance_id"):
                return answer(request, 400, {"error": "instance_id is required when waiting for stopped"})
            timeout = min(60.0, max(1.0, float(request.query_params.get("timeout", 60))))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if m.state == state:
                    return answer(request, 200, {"ok": True, "state": m.state})
                if m.state == "destroyed":
                    return answer(request, 404, {"error": "machine not found"})
                await asyncio.sleep(0.05)
            return answer(request, 408, {"error": "deadline_exceeded: timeout waiting for machine"})

        async def stop(request: Request) -> JSONResponse:
            if (denied := guard(request, "stop")) is not None:
                return denied
            m = machine_or_404(request)
            if isinstance(m, JSONResponse):
                return m
            body = await request.json() if await request.body() else {}
            sig = getattr(signal, str(body.get("signal") or "SIGINT"), signal.SIGINT)
            timeout_s = float(str(body.get("timeout") or "5s").rstrip("s"))
            with fly.lock:
                m.stop_requested = True
                if fly.wedged_stops:  # accepted, but the host never delivers it
                    return answer(request, 200, {"ok": True})
            if fly._signal(m, sig):
                def escalate() -> None:  # Fly kills what is still running after the stop timeout
                    if m.proc is not None:
                        try:
                            m.proc.wait(timeout_s)
                        except subprocess.TimeoutExpired:
                            fly._signal(m, signal.SIGKILL)
                threading.Thread(target=escalate, daemon=True).start()
            return answer(request, 200, {"ok": True})

        async def sig(request: Request) -> JSONResponse:
            if (denied := guard(request, "signal")) is not None:
                return denied
            m = machine_or_404(request)
            if isinstance(m, JSONResponse):
                return m
            body = await request.json()
            fly._signal(m, getattr(signal, str(body.get("signal")), signal.SIGKILL))
            return answer(request, 200, {"ok": True})

        async def delete(request: Request) -> JSONResponse:
            if (denied := guard(request, "delete")) is not None:
                return denied
            m = machine_or_404(request)
            if isinstance(m, JSONResponse):
                return m
            force = request.query_params.get("force") in ("true", "1") or request.query_params.get("kill") == "true"
            running = m.proc is not None and m.proc.poll() is None
            if running and not force:
                return answer(request, 412, {"error": "failed_precondition: machine still active, refusing to delete"})
            with fly.lock:
                m.stop_requested = True
            if running:
                fly._signal(m, signal.SIGKILL)
            with fly.lock:
                if m.state != "destroyed":
                    fly._destroy(m)
            return answer(request, 200, {"ok": True})

        async def app_logs(request: Request) -> JSONResponse:
            """Fly's logs API as flyctl reads it (GET /api/v1/apps/{app}/logs?instance=&next_token=): the
            last 100 lines a Machine wrote, in fly-go's getLogsResponse shape."""
            if (denied := guard(request, "logs")) is not None:
                return denied
            app, instance = request.path_params["app"], request.query_params.get("instance")
            entries = []
            for m in list(fly.machines.values()):
                path = fly.logs / f"{m.id}.log"
                if m.app != app or (instance and m.id != instance) or not path.exists():
                    continue
                for line in path.read_text(errors="replace").splitlines()[-100:]:
                    entries.append({"id": secrets.token_hex(8), "attributes": {
                        "timestamp": datetime.now(timezone.utc).isoformat(), "message": line, "level": "info",
                        "instance": m.id, "region": m.region.split(",")[0], "meta": {"instance": m.id}}})
            return answer(request, 200, {"data": entries[-100:], "meta": {"next_token": str(time.time_ns())}})

        base = "/v1/apps/{app}/machines"
        return Starlette(routes=[
            Route("/api/v1/apps/{app}/logs", app_logs, methods=["GET"]),
            Route(base, create, methods=["POST"]),
            Route(base, list_, methods=["GET"]),
            Route(base + "/{id}", get, methods=["GET"]),
            Route(base + "/{id}", delete, methods=["DELETE"]),
            Route(base + "/{id}/wait", wait, methods=["GET"]),
            Route(base + "/{id}/stop", stop, methods=["POST"]),
            Route(base + "/{id}/signal", sig, methods=["POST"]),
        ])


def guest_problem(guest: dict[str, Any]) -> str | None:
    """Fly's sizing rules: shared 256 MB-2 GB per vCPU in 256s; performance 2-8 GB per vCPU in 2048s."""
    if not guest:
        return None
    kind, cpus, mem = guest.get("cpu_kind", "shared"), int(guest.get("cpus", 1)), int(guest.get("memory_mb", 256))
    if kind == "shared":
        ok = mem % 256 == 0 and 256 * cpus <= mem <= 2048 * cpus
    elif kind == "performance":
        ok = mem % 2048 == 0 and 2048 * cpus <= mem <= 8192 * cpus
    else:
        return f"invalid cpu_kind {kind!r}"
    return None if ok else f"invalid memory size {mem} for {cpus} {kind} cpus"


def _descendants(pid: int) -> list[int]:
    """Every process below pid, from /proc (children first found, grandchildren after)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found
