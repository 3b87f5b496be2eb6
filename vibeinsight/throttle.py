"""At most one status write a second per session, coalesced; the final state is never dropped.

Pure threading, no Prefect: the flow's stage updates and its state hooks share one
of these per session, so together they stay under the rate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tenacity import Retrying, stop_after_attempt, wait_exponential

from vibeinsight.schemas import StatusUpdate

log = logging.getLogger(__name__)

class CoalescingWriter:
    """Spaces writes at least `min_interval` apart; later updates replace pending ones."""

    def __init__(
        self,
        write: Callable[[StatusUpdate], object],
        min_interval: float = 1.0,
        retries: int = 5,
        backoff: float = 0.2,
    ) -> None:
        self._write = write
        self._interval = min_interval
        self._retries = retries
        self._backoff = backoff
        self._lock = threading.Lock()
        self._io = threading.Lock()  # one write in flight per session, in seq order
        self._pending: StatusUpdate | None = None
        self._last_write = float("-inf")
        self._timer: threading.Timer | None = None
        self.writes = 0
        self.bytes_written = 0  # JSON payload bytes of the successful writes (what Realtime fans out)
        self.failures = 0

    def slow_down(self, min_interval: float) -> None:
        """Space writes further apart (never closer): the quota guard's lower update frequency."""
        with self._lock:
            self._interval = max(self._interval, min_interval)

    def submit(self, update: StatusUpdate) -> None:
        with self._lock:
            if self._pending is None or update.seq > self._pending.seq:
                self._pending = update
            wait = self._last_write + self._interval - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._flush_pending)
                    self._timer.daemon = True
                    self._timer.start()
                return
            update = self._take()
        self._send(update, retries=0)

    def final(self, update: StatusUpdate) -> None:
        """Write a terminal update: waits out the interval, retries, never coalesced away."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._pending = None
            wait = self._last_write + self._interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        with self._lock:
            self._last_write = time.monotonic()
        self._send(update, retries=self._retries)

    def _flush_pending(self) -> None:
        with self._lock:
            self._timer = None
            update = self._take()
        if update is not None:
            self._send(update, retries=0)

    def _take(self) -> StatusUpdate | None:
        """Take the pending update and book the write slot now, under the lock: the interval runs
        from the start of a write, so a submit during a slow write cannot squeeze in after it."""
        update, self._pending = self._pending, None
        if update is not None:
            self._last_write = time.monotonic()
        return update

    def _send(self, update: StatusUpdate, retries: int) -> None:
        def attempt() -> None:
            try:
                self._write(update)
            except Exception as exc:  # the mirror never breaks a run
                self.failures += 1
                log.warning("status write for %s failed (%s)", update.session_id, exc)
                raise

        with self._io:
            try:
                Retrying(stop=stop_after_attempt(retries + 1), wait=wait_exponential(multiplier=self._backoff),
                         reraise=True)(attempt)
            except Exception:  # noqa: BLE001 - out of tries: keep the latest state for the next write
                with self._lock:
                    if not update.status.terminal and (self._pending is None or self._pending.seq < update.seq):
                        self._pending = update
            else:
                self.writes += 1
                self.bytes_written += len(update.model_dump_json(exclude_none=True))
