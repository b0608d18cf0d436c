"""What-if figures: the fan shows money (income earned and lost, notional booked), runs compare on
money as well as counts, failure reasons keep their colours; every axis from zero, every chart captioned."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from fxbatch.chartstyle import caption_of, reason_colour
from fxbatch.whatif import charts

GREEN, RED = "#2ca02c", "#d62728"


def band(rate: float, seeds: int = 5, income: bool = True) -> dict[str, Any]:
    """One row of a sweep's summary (SweepBand)."""
    row: dict[str, Any] = {
        "success_rate": rate,
        "mean": 260e6 * rate,
        "p05": 250e6 * rate,
        "p95": 270e6 * rate,
        "success_share_mean": rate,
        "success_share_p05": rate,
        "success_share_p95": rate,
        "scenarios": seeds,
    }
    lost = 80_000.0 * (1 - rate)
    row.update(
        income_mean=1.2e6 * rate if income else None,
        income_p05=1.1e6 * rate if income else None,
        income_p95=1.3e6 * rate if income else None,
        income_lost_mean=lost if income else None,
        income_lost_p05=0.8 * lost if income else None,
        income_lost_p95=1.2 * lost if income else None,
    )
    return row


def means(fig: Any) -> dict[str, list[float]]:
    return {t.name: list(t.y) for t in fig.data if t.name and t.name.endswith("(mean)")}


def test_the_fan_shows_income_earned_income_lost_and_notional_booked_by_success_rate() -> None:
    fig = charts.fan_chart([band(1.0), band(0.5), band(0.75)])  # out of order on purpose
    shown = means(fig)
    assert shown["income earned (mean)"] == pytest.approx([600_000.0, 900_000.0, 1_200_000.0])
    assert shown["income lost (failed trades) (mean)"] == pytest.approx([40_000.0, 20_000.0, 0.0])
    assert shown["notional booked (mean)"] == pytest.approx([130e6, 195e6, 260e6])
    by_name = {t.name: t for t in fig.data if t.name}
    assert by_name["income earned (mean)"].line.color == GREEN
    assert by_name["income lost (failed trades) (mean)"].line.color == RED
    assert by_name["income earned (mean)"].yaxis == "y" and by_name["notional booked (mean)"].yaxis == "y2"
    assert fig.layout.yaxis.range[0] == 0 and fig.layout.yaxis2.range[0] == 0
    assert fig.layout.yaxis.range[1] >= 1.3e6 and fig.layout.yaxis2.range[1] >= 270e6
    assert fig.layout.xaxis2.tickformat == ".0%"
    caption = caption_of(fig)
    assert caption == (
        "At a 50% success rate the desk earns R 600.0k and loses R 40.0k of spread income on failed trades, "
        "against R 1.2m earned at 100% (mean of 5 seeds; the bands hold 90% of them)."
    )


def test_the_fan_band_fills_between_the_5th_and_95th_percentile() -> None:
    fig = charts.fan_chart([band(0.5), band(1.0)])
    lower = next(t for t in fig.data if t.name == "income lost (failed trades): 5-95% across seeds")
    upper = fig.data[list(fig.data).index(lower) - 1]
    assert lower.fill == "tonexty" and not lower.showlegend
    assert list(lower.y) == pytest.approx([32_000.0, 0.0]) and list(upper.y) == pytest.approx([48_000.0, 0.0])


def test_a_sweep_made_before_income_was_recorded_still_draws_the_notional_fan_and_says_why() -> None:
    fig = charts.fan_chart([band(0.5, income=False), band(1.0, income=False)])
    assert set(means(fig)) == {"notional booked (mean)"}
    assert fig.layout.yaxis.range[0] == 0
    assert "before income was recorded" in caption_of(fig)


def test_runs_compare_on_trades_and_on_money() -> None:
    table = pd.DataFrame(
        {
            "run_id": [3, 1],
            "succeeded": [190, 170],
            "failed": [10, 30],
            "cancelled": [0, 0],
            "notional_zar_succeeded": [260.9e6, 244.3e6],
            "notional_zar_failed": [16.6e6, 33.2e6],
            "spread_income_zar": [1.2e6, 1.1e6],
        }
    )
    fig = charts.comparison_chart(table)
    panels: dict[str, list[tuple[str, list[float]]]] = {}
    for t in fig.data:
        panels.setdefault(t.xaxis, []).append((t.name, list(t.y)))
    assert panels["x"] == [("Succeeded", [190, 170]), ("Failed", [10, 30])]  # no cancelled trades: no bar
    assert panels["x2"] == [("Succeeded (ZAR)", [260.9e6, 244.3e6]), ("Failed (ZAR)", [16.6e6, 33.2e6])]
    assert panels["x3"] == [("spread income", [1.2e6, 1.1e6])]
    assert [a.text for a in fig.layout.annotations] == ["Trades", "Notional (ZAR)", "Spread income (ZAR)"]
    assert all(fig.layout[a].range[0] == 0 for a in ("yaxis", "yaxis2", "yaxis3"))
    assert caption_of(fig) == (
        "Run 3 booked the most, R 260.9m; run 1 the least, R 244.3m (R 16.6m less, R 100.0k difference in "
        "spread income)."
    )


def test_failure_reasons_keep_one_colour_each_and_stack_from_zero() -> None:
    scenarios = pd.DataFrame(
        {
            "success_rate": [0.5, 0.5, 1.0],
            "failure_reasons": [{"PRICE_MOVED": 4, "INSUFFICIENT_FUNDS": 6}, {"INSUFFICIENT_FUNDS": 8}, {}],
        }
    )
    fig = charts.failure_reasons_chart(scenarios)
    assert [t.name for t in fig.data] == ["INSUFFICIENT_FUNDS", "PRICE_MOVED"]  # FailureCode order
    assert [t.marker.color for t in fig.data] == [reason_colour("INSUFFICIENT_FUNDS"), reason_colour("PRICE_MOVED")]
    assert reason_colour("INSUFFICIENT_FUNDS") != reason_colour("PRICE_MOVED")
    assert GREEN not in {reason_colour(c) for c in ("INSUFFICIENT_FUNDS", "PRICE_MOVED", "TIMEOUT_UNKNOWN")}
    assert list(fig.data[0].y) == [7.0, 0.0] and list(fig.data[1].y) == [2.0, 0.0]
    assert fig.layout.yaxis.range[0] == 0 and fig.layout.yaxis.range[1] >= 9
    assert caption_of(fig) == (
        "Why trades fail as the bank gets worse: at 50% about 9 trades fail, most of them INSUFFICIENT_FUNDS."
    )


def test_empty_what_if_inputs_give_a_figure_that_says_so() -> None:
    for fig in (charts.fan_chart([]), charts.failure_reasons_chart([]), charts.comparison_chart(pd.DataFrame())):
        assert not fig.data and caption_of(fig).startswith("Nothing to show")


def test_a_sweep_of_one_success_rate_reads_without_a_comparison() -> None:
    caption = caption_of(charts.fan_chart([band(0.5, seeds=1)]))
    assert (
        caption == "At a 50% success rate the desk earns R 600.0k and loses R 40.0k of spread income on failed trades."
    )
