"""The load-and-fault scenario on the real stack, shared by tests/test_load_faults.py (e2e, with
its assertions) and bench/load_faults.py (its figures).

A Prefect server (on the machine's PostgreSQL), two process workers and the status observer; the
status store on a private PostgreSQL cluster (initdb into a temporary folder, its own port, so a
restart hurts nobody else's tests); uploads in a real S3 server (SeaweedFS). N sessions are
triggered as the Edge Function does; with faults, while they run, one worker is SIGKILLed with
every process it started (a lost Machine; a replacement starts a little later; the other worker too
when the first's run had ended before the SIGKILL landed), the S3 server is
stopped for 10 s, and the status PostgreSQL is restarted. reconcile-status runs every few seconds
as its deployment would (with short thresholds). Sessions whose row ends FAILED or CRASHED are run
again (a new flow run of the same session) to show the code was one a re-run completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tests.pg import SUPABASE_STANDINS, migration_files
from tests.prefect_server import FAST_WORKERS, local_prefect, prefect_database
from tests.s3_server import WeedS3, restart_safe_port
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
CLIP_S = 3.0  # seconds of tests/data/jfk.flac per session: short, so 30 sessions fit the 2 cores
BUCKET = "vibeinsight-audio"
OPEN = ("PENDING", "RUNNING")


# --- a private PostgreSQL cluster ----------------------------------------------------------------

def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"{name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


class PrivatePostgres:
    """initdb + pg_ctl in a temporary folder on a free port (as the `postgres` user when we are root:
    PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vi-pg-"))
        self.data = self.dir / "data"
        self.port = restart_safe_port()  # restart() keeps it
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as, *cmd], check=True, capture_output=True, timeout=120)

    def _ctl(self, *args: str) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"), "-o", opts, "-w", *args)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def status_database(self, users: list[str]) -> str:
        """A Supabase-shaped database with every migration (as tests/pg.py makes on the shared server)
        and these users in auth.users."""
        import psycopg

        name = f"status_{uuid.uuid4().hex[:12]}"  # unique even were the cluster ever shared
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(self.url(name), autocommit=True) as conn:
            conn.execute(SUPABASE_STANDINS)
            for path in migration_files():
                conn.execute(path.read_text())
            for user in users:
                conn.execute("INSERT INTO auth.users (id) VALUES (%s)", (user,))
        return self.url(name)


# --- processes ---------------------------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    """pid's descendant processes (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def sigkill_tree(proc: subprocess.Popen) -> int:
    """SIGKILL a process and every process it started (a Machine lost at once); how many died."""
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(10)
    return len(pids)


# --- the scenario ------------------------------------------------------------------------------

@dataclass
class Outcome:
    sessions: list[str]
    uploads: dict[str, tuple[str, str]]  # key -> (etag, sha256) before the run
    uploads_after: dict[str, tuple[str, str]] = field(default_factory=dict)
    first_rows: dict[str, dict] = field(default_factory=dict)  # the terminal row before any re-run
    final_rows: dict[str, dict] = field(default_factory=dict)  # after re-runs and a last reconcile
    run_states: dict[str, str] = field(default_factory=dict)  # the session's first flow run's final state
    reruns: dict[str, str] = field(default_factory=dict)  # session -> the re-run's final state
    events: list[tuple[float, str]] = field(default_factory=list)  # (seconds since the first trigger, what)
    reconciled: list[dict] = field(default_factory=list)
    killed_run: str | None = None  # the flow run that was running on the worker when it was killed
    wall_s: float = 0.0  # first trigger to the last terminal row (before re-runs)
    max_row_lag_s: float = 0.0  # longest time a row stayed non-terminal after its run ended
    logs: Path | None = None

    @property
    def per_min(self) -> float:
        return len(self.sessions) / self.wall_s * 60 if self.wall_s else 0.0


def _clip(dest: Path) -> Path:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", "-i",
                    str(ROOT / "tests" / "data" / "jfk.flac"), "-t", str(CLIP_S), str(dest)], check=True)
    return dest


def _rows(status_url: str, sessions: list[str]) -> dict[str, dict]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(status_url, autocommit=True, connect_timeout=3, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT session_id::text AS session_id, status, error_code, flow_run_id, updated_at "
                            "FROM processing_status WHERE session_id = ANY(%s::uuid[])", (sessions,)).fetchall()
    return {r["session_id"]: r for r in rows}


def _runs(lp, flow_run_ids: list[str]) -> dict[str, dict]:
    if not flow_run_ids:
        return {}
    found = lp.post("/flow_runs/filter", {"flow_runs": {"id": {"any_": flow_run_ids}}, "limit": 200})
    return {r["id"]: r for r in found}


