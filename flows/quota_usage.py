"""After publish: one usage_events row per kind and service from the run's result document."""

from __future__ import annotations

import logging

from blocks import registry
from flows import status
from vibeinsight.quota_usage import UsageEvent, events_from_document
from vibeinsight.schemas import ResultDocument

log = logging.getLogger("vibeinsight.quota")


def record_run_usage(document: ResultDocument | dict) -> int:
    """Never fails the run: the ledger is bookkeeping, the result is what the user waits for."""
    try:
        events = events_from_document(document)
        session_id = document["session_id"] if isinstance(document, dict) else document.session_id
        writes, nbytes = status.write_stats(session_id)
        if writes and events:
            # Each status write reaches the session's subscriber as one Realtime message. Counted
            # before the terminal write, which the state hook makes after the flow body returns.
            events.append(UsageEvent(session_id=events[0].session_id, kind="status_write", service="realtime",
                                     calls=writes, bytes=nbytes, at=events[0].at))
        return registry.usage_ledger().record(events)
    except Exception as exc:  # noqa: BLE001
        log.warning("usage not recorded: %s", exc)
        return 0
