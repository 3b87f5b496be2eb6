"""Retries and back-off, all through tenacity: one wait that honours Retry-After, and the
metered call the OpenAI and Gemini blocks share (it counts calls and retries for the usage record).

Plain logic (no SDK): a block classifies its SDK's errors into Transient (worth another try)
or a final PipelineError, and hands the call to `metered_call`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.wait import wait_base  # tenacity 9 no longer exports it at the top level

from vibeinsight.errors import PipelineError
from vibeinsight.usage import ServiceUsage

T = TypeVar("T")

MAX_RETRY_AFTER_S = 120.0  # a longer wait is the caller's quota problem, not ours


class Transient(Exception):
    """Worth another try (429, 5xx, timeout, reset); retry_after in seconds when the server said."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


def backoff(base_s: float = 0.5, cap_s: float = 30.0) -> wait_base:
    """Exponential back-off with full jitter: uniform(0, min(cap, base·2^n))."""
    return wait_random_exponential(multiplier=base_s, max=cap_s)


class wait_retry_after(wait_base):
    """The server's Retry-After when the last error carried one (capped), else `fallback`."""

    def __init__(self, fallback: wait_base | None = None, cap_s: float = MAX_RETRY_AFTER_S) -> None:
        self.fallback = fallback or backoff()
        self.cap_s = cap_s

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is not None and after >= 0:
            return min(after, self.cap_s)
        return self.fallback(retry_state)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or an HTTP date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    if ms := lower.get("retry-after-ms"):
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = lower.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def transient_retrying(attempts: int, on_retry: Callable[[BaseException], None] | None = None,
                       sleep: Callable[[float], None] = time.sleep) -> Retrying:
    """Retry Transient failures up to `attempts` tries in all; anything else propagates at once."""
    return Retrying(stop=stop_after_attempt(attempts), wait=wait_retry_after(),
                    retry=retry_if_exception_type(Transient), reraise=True, sleep=sleep,
                    before_sleep=(lambda rs: on_retry(rs.outcome.exception())) if on_retry else None)


def outage_retrying(passes: Callable[[BaseException], bool], what: str = "call",
                    budget_s: float | None = None, sleep: Callable[[float], None] = time.sleep,
                    log: logging.Logger | None = None) -> Retrying:
    """Ride out an outage of storage or a database: retry an error that `passes` says may pass (a
    refused connection, a timeout, a 5xx) with jittered back-off until `budget_s` has gone by
    (default: VIBEINSIGHT_RETRY_OUTAGE_BUDGET_S), then raise the last error; any other error at once.
    Only for calls that are safe to repeat (a read, a whole-object put, a seq-guarded status write)."""
    from vibeinsight.settings import RetrySettings

    budget_s = RetrySettings().outage_budget_s if budget_s is None else budget_s
    logger = log or logging.getLogger("vibeinsight.retry")

    def noted(rs: RetryCallState) -> None:
        logger.warning("%s failed (%s); retrying for up to %.0f s of outage", what,
                       str(rs.outcome.exception())[:200], budget_s)

    def spent(rs: RetryCallState) -> bool:  # time since the first try, or the waits alone (an injected sleep)
        return max(rs.seconds_since_start or 0.0, rs.idle_for) >= budget_s

    return Retrying(stop=spent, wait=backoff(base_s=0.5, cap_s=8.0),
                    retry=retry_if_exception(passes), reraise=True, sleep=sleep, before_sleep=noted)


def metered_call(fn: Callable[[], T], usage: ServiceUsage, classify: Callable[[Exception], Exception],
                 attempts: int, error: type[PipelineError], sleep: Callable[[float], None] = time.sleep,
                 operation: str = "request", **attributes) -> T:
    """Call a paid API: every try counts in usage.calls, every failed try in usage.failed, every
    retry in usage.retries; the call is one span `{service}.{operation}` (attributes: sizes, retries,
    the error code).

    `classify` turns an SDK error into Transient (retried) or the final error to raise; when the
    tries run out, `error` is raised with api_rate_limited (429) or api_unavailable. The raised
    error carries `usage` (what was billed so far) so the caller can still record it.
    """
    from vibeinsight import tracing

    def once() -> T:
        usage.calls += 1
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            usage.failed += 1
            raise classify(exc) from exc

    def counted(exc: BaseException) -> None:
        usage.retries += 1
        span.add_event("retry", {"error": str(exc)[:200]})

    with tracing.span(f"{usage.service}.{operation}", service=usage.service, model=usage.model, **attributes) as span:
        calls, retries, sent = usage.calls, usage.retries, usage.bytes_sent
        try:
            try:
                return transient_retrying(attempts, counted, sleep)(once)
            except Transient as exc:  # out of tries: say so, and let no outer retry pile on
                code = "api_rate_limited" if exc.status == 429 else "api_unavailable"
                raise error(f"{usage.service}: {exc} (after {usage.calls} calls)", code) from exc
        except Exception as exc:
            with contextlib.suppress(AttributeError):  # an unclassified SDK error may refuse attributes
                exc.usage = usage
            raise
        finally:
            tracing.set_attributes(span, calls=usage.calls - calls, retries=usage.retries - retries,
                                   bytes_sent=usage.bytes_sent - sent)
