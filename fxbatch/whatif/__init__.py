"""What-if analysis: fast-mode scenarios, sweeps over grids of bank behaviours, run comparison."""

from fxbatch.whatif.scenario import BatchArrays, Outcomes, outcomes
from fxbatch.whatif.sweep import SweepGrid, get_sweep, list_sweeps, make_executor, run_sweep, summary

__all__ = [
    "BatchArrays",
    "Outcomes",
    "SweepGrid",
    "get_sweep",
    "list_sweeps",
    "make_executor",
    "outcomes",
    "run_sweep",
    "summary",
]
