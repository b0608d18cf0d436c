"""A run's progress: counts from any thread, and an ETA from the recent pace (issue 15)."""

from __future__ import annotations

import pytest

from fxbatch.engine.jobs import PACE_WINDOW_S, Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_follows_the_recent_pace_not_the_average_since_the_start() -> None:
    clock = Clock()
    progress = Progress(1, 1000, {}, clock=clock)
    for _ in range(6):  # a slow start: 10 trades every 10 s (1 a second)
        clock.now += 10
        progress.finished({"SUCCESS": 10})
    for _ in range(10):  # then 50 a second
        clock.now += 1
        progress.finished({"SUCCESS": 50})
    snap = progress.snapshot()
    assert snap.done == 560
    assert snap.trades_per_s == pytest.approx(50.0)
    assert snap.eta_s == pytest.approx(440 / 50)  # the average since the start would say 55 s


def test_a_long_wave_with_nothing_finished_in_the_window_keeps_the_pace_from_before() -> None:
    clock = Clock()
    progress = Progress(1, 300, {}, clock=clock)
    clock.now += 5
    progress.finished({"SUCCESS": 100})
    clock.now += 3 * PACE_WINDOW_S  # the next wave takes a while: no trade finished meanwhile
    snap = progress.snapshot()
    assert snap.eta_s is not None and snap.trades_per_s == pytest.approx(100 / (5 + 3 * PACE_WINDOW_S))


def test_before_any_trade_finishes_the_eta_is_not_known() -> None:
    clock = Clock()
    progress = Progress(1, 10, {"SUCCESS": 4}, clock=clock)  # a resumed run: 4 done before
    clock.now += 2
    snap = progress.snapshot()
    assert snap.done == 4 and snap.eta_s is None and snap.trades_per_s == 0.0
