"""Poll for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.2, what: str | None = None) -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy, and return that.

    Raises AssertionError naming `what` (and the last value seen) after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what or predicate!r} (last: {value!r})")
        time.sleep(interval)
