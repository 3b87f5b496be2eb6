"""An async client for the endpoints of Fly's Machines API the worker uses, paced and retried.

Fly limits mutating calls to 1 request/s per action with bursts of 3 (Get Machine: 5/s, burst
10), scoped to the app (create, list) or the Machine (stop, delete, get). A token bucket per
(action, scope), shared by all runs of one worker, keeps a burst of uploads under that; a 429
anyway (another worker, another client) is retried after Retry-After. 5xx, 408 and transport
errors are retried too, except on create, which is not idempotent: see `create_machine`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from deployments.fly_worker.config import FLOW_RUN_KEY, auth_header
from vibeinsight.retry import Transient, backoff, parse_retry_after, wait_retry_after

log = logging.getLogger("vibeinsight.fly_worker")

WAIT_MAX_S = 60  # the server caps one /wait at 60 s
# (rate per second, burst) per action, from Fly's "Rate Limits" (1/s burst 3; get 5/s burst 10), each
# burst one short: that spare token absorbs requests that reach Fly closer together than they left.
RATES: dict[str, tuple[float, int]] = {"get": (5.0, 9)}
DEFAULT_RATE = (1.0, 2)


class FlyAPIError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Fly Machines API {status}: {message}")
        self.status = status


class MachineNotFound(FlyAPIError):
    pass


class AmbiguousCreate(Transient):
    """The create request went out but no answer says whether a Machine was made."""


Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved; `acquire` waits for one (clock and sleep: tests)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.rate, self.burst, self.clock, self.sleep = rate, burst, clock, sleep
        self.tokens = float(burst)
        self.stamp = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # first come, first served: a burst queues in order
            while True:
                now = self.clock()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await self.sleep((1 - self.tokens) / self.rate)


@dataclass
class Stats:
    """What a benchmark or a test wants to know about one client's traffic."""

    creates: int = 0
    create_times: list[float] = field(default_factory=list)
    throttled: int = 0  # 429s met
    adopted: int = 0  # ambiguous creates resolved by finding the Machine
    retries: int = 0