def _running_on(worker: subprocess.Popen | None, runs: dict[str, dict]) -> str | None:
    """The flow run a worker's child process is running right now (Prefect's infrastructure_pid is
    host:pid of the process the worker started), if any."""
    if worker is None:
        return None
    children = {str(pid) for pid in descendants(worker.pid)}
    for run_id, run in runs.items():
        pid = str(run.get("infrastructure_pid") or "").rpartition(":")[2]
        if pid in children and ((run.get("state") or {}).get("type")) == "RUNNING":
            return run_id
    return None


def _ts(value: str | datetime) -> float:
    return (value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))).timestamp()


def _uploads(store, keys: list[str]) -> dict[str, tuple[str, str]]:
    client = store.client()
    out = {}
    for key in keys:
        obj = client.get_object(Bucket=BUCKET, Key=key)
        out[key] = (obj["ETag"], hashlib.sha256(obj["Body"].read()).hexdigest())
    return out


def run_scenario(tmp: Path, n: int = 30, faults: bool = True, deadline_s: float = 330,
                 log=print, manual_reruns: bool = True) -> Outcome:
    """Run n sessions (with the faults when asked); return what happened for the caller to judge.

    manual_reruns=False: nobody presses Retry; the scenario waits (up to the deadline) for every row to
    end COMPLETED, as the stack's own retries and reconcile-status's crash re-runs should see to."""
    from deployments.trigger import trigger
    from flows.reconcile_status import reconcile_once

    pg = PrivatePostgres()
    weed = WeedS3(tmp / "seaweedfs")
    try:
        pg.start()
        user = str(uuid.uuid4())
        status_url = pg.status_database([user])
        s3 = weed.start()
        store = s3.bucket(BUCKET)
        clip = _clip(tmp / "clip.flac")
        keys = [f"uploads/{user}/session-{i:02d}.flac" for i in range(n)]
        for key in keys:
            store.upload_file(clip, key, "audio/flac")
        uploads = _uploads(store, keys)
        common = {**s3.env(), "FLY_S3_BUCKET_NAME": BUCKET, "VIBEINSIGHT_STATUS_URL": status_url,
                  "VIBEINSIGHT_STATUS_PG_ROLE": "service_role"}
        workers_env = {**FAST_WORKERS, **common, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
                       "VIBEINSIGHT_STATUS_MIN_INTERVAL_S": "0.5"}
        with prefect_database() as db_url, \
                local_prefect(tmp / "stack", db_url, workers=2, observer=True, env=workers_env, here=common) as lp:
            out = Outcome(sessions=[str(uuid.uuid4()) for _ in range(n)], uploads=uploads, logs=lp.logs)
            t0 = time.monotonic()

            def note(what: str) -> None:
                out.events.append((round(time.monotonic() - t0, 1), what))
                log(f"[{time.monotonic() - t0:6.1f} s] {what}")

            first_run: dict[str, str] = {}
            for sid, key in zip(out.sessions, keys, strict=True):
                first_run[sid] = trigger(f"s3://{BUCKET}/{key}", session_id=sid, user_id=user, language="en",
                                         api_url=lp.api_url).flow_run_id
            note(f"{n} sessions triggered")
            plan = ["kill_worker", "s3_down", "pg_restart"] if faults else []
            s3_back_at = None
            # the worker to lose; the second only if the first's run had ended before the SIGKILL landed
            victims = ["worker-1", "worker-2"]
            replacements: list[float] = []  # when to start each replacement worker
            started = 2  # workers started so far: worker-1 and worker-2 (local_prefect's)
            next_reconcile = time.monotonic() + 10
            rows: dict[str, dict] = {}
            ended_at: dict[str, float] = {}
            last_ends: tuple = ()
            settled_at = time.monotonic()
            while True:
                with contextlib.suppress(Exception):  # the status database may be restarting
                    rows = _rows(status_url, out.sessions)
                runs = _runs(lp, list(first_run.values()))
                for sid, run_id in first_run.items():
                    state = (runs.get(run_id) or {}).get("state") or {}
                    if state.get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                        out.run_states[sid] = state["type"]
                        ended_at.setdefault(sid, _ts(state["timestamp"]))
                terminal = [s for s in out.sessions if s in rows and rows[s]["status"] not in OPEN]
                done = sum(1 for s in terminal if rows[s]["status"] == "COMPLETED")
                killing = bool(plan) and plan[0] == "kill_worker"
                in_flight = _running_on(lp.procs.get(victims[0]), runs) if killing and victims else None
                if in_flight and done >= 3:
                    victim = victims.pop(0)
                    killed = sigkill_tree(lp.procs.pop(victim))
                    replacements.append(time.monotonic() + 15)
                    # The run was RUNNING when `runs` was read, up to a second ago, and may have ended since
                    # (a flaky failure: nothing left for reconcile to re-run). A state its engine sent before
                    # it died lands within a moment; after that none can.
                    time.sleep(1)
                    caught = ((lp.get(f"/flow_runs/{in_flight}").get("state") or {}).get("type")) == "RUNNING"
                    if caught or not victims:
                        plan.pop(0)
                    if caught:
                        out.killed_run = in_flight
                        note(f"SIGKILL {victim} and its runs ({killed} processes; run {in_flight} in flight)")
                    else:
                        note(f"SIGKILL {victim} and its runs ({killed} processes); run {in_flight} had ended first")
                if replacements and time.monotonic() >= replacements[0]:
                    replacements.pop(0)
                    started += 1
                    lp.add_worker(f"worker-{started}")
                    note(f"replacement worker-{started} started")
                if plan and plan[0] == "s3_down" and len(terminal) >= min(n // 2, max(8, n // 3)):
                    plan.pop(0)
                    weed.stop()
                    s3_back_at = time.monotonic() + 10
                    note("S3 server stopped")
                if s3_back_at and time.monotonic() >= s3_back_at:
                    s3_back_at = None
                    weed.start()
                    note("S3 server back")
                if plan and plan[0] == "pg_restart" and len(terminal) >= min(n - 3, max(14, (n * 3) // 5)):
                    plan.pop(0)
                    note("status PostgreSQL restarting")
                    pg.restart()
                    note("status PostgreSQL back")
                if time.monotonic() >= next_reconcile:
                    next_reconcile = time.monotonic() + 10
                    try:
                        got = asyncio.run(reconcile_once(min_age_s=5, stale_after_s=90, pending_after_s=90,
                                                         orphan_after_s=120))
                    except Exception as exc:  # noqa: BLE001 - e.g. the status database restarting: next time
                        note(f"reconcile failed: {type(exc).__name__}: {str(exc)[:120]}")
                    else:
                        if got:
                            out.reconciled += got
                            note(f"reconcile: {[(r['from'], r['to']) for r in got]}")
                # without manual re-runs a row that stays FAILED or CRASHED for a minute (six reconciles)
                # is one nothing will run again: stop there too, for the caller to judge
                ends = tuple(sorted((s, rows[s]["status"]) for s in terminal))
                if ends != last_ends:
                    last_ends, settled_at = ends, time.monotonic()
                if len(terminal) == n and not plan and not s3_back_at and (
                        manual_reruns or done == n or time.monotonic() - settled_at > 60):
                    break
                if time.monotonic() - t0 > deadline_s:
                    note("deadline reached")
                    break
                time.sleep(1)
            out.wall_s = time.monotonic() - t0
            out.first_rows = {s: dict(r) for s, r in rows.items()}
            lags = [_ts(rows[s]["updated_at"]) - ended_at[s] for s in ended_at
                    if s in rows and rows[s]["status"] not in OPEN]
            out.max_row_lag_s = max([0.0, *lags])
            note(f"all rows terminal: {sum(r['status'] == 'COMPLETED' for r in rows.values())} completed")

            # re-run what did not complete: the same session, a new flow run (as a user's retry would)
            dep = lp.get("/deployments/name/process-audio/api")
            again = {}
            for sid, key in zip(out.sessions, keys, strict=True):
                if manual_reruns and rows.get(sid, {}).get("status") != "COMPLETED":
                    again[sid] = lp.post(f"/deployments/{dep['id']}/create_flow_run", {"parameters": {
                        "source": f"s3://{BUCKET}/{key}", "session_id": sid, "user_id": user, "language": "en"}})["id"]
            if again:
                note(f"re-running {len(again)} session(s)")
            for sid, run_id in again.items():
                out.reruns[sid] = lp.wait_run(run_id, 240)["state"]["type"]
            out.reconciled += asyncio.run(reconcile_once(min_age_s=0, stale_after_s=90, pending_after_s=90,
                                                         orphan_after_s=120))
            wait_for(lambda: all(r["status"] not in OPEN for r in _rows(status_url, out.sessions).values()),
                     60, 0.5, "the re-runs' rows")
            out.final_rows = {s: dict(r) for s, r in _rows(status_url, out.sessions).items()}
            out.uploads_after = _uploads(store, keys)
            note("done")
            return out
    finally:
        weed.stop()
        pg.stop()
