"""What-if analysis: fast-mode scenarios, sweeps over grids of bank behaviours, run comparison."""

from fxbatch.whatif.models import ScenarioResult, Sweep, SweepBand, SweepInfo
from fxbatch.whatif.scenario import BatchArrays, Outcomes, outcomes
from fxbatch.whatif.sweep import (
    SweepGrid,
    get_sweep,
    list_sweeps,
    make_executor,
    reserve_sweep_id,
    run_sweep,
    summary,
)

__all__ = [
    "BatchArrays",
    "Outcomes",
    "ScenarioResult",
    "Sweep",
    "SweepBand",
    "SweepGrid",
    "SweepInfo",
    "get_sweep",
    "list_sweeps",
    "make_executor",
    "outcomes",
    "reserve_sweep_id",
    "run_sweep",
    "summary",
]
