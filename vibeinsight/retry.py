"""Retry policy for remote APIs: exponential backoff with full jitter, honoring Retry-After.

Plain logic (no SDK): the OpenAI and Gemini blocks classify their SDK's errors into
Transient / Permanent and run calls through `call_with_retries`, which counts retries.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class Transient(Exception):
    """Worth another try (429, 5xx, timeout, reset); retry_after in seconds when the server said."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    base_s: float = 0.5
    cap_s: float = 30.0
    max_retry_after_s: float = 120.0  # a longer wait is the caller's quota problem, not ours

    def delay(self, retry: int, retry_after: float | None = None, rng: Callable[[], float] = random.random) -> float:
        """Seconds before retry number `retry` (1-based). Retry-After wins when given."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_retry_after_s)
        return rng() * min(self.cap_s, self.base_s * 2 ** (retry - 1))  # full jitter


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


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy, on_retry: Callable[[Transient], None] | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Run fn; retry Transient failures per policy; anything else propagates at once."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Transient as exc:
            if attempt == policy.attempts:
                raise
            if on_retry:
                on_retry(exc)
            sleep(policy.delay(attempt, exc.retry_after))
    raise AssertionError("unreachable")
