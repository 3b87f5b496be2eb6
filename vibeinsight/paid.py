"""Which run attempt paid for a chunk's API calls, so that each billed call reaches the ledger once.

A chunk's transcript is cached with the attempt that paid for it (`attempt_tag`). A run books what its
own attempt paid and what the part runs whose results it read paid. A chunk that comes back from the
cache paid by an attempt that nobody booked (a part run, or an earlier attempt of this run, whose
Machine died before it could hand its usage on) is booked by the run that finds it. A run that booked
leaves a marker for each attempt it booked, so a later run of the session does not book it again.
The calls a dying attempt had in flight, and the chunks it paid for but never cached, stay unknown.

Plain logic: flows/chunks.py and flows/fan_out.py do the I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import TypeVar

from vibeinsight.fanout import session_prefix

U = TypeVar("U")

# One attempt of a flow run is one process (a Machine, a process-pool run, the CLI): a re-run after a
# crash is a new process. Retries inside one process unwind through the run's booking first.
PROCESS = uuid.uuid4().hex[:12]


def attempt_tag(flow_run_id: str) -> str:
    """This process's attempt at flow run `flow_run_id`."""
    return f"{flow_run_id}.{PROCESS}"


def booked_marker(session_id: str, tag: str) -> str:
    """The bucket key that says attempt `tag`'s calls are in the ledger (under the runs' workspace prefix)."""
    return f"{session_prefix(session_id)}booked/{tag}"


def unbooked(chunks: Iterable[tuple[str | None, U | None]], accounted: set[str],
             booked: Callable[[str], bool]) -> tuple[list[U], set[str]]:
    """Of the (paid_by, usage) of a run's chunks, the usage paid by attempts neither `accounted` by this run
    nor `booked` before it, and those attempts. `booked` is asked once per attempt."""
    found: list[U] = []
    known: dict[str, bool] = {}
    for paid_by, usage in chunks:
        if usage is None or paid_by is None or paid_by in accounted:
            continue
        if paid_by not in known:
            known[paid_by] = booked(paid_by)
        if not known[paid_by]:
            found.append(usage)
    return found, {tag for tag, was in known.items() if not was}
