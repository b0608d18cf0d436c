"""The run summary the command line prints."""

from __future__ import annotations

import pytest

from fxbatch.cli import _summary_text
from fxbatch.models import RunConfig, RunStatus, RunSummary

WHY = "The bank could not be reached; 3 booking(s) are in doubt: resume it when the bank is back."


def summary(status: RunStatus) -> RunSummary:
    return RunSummary(run_id=7, batch_id=2, status=status, trades=10, counts={"SUCCESS": 7, "CANCELLED": 3},
                      failure_reasons={}, started_at=None, finished_at=None, elapsed_s=1.5, config=RunConfig(),
                      error=WHY)  # fmt: skip


@pytest.mark.parametrize("status", [RunStatus.INTERRUPTED, RunStatus.FAILED])
def test_a_stopped_run_says_why(status: RunStatus) -> None:
    assert f"  stopped: {WHY}" in _summary_text(summary(status)).splitlines()


@pytest.mark.parametrize("status", [RunStatus.CANCELLED, RunStatus.COMPLETED, RunStatus.PARTIAL])
def test_a_finished_run_does_not_repeat_an_error_it_left_behind(status: RunStatus) -> None:
    text = _summary_text(summary(status))
    assert text.startswith(f"Run 7 of batch 2: {status.value}") and "stopped:" not in text
