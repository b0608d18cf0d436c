"""The typed results of what-if sweeps: what ``wb.whatif`` returns and the HTTP API serves."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field


class ScenarioResult(BaseModel):
    """One scenario of a sweep: a success rate, a variant and a seed, run in fast mode."""

    scenario: int = Field(description="1-based number within the sweep (what promote takes).")
    success_rate: float
    seed: int
    trades: int
    succeeded: int
    failed: int
    failure_reasons: dict[str, int]
    notional_zar_succeeded: float
    spread_income_zar: float | None = None
    income_lost_zar: float | None = None


class SweepBand(BaseModel):
    """Per success rate: the mean and 5-95% band across seeds of notional, success share and income."""

    success_rate: float
    mean: float = Field(description="Mean ZAR notional booked.")
    p05: float
    p95: float
    success_share_mean: float
    success_share_p05: float
    success_share_p95: float
    income_mean: float | None = None
    income_p05: float | None = None
    income_p95: float | None = None
    income_lost_mean: float | None = None
    income_lost_p05: float | None = None
    income_lost_p95: float | None = None
    scenarios: int


class SweepInfo(BaseModel):
    """A stored sweep as listed (``wb.whatif.sweeps``)."""

    sweep_id: int
    batch_id: int
    name: str
    scenarios: int
    elapsed_s: float | None
    created_at: datetime | None
    trade_date: date | None = Field(
        None, description="The trading day simulated (None: a sweep stored before it was kept)."
    )


class Sweep(BaseModel):
    """A stored sweep with every scenario and the per-rate summary (``wb.whatif.get``)."""

    sweep_id: int
    batch_id: int
    name: str
    grid: dict[str, Any]
    scenario_count: int
    elapsed_s: float | None
    created_at: datetime | None
    scenarios: list[ScenarioResult]
    trade_date: date | None = Field(
        None, description="The trading day simulated (None: a sweep stored before it was kept)."
    )
    summary: list[SweepBand]

    def scenarios_df(self) -> pd.DataFrame:
        """One row per scenario (the columns of ScenarioResult)."""
        return pd.DataFrame([s.model_dump() for s in self.scenarios], columns=list(ScenarioResult.model_fields))

    def summary_df(self) -> pd.DataFrame:
        """One row per success rate (the columns of SweepBand)."""
        return pd.DataFrame([b.model_dump() for b in self.summary], columns=list(SweepBand.model_fields))
