"""Plan limits and prices as a Prefect Block, read from the providers settings file
(vibeinsight/data/providers.json: Supabase's plans, Tigris's and Fly's prices, the API prices).

The figures are data, not code: each carries its source and the date it was read, and the
design's older Supabase table stays selectable next to Supabase's current one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field

from vibeinsight.quota import QuotaLimits

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "vibeinsight" / "data" / "providers.json"
PlanName = Literal["free", "pro", "team"]


class Figure(BaseModel):
    value: bool | float | None
    source: str
    read: str = Field(description="date the source was read (YYYY-MM-DD)")


class PlanLimits(QuotaLimits):
    """One plan of one table, flattened for the quota maths (vibeinsight.quota)."""

    sources: dict[str, Figure]


class Plans(Block):
    """Plan limits and prices from a JSON settings file; `table` picks supabase-current or design."""

    _block_type_name = "VibeInsight Plans"

    plans_file: Path | None = Field(None, description="the plans settings file; None: the one the package ships")
    plan_table: str | None = Field(None, description="which table; the file's default_table when empty")

    def _data(self) -> dict:
        return json.loads((self.plans_file or DEFAULT_FILE).read_text())

    def prices(self) -> dict:
        """The whole file: each provider's prices (vibeinsight.usage reads the same shape)."""
        return self._data()

    def limits(self, plan: str) -> PlanLimits:
        data = self._data()
        supabase = data["supabase"]
        table = self.plan_table or supabase["default_table"]
        if table not in supabase["tables"]:
            raise ValueError(f"unknown plan table {table!r}; known: {', '.join(supabase['tables'])}")
        plans = supabase["tables"][table]["plans"]
        if plan not in plans:
            raise ValueError(f"unknown plan {plan!r} in table {table!r}; known: {', '.join(plans)}")
        figures = {k: Figure(**v) for k, v in plans[plan].items()}
        figures["avg_file_bytes_default"] = Figure(**data["avg_file_bytes_default"])
        values = {k: f.value for k, f in figures.items()}
        return PlanLimits(table=table, plan=plan, sources=figures, **values)
