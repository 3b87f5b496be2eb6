"""Status writes off the run's thread: at most one a `min_interval` per session, coalesced, the final
state never dropped.

Pure threading, no Prefect: the flow's stage updates and its state hooks share one of these per
session, so together they stay under the rate. The caller only hands an update over (a lock and a
notify, never I/O): a background thread writes. Its queue is bounded: updates booked for a write
(at most `queue_size`, the oldest dropped first: a newer update supersedes it), one pending update
that later ones replace, and the terminal one, written after the booked ones. After a failed write it backs off (exponentially, up
to `max_backoff`) so a store that is down is not hammered; the terminal update is retried until it
lands or `give_up_s` passes, and `final()` waits for it at most `wait_s`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable

from vibeinsight.schemas import StatusUpdate

log = logging.getLogger(__name__)


class CoalescingWriter:
    """Spaces writes at least `min_interval` apart; later updates replace pending ones."""

    def __init__(
        self,
        write: Callable[[StatusUpdate], object],
        min_interval: float = 1.0,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        give_up_s: float = 600.0,
        queue_size: int = 2,
    ) -> None:
        self._write = write
        self._interval = min_interval
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._give_up_s = give_up_s
        self._cond = threading.Condition()
        self._queue: deque[StatusUpdate] = deque(maxlen=queue_size)  # booked: written in this order
        self._pending: StatusUpdate | None = None  # the latest update waiting for its slot
        self._final: StatusUpdate | None = None
        self._final_since = 0.0
        self._done = threading.Event()  # the terminal update landed (or was given up)
        self._landed = False
        self._last_write = float("-inf")  # start of the latest booked write
        self._last_start = float("-inf")  # when the latest write really started
        self._retry_at = float("-inf")  # back-off after failures: nothing is written before this
        self._streak = 0  # failures in a row
        self._thread: threading.Thread | None = None
        self._busy = False  # a write is in flight
        self.writes = 0
        self.bytes_written = 0  # JSON payload bytes of the successful writes (what Realtime fans out)
        self.failures = 0
        self.delays: list[float] = []  # seconds from an update's hand-over to its landing (benchmarks)

    def slow_down(self, min_interval: float) -> None:
        """Space writes further apart (never closer): the quota guard's lower update frequency."""
        with self._cond:
            self._interval = max(self._interval, min_interval)

    def submit(self, update: StatusUpdate) -> None:
        """Hand over a progress update; returns at once."""
        update = _stamped(update)
        with self._cond:
            if self._final is not None:
                return  # the run has ended: nothing after the terminal state
            if self._pending is None or update.seq > self._pending.seq:
                self._pending = update
            now = time.monotonic()
            # book only while no write is in flight: a slow store then gets the freshest state next
            if not self._busy and now >= self._last_write + self._interval and now >= self._retry_at:
                self._book(now)
            self._start()
            self._cond.notify()

    def final(self, update: StatusUpdate, wait_s: float | None = None) -> bool:
        """Hand over the terminal update (never coalesced away), then wait up to wait_s (None: until it
        lands or is given up) for it to land. True when it landed."""
        update = _stamped(update)
        with self._cond:
            self._pending = None  # superseded; booked updates still go first, in order
            self._final = update
            self._final_since = time.monotonic()
            self._start()
            self._cond.notify()
        self._done.wait(wait_s)
        return self._landed

    # --- the background thread ---

    def _book(self, now: float) -> None:
        """Move the pending update to the queue and book the write slot now: the interval runs from
        the start of a write, so a submit during a slow write cannot squeeze in after it."""
        if self._pending is not None:
            self._queue.append(self._pending)
            self._pending = None
            self._last_write = now

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
            self._thread.start()

    def _next(self) -> StatusUpdate:
        """Block until an update is due; return it (under no lock). Writes start at least
        `min_interval` apart however late this thread wakes: the row's Realtime rate is what counts."""
        with self._cond:
            while True:
                now = time.monotonic()
                spaced = self._last_start + self._interval
                if self._queue:
                    ready_at = max(self._retry_at, spaced)
                    if now >= ready_at:
                        return self._take(self._queue.popleft(), now)
                elif self._final is not None:
                    ready_at = max(self._retry_at, self._last_write + self._interval, spaced)
                    if now >= ready_at:
                        self._last_write = now
                        return self._take(self._final, now)
                elif self._pending is not None:
                    ready_at = max(self._retry_at, self._last_write + self._interval)
                    if now >= ready_at:
                        self._book(now)
                        continue
                else:
                    self._cond.wait()
                    continue
                self._cond.wait(max(0.0, ready_at - now))

    def _take(self, update: StatusUpdate, now: float) -> StatusUpdate:
        self._busy = True
        self._last_start = now
        return update

    def _run(self) -> None:
        while True:
            update = self._next()
            try:
                self._write(update)
            except Exception as exc:  # noqa: BLE001 - the mirror never breaks a run
                if self._failed(update, exc):
                    return
            else:
                if self._succeeded(update):
                    return

    def _succeeded(self, update: StatusUpdate) -> bool:
        with self._cond:
            self._busy = False
            self.writes += 1
            self.bytes_written += len(update.model_dump_json(exclude_none=True))
            self.delays.append(time.monotonic() - getattr(update, "_handed_at", time.monotonic()))
            self._streak = 0
            self._retry_at = float("-inf")
            if update is self._final:
                self._landed = True
                self._done.set()
                return True
            return False

    def _failed(self, update: StatusUpdate, exc: Exception) -> bool:
        with self._cond:
            self._busy = False
            self.failures += 1
            self._streak += 1
            pause = min(self._max_backoff, self._backoff * 2 ** (self._streak - 1)) * random.uniform(0.5, 1.0)
            self._retry_at = time.monotonic() + pause
            log.warning("status write for %s failed (%s); next try in %.1f s", update.session_id, exc, pause)
            if update is self._final:
                if time.monotonic() - self._final_since > self._give_up_s:
                    log.error("status of %s not written: gave up after %.0f s", update.session_id, self._give_up_s)
                    self._done.set()
                    return True
                return False  # the terminal update stays: retried after the pause
            if self._final is None and (self._pending is None or self._pending.seq < update.seq):
                self._pending = update  # keep the latest state for the next write
            return False


def _stamped(update: StatusUpdate) -> StatusUpdate:
    """Note when the update was handed over (for `delays`) without changing what is written."""
    object.__setattr__(update, "_handed_at", time.monotonic())
    return update