class FlyMachinesClient:
    """One per worker (the buckets are shared by its runs); `async with` opens the HTTP pool."""

    def __init__(self, api_url: str, token: str | None = None, timeout_s: float = 30.0, attempts: int = 8,
                 logs_url: str | None = None, retry_sleep: Sleep = asyncio.sleep) -> None:
        """`api_url` and `logs_url` are the only hosts the token goes to: the worker's own settings."""
        token = token if token is not None else os.environ.get("FLY_API_TOKEN", "")
        if not token:
            raise FlyAPIError(401, "FLY_API_TOKEN is not set in the worker's environment")
        self.api_url = api_url.rstrip("/")
        self.logs_url = (logs_url or self.api_url).rstrip("/")
        self._headers = {"Authorization": auth_header(token)}
        self.timeout_s, self.attempts = timeout_s, attempts
        self._retry_sleep = retry_sleep  # the wait between tries (Retry-After or back-off); tests record it
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._http: httpx.AsyncClient | None = None
        self.stats = Stats()

    async def __aenter__(self) -> FlyMachinesClient:
        self._http = httpx.AsyncClient(base_url=f"{self.api_url}/v1", headers=self._headers,
                                       timeout=httpx.Timeout(self.timeout_s))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- plumbing --

    async def _pace(self, action: str, scope: str) -> None:
        bucket = self._buckets.get((action, scope))
        if bucket is None:
            bucket = self._buckets[(action, scope)] = TokenBucket(*RATES.get(action, DEFAULT_RATE))
        await bucket.acquire()

    async def _send(self, action: str, scope: str, method: str, path: str, *, timeout_s: float | None = None,
                    ok_statuses: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """One request, paced. Raises Transient on 429/408/5xx/transport errors, FlyAPIError on the rest."""
        assert self._http is not None, "use `async with FlyMachinesClient(...)`"
        await self._pace(action, scope)
        try:
            resp = await self._http.request(method, path, timeout=timeout_s or self.timeout_s, **kwargs)
        except httpx.TransportError as exc:
            raise Transient(f"{method} {path}: {type(exc).__name__}") from exc
        if resp.status_code < 300 or resp.status_code in ok_statuses:
            return resp
        message = _error_text(resp)
        if resp.status_code == 429:
            self.stats.throttled += 1
            raise Transient(f"{method} {path}: 429 {message}", parse_retry_after(resp.headers), 429)
        if resp.status_code == 408 or resp.status_code >= 500:
            raise Transient(f"{method} {path}: {resp.status_code} {message}", parse_retry_after(resp.headers),
                            resp.status_code)
        if resp.status_code == 404:
            raise MachineNotFound(404, f"{method} {path}: {message}")
        raise FlyAPIError(resp.status_code, f"{method} {path}: {message}")

    def _retrying(self) -> AsyncRetrying:
        def count(_state: Any) -> None:
            self.stats.retries += 1

        return AsyncRetrying(stop=stop_after_attempt(self.attempts), retry=retry_if_exception_type(Transient),
                             wait=wait_retry_after(backoff(0.5, 10.0)), reraise=True, before_sleep=count,
                             sleep=self._retry_sleep)

    async def _call(self, action: str, scope: str, method: str, path: str, **kwargs: Any) -> Any:
        resp = await self._retrying()(self._send, action, scope, method, path, **kwargs)
        return resp.json() if resp.content else {}

    # -- the endpoints --

    async def create_machine(self, app: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Machine for one flow run, never two.

        Fly's create takes no idempotency key, and a timeout or a 5xx after the request went out
        may or may not have made a Machine. So before each new try after such an answer, list the
        app's Machines by the run's metadata and adopt the one found (flyctl does the same).
        """
        run_id = body["config"]["metadata"][FLOW_RUN_KEY]

        async def once() -> dict[str, Any]:
            try:
                resp = await self._send("create", app, "POST", f"/apps/{app}/machines", json=body)
            except Transient as exc:
                if exc.status == 429:  # refused before anything was made
                    raise
                found = await self.find_run_machines(app, run_id)
                if found:
                    self.stats.adopted += 1
                    log.warning("create of the Machine for flow run %s was ambiguous (%s); adopting %s",
                                run_id, exc, found[0]["id"])
                    return found[0]
                raise AmbiguousCreate(str(exc), exc.retry_after, exc.status) from exc
            self.stats.creates += 1
            self.stats.create_times.append(time.monotonic())
            return resp.json()

        return await self._retrying()(once)

    async def find_run_machines(self, app: str, flow_run_id: str) -> list[dict[str, Any]]:
        """Machines (not destroyed) tagged with this flow run."""
        machines = await self.list_machines(app, {FLOW_RUN_KEY: flow_run_id})
        return [m for m in machines if m.get("state") not in ("destroyed", "destroying")]

    async def list_machines(self, app: str, metadata: dict[str, str] | None = None,
                            include_deleted: bool = False) -> list[dict[str, Any]]:
        params = {f"metadata.{k}": v for k, v in (metadata or {}).items()}
        if include_deleted:
            params["include_deleted"] = "true"
        return await self._call("list", app, "GET", f"/apps/{app}/machines", params=params)

    async def get_machine(self, app: str, machine_id: str) -> dict[str, Any]:
        """A destroyed Machine still answers, with its events."""
        return await self._call("get", machine_id, "GET", f"/apps/{app}/machines/{machine_id}")

    async def wait(self, app: str, machine_id: str, state: str, instance_id: str | None = None,
                   timeout_s: int = WAIT_MAX_S) -> bool:
        """One long-poll: True when the Machine reached `state`, False on 408 (ask again).

        Raises MachineNotFound once the Machine is gone (auto_destroy), which for `stopped` means done.
        """
        params: dict[str, Any] = {"state": state, "timeout": max(1, min(WAIT_MAX_S, int(timeout_s)))}
        if instance_id:
            params["instance_id"] = instance_id
        # Waits are per Machine and cheap for Fly: not paced, and not retried here (the caller loops).
        assert self._http is not None
        try:
            resp = await self._http.get(f"/apps/{app}/machines/{machine_id}/wait", params=params,
                                        timeout=params["timeout"] + 15)
        except httpx.TransportError:
            return False
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            raise MachineNotFound(404, _error_text(resp))
        if resp.status_code == 408 or resp.status_code == 429 or resp.status_code >= 500:
            return False
        raise FlyAPIError(resp.status_code, f"wait: {_error_text(resp)}")

    async def stop_machine(self, app: str, machine_id: str, signal: str = "SIGTERM", timeout_s: int = 30) -> None:
        await self._call("stop", machine_id, "POST", f"/apps/{app}/machines/{machine_id}/stop",
                         json={"signal": signal, "timeout": f"{int(timeout_s)}s"})

    async def delete_machine(self, app: str, machine_id: str, force: bool = True) -> None:
        await self._call("delete", machine_id, "DELETE", f"/apps/{app}/machines/{machine_id}",
                         params={"force": "true"} if force else None)

    async def recent_logs(self, app: str, machine_id: str) -> list[dict[str, Any]]:
        """The Machine's latest log entries (at most 100, oldest first) from Fly's logs API, which flyctl
        reads for `fly logs -i`: `{data: [{id, attributes: {timestamp, message, level, instance, region}}],
        meta: {next_token}}` (fly-go resource_logs.go). One try: the lines only add context to a failure."""
        resp = await self._send("logs", app, "GET", f"{self.logs_url}/api/v1/apps/{app}/logs",  # absolute:
                                params={"instance": machine_id, "next_token": ""})  # not under the Machines API
        return [d.get("attributes") or {} for d in (resp.json().get("data") or [])]


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)[:200]
    return str(body)[:200]
