"""Spread income figures: income_by-shaped DataFrames and sweep summaries in, plotly figures out."""

from __future__ import annotations

import pandas as pd
import pytest

from fxbatch import charts
from fxbatch.whatif import charts as whatif_charts


def income(rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    """A frame shaped like analytics.income_by: key, trades, spread_income_zar."""
    return pd.DataFrame(rows, columns=["key", "trades", "spread_income_zar"])


def test_income_bars_run_largest_first_with_the_others_row_last() -> None:
    df = income([("GBP/ZAR", 3, 120.0), ("(others)", 9, 5000.0), ("USD/ZAR", 8, 900.5), ("EUR/ZAR", 4, 310.0)])
    fig = charts.income_chart(df, "pair")
    [bar] = fig.data
    assert list(bar.y) == ["USD/ZAR", "EUR/ZAR", "GBP/ZAR", "(others)"]
    assert list(bar.x) == [900.5, 310.0, 120.0, 5000.0]
    assert list(bar.customdata) == [8, 4, 3, 9]  # trade counts travel with their bars
    # Horizontal bars are drawn bottom-up: the axis is reversed so the first (largest) is on top.
    assert fig.layout.yaxis.autorange == "reversed"
    assert list(fig.layout.yaxis.categoryarray) == list(bar.y)
    assert fig.layout.title.text == "Spread income by pair"


def test_the_zar_axis_starts_at_zero_and_holds_the_largest_bar() -> None:
    fig = charts.income_chart(income([("0376795521", 20, 26019.57), ("0371822898", 22, 9115.52)]), "client")
    low, high = fig.layout.xaxis.range
    assert low == 0
    assert high >= 26019.57
    assert fig.data[0].orientation == "h"


def test_a_run_whose_trades_earned_nothing_still_gets_an_axis_from_zero() -> None:
    fig = charts.income_chart(income([("USD/ZAR", 5, 0.0)]), "pair")
    low, high = fig.layout.xaxis.range
    assert low == 0 and high > 0


def test_client_cifs_with_leading_zeros_stay_labels_not_numbers() -> None:
    fig = charts.income_chart(income([("0089029770", 15, 5180.34), ("0036153362", 16, 2489.75)]), "client")
    assert fig.layout.yaxis.type == "category"
    assert list(fig.data[0].y) == ["0089029770", "0036153362"]
    assert list(fig.data[0].text) == ["R 5,180", "R 2,490"]


def test_a_run_without_recorded_income_gets_a_figure_that_says_so() -> None:
    fig = charts.income_chart(income([]), "client (top 10)")
    assert not fig.data
    assert fig.layout.title.text == "Spread income by client (top 10)"
    assert "no spread income" in fig.layout.annotations[0].text


def summary_row(rate: float, mean: float | None, lost: float | None) -> dict[str, float | None]:
    def band(v: float | None, k: float) -> float | None:
        return None if v is None else v * k

    return {
        "success_rate": rate,
        "mean": 1e6 * rate,
        "p05": 0.9e6 * rate,
        "p95": 1.1e6 * rate,
        "success_share_mean": rate,
        "income_mean": mean,
        "income_p05": band(mean, 0.9),
        "income_p95": band(mean, 1.1),
        "income_lost_mean": lost,
        "income_lost_p05": band(lost, 0.8),
        "income_lost_p95": band(lost, 1.2),
        "scenarios": 3,
    }


def test_the_sweep_income_chart_draws_earned_and_lost_means_with_their_bands() -> None:
    summary = [summary_row(1.0, 74000.0, 0.0), summary_row(0.5, 47000.0, 26000.0)]  # out of order on purpose
    fig = whatif_charts.income_chart(summary)
    by_name = {t.name: t for t in fig.data if t.name}
    earned = by_name["income earned (mean)"]
    lost = by_name["income lost (failed trades) (mean)"]
    assert list(earned.x) == [0.5, 1.0] and list(earned.y) == [47000.0, 74000.0]
    assert list(lost.y) == [26000.0, 0.0]
    band = by_name["income earned: 5-95% across seeds"]
    assert band.fill == "tonexty" and list(band.y) == pytest.approx([42300.0, 66600.0])
    upper = fig.data[list(fig.data).index(band) - 1]  # the band fills up to the trace before it
    assert list(upper.y) == pytest.approx([51700.0, 81400.0])
    assert fig.layout.yaxis.rangemode == "tozero"


@pytest.mark.parametrize("old", [[summary_row(0.5, None, None)], [{"success_rate": 0.5, "mean": 1.0}]])
def test_a_sweep_made_before_income_was_recorded_says_so(old: list[dict[str, float | None]]) -> None:
    fig = whatif_charts.income_chart(old)
    assert not fig.data
    assert "not recorded" in fig.layout.annotations[0].text
