"""The Fly Machine time of a flow run, booked to the usage ledger as a `fly` row (issue 14): the
`fly-machines` worker calls `book_machine_run` once a run's Machine has exited. Bookkeeping never
fails a run: a ledger that cannot be written is logged and skipped."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from blocks import registry
from vibeinsight.settings import Settings
from vibeinsight.usage import UsageEvent, load_table, machine_run_event

log = logging.getLogger("vibeinsight.fly")


def machine_run_row(flow_run: Any, guest: dict[str, Any], seconds: float, region: str | None = None,
                    machine_id: str | None = None, settings: Settings | None = None) -> UsageEvent:
    """The ledger row of one Machine run: `guest` is the Machine config's guest ({cpu_kind, cpus,
    memory_mb}); the session is the run's session_id parameter, else the flow run's id (as the flow's)."""
    params = getattr(flow_run, "parameters", None) or {}
    flow_run_id = str(getattr(flow_run, "id", "") or "") or None
    region = (region or "").split(",")[0].strip() or None  # a prioritized list: the first is the usual one
    table = load_table(settings.price_table) if settings else None
    return machine_run_event(session_id=params.get("session_id") or flow_run_id, flow_run_id=flow_run_id,
                             cpu_kind=guest.get("cpu_kind", "performance"), cpus=int(guest.get("cpus", 1)),
                             memory_mb=int(guest.get("memory_mb", 2048)), seconds=seconds, region=region,
                             machine_id=machine_id, at=datetime.now(timezone.utc), table=table)


def book_machine_run(flow_run: Any, guest: dict[str, Any], seconds: float, region: str | None = None,
                     machine_id: str | None = None, settings: Settings | None = None) -> int:
    """Record the run's Machine seconds, size and cost in the ledger; returns the rows written (0 on failure)."""
    try:
        row = machine_run_row(flow_run, guest, seconds, region, machine_id, settings)
        return registry.usage_ledger(settings).record([row])
    except Exception as exc:  # noqa: BLE001 - the run is over; its bookkeeping must not fail the worker
        log.warning("Machine time of flow run %s not booked: %s", getattr(flow_run, "id", "?"), exc)
        return 0
