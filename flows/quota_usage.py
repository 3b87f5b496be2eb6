"""After publish: one usage_events row per kind and service from the run's result document."""

from __future__ import annotations

import logging

from blocks import registry
from vibeinsight.quota_usage import events_from_document
from vibeinsight.schemas import ResultDocument

log = logging.getLogger("vibeinsight.quota")


def record_run_usage(document: ResultDocument | dict) -> int:
    """Never fails the run: the ledger is bookkeeping, the result is what the user waits for."""
    try:
        return registry.usage_ledger().record(events_from_document(document))
    except Exception as exc:  # noqa: BLE001
        log.warning("usage not recorded: %s", exc)
        return 0
