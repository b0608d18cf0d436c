"""Run review figures: the data and layout the analyst reads (axes from zero, round ticks, one colour
and one order per outcome, clients ranked by money, time bins sized to the run, a caption each)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pandas as pd
import plotly.graph_objects as go
import pytest

from fxbatch import charts
from fxbatch.analytics import OTHER, time_bin_width
from fxbatch.chartstyle import OUTCOME_COLOURS, caption_of, money_tick, round_step, value_axis
from fxbatch.whatif import charts as whatif_charts

GREEN, RED, GREY = "#2ca02c", "#d62728", "#7f7f7f"


# -- frames shaped like fxbatch.analytics returns them ----------------------------------------------


def outcome_counts(**trades: int) -> pd.DataFrame:
    total = sum(trades.values())
    return pd.DataFrame(
        {"status": list(trades), "trades": list(trades.values()), "share": [n / total for n in trades.values()]}
    )


def notional_by_outcome() -> pd.DataFrame:
    # analytics.notional_by_outcome orders by status name: CANCELLED, FAILED, SUCCESS
    return pd.DataFrame(
        {"status": ["CANCELLED", "FAILED", "SUCCESS"], "trades": [5, 20, 175], "amount_zar": [1e6, 16.6e6, 260.9e6]}
    )


def pareto() -> pd.DataFrame:
    df = pd.DataFrame({"failure_code": ["INSUFFICIENT_FUNDS", "PRICE_MOVED", "TIMEOUT_UNKNOWN"], "trades": [18, 14, 7]})
    df["share"] = df["trades"] / df["trades"].sum()
    df["cumulative_share"] = df["share"].cumsum()
    return df


def notional_by(rows: list[tuple[str, str, int, float]], others: int = 0) -> pd.DataFrame:
    """key, status, trades, amount_zar, rank, keys (ranked by each key's total, as analytics.notional_by)."""
    df = pd.DataFrame(rows, columns=["key", "status", "trades", "amount_zar"])
    totals = df[df["key"] != OTHER].groupby("key")["amount_zar"].sum().sort_values(ascending=False)
    rank = {k: i + 1 for i, k in enumerate(totals.index)}
    df["rank"] = [rank.get(k, len(rank) + 1) for k in df["key"]]
    df["keys"] = [others if k == OTHER else 1 for k in df["key"]]
    return df


CLIENTS = notional_by(
    [
        ("0000001", "SUCCESS", 1, 1_000.0),  # the lowest CIF: a sliver, never first
        ("0376795521", "SUCCESS", 20, 9_000_000.0),
        ("0376795521", "FAILED", 4, 1_000_000.0),
        ("0089029770", "SUCCESS", 15, 2_000_000.0),
        ("0089029770", "FAILED", 10, 6_000_000.0),
        (OTHER, "SUCCESS", 280, 90_000_000.0),
        (OTHER, "FAILED", 30, 3_000_000.0),
    ],
    others=270,
)


def throughput_frame(duration_s: float, per_bin: int = 10) -> pd.DataFrame:
    width = time_bin_width(duration_s)
    bins = max(math.ceil(duration_s / width), 1)
    return pd.DataFrame(
        {
            "second": [i * width for i in range(bins)],
            "trades": [per_bin] * bins,
            "per_s": [per_bin / width] * bins,
            "width_s": [width] * bins,
        }
    )


def figures() -> Iterator[tuple[str, go.Figure]]:
    """Every run chart, and the what-if charts, drawn from small frames."""
    yield "outcome", charts.outcome_chart(outcome_counts(SUCCESS=175, FAILED=20, CANCELLED=5))
    yield "notional", charts.notional_chart(notional_by_outcome())
    yield "pareto", charts.pareto_chart(pareto())
    yield "clients", charts.notional_by_chart(CLIENTS, "client")
    yield "clients failed", charts.notional_by_chart(CLIENTS, "client", failed=True)
    hist = pd.DataFrame({"from_ms": [10.0, 20.0, 30.0], "to_ms": [20.0, 30.0, 40.0], "trades": [5, 80, 3]})
    yield "latency", charts.latency_chart(hist)
    yield "throughput", charts.throughput_chart(throughput_frame(1.0))
    income = pd.DataFrame({"key": ["USD/ZAR", "EUR/ZAR"], "trades": [8, 4], "spread_income_zar": [900.5, 310.0]})
    yield "income", charts.income_chart(income, "pair")
    by = pd.DataFrame(
        {"key": ["USD/ZAR", "USD/ZAR", OTHER], "status": ["SUCCESS", "FAILED", "SUCCESS"], "trades": [5, 2, 9]}
    )
    yield "outcomes by", charts.outcomes_by_chart(by, "currency pair")


def value_axes(fig: go.Figure) -> Iterator[tuple[str, dict[str, object]]]:
    """The axes of ``fig`` that carry values (a range from the chart, not plotly's autorange)."""
    layout = fig.to_plotly_json()["layout"]
    for name, axis in layout.items():
        if (name.startswith("xaxis") or name.startswith("yaxis")) and isinstance(axis, dict) and "range" in axis:
            yield name, axis


def is_round(step: float) -> bool:
    """1, 2, 2.5 or 5 times a power of ten."""
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5))


# -- axes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fig"), list(figures()), ids=[n for n, _ in figures()])
def test_every_value_axis_starts_at_zero_and_ticks_on_round_values(name: str, fig: go.Figure) -> None:
    axes = list(value_axes(fig))
    assert axes, f"{name}: no value axis with a range"
    for axis_name, axis in axes:
        low, high = axis["range"]  # type: ignore[misc]
        assert low == 0, (name, axis_name)
        assert high > 0
        ticks = axis.get("tickvals")
        if ticks is not None:  # money axes: labelled ticks at round values
            step = ticks[1] - ticks[0]  # type: ignore[index]
            assert ticks[0] == 0 and is_round(step), (name, axis_name, ticks)
            assert all(math.isclose(t, i * step) for i, t in enumerate(ticks))  # type: ignore[arg-type]
        elif "dtick" in axis:
            assert is_round(float(axis["dtick"])), (name, axis_name, axis["dtick"])  # type: ignore[arg-type]


def test_the_run_comparison_money_axis_starts_at_zero_even_when_the_runs_are_close() -> None:
    table = pd.DataFrame(
        {
            "run_id": [1, 2],
            "succeeded": [190, 189],
            "failed": [10, 11],
            "cancelled": [0, 0],
            "notional_zar_succeeded": [214_500_000.0, 213_888_935.0],
            "notional_zar_failed": [16_600_000.0, 17_100_000.0],
            "spread_income_zar": [1_200_000.0, 1_190_000.0],
        }
    )
    fig = whatif_charts.comparison_chart(table)
    for axis in ("yaxis", "yaxis2", "yaxis3"):
        assert fig.layout[axis].range[0] == 0
    assert fig.layout.yaxis2.range[1] >= 214_500_000
    assert list(fig.layout.yaxis2.ticktext)[:2] == ["R 0", "R 50m"]


def test_the_pareto_share_axis_ticks_at_quarters_on_the_trades_axis_grid() -> None:
    fig = charts.pareto_chart(pareto())
    share = fig.layout.yaxis2
    assert tuple(share.range) == (0, 1) and share.dtick == 0.25 and share.tickformat == ".0%"
    trades = fig.layout.yaxis
    assert trades.range[0] == 0 and trades.range[1] == pytest.approx(4 * trades.dtick)  # same four intervals
    assert trades.range[1] >= 18


@pytest.mark.parametrize(
    ("top", "step", "end"),
    [(18, 5, 20), (134, 50, 150), (260.9e6, 100e6, 300e6), (0.7, 0.2, 0.8), (1, 0.2, 1.0), (0, 0.2, 1.0)],
)
def test_value_axes_end_on_a_round_tick_above_the_largest_value(top: float, step: float, end: float) -> None:
    axis = value_axis(top)
    assert axis["dtick"] == pytest.approx(step) and axis["range"] == [0, pytest.approx(end)]
    assert round_step(top or 1) == pytest.approx(step)


def test_money_ticks_read_as_the_desk_says_them() -> None:
    assert [money_tick(v) for v in (0, 750, 2_500, 50e6, 1.25e9)] == ["R 0", "R 750", "R 2.5k", "R 50m", "R 1.25bn"]


# -- one colour and one order per outcome -------------------------------------------------------------


def colours_by_outcome(fig: go.Figure) -> dict[str, str]:
    """Outcome label -> colour, from bars coloured per point or per trace."""
    found: dict[str, str] = {}
    for trace in fig.data:
        if trace.type != "bar":
            continue
        colour = trace.marker.color
        if isinstance(colour, tuple | list):
            found.update(zip([str(x) for x in trace.x], colour, strict=True))
        elif trace.name:
            found[str(trace.name)] = str(colour)
    return found


def test_each_outcome_has_one_colour_in_every_chart() -> None:
    table = pd.DataFrame(
        {
            "run_id": [1, 2], "succeeded": [9, 8], "failed": [1, 1], "cancelled": [0, 1],
            "notional_zar_succeeded": [9.0, 8.0], "notional_zar_failed": [1.0, 1.0], "spread_income_zar": [1.0, 1.0],
        }
    )  # fmt: skip
    by = pd.DataFrame({"key": ["A", "A", "A"], "status": ["CANCELLED", "FAILED", "SUCCESS"], "trades": [1, 2, 3]})
    drawn = [
        charts.outcome_chart(outcome_counts(SUCCESS=175, FAILED=20, CANCELLED=5, PENDING=3)),
        charts.notional_chart(notional_by_outcome()),
        charts.notional_by_chart(CLIENTS, "client"),
        charts.outcomes_by_chart(by, "client"),
        whatif_charts.comparison_chart(table),
    ]
    seen: dict[str, set[str]] = {}
    for fig in drawn:
        for name, colour in colours_by_outcome(fig).items():
            seen.setdefault(name, set()).add(colour)
    assert seen["Succeeded"] == {GREEN}
    assert seen["Failed"] == {RED}
    assert seen["Cancelled"] == {GREY}
    assert seen["Not started"] == {OUTCOME_COLOURS["PENDING"]}
    assert OUTCOME_COLOURS["PENDING"] not in (GREEN, RED, GREY)
    assert charts.pareto_chart(pareto()).data[0].marker.color == RED  # failed trades, the failed red


def test_the_notional_chart_orders_its_bars_as_the_outcome_chart_beside_it() -> None:
    outcome = charts.outcome_chart(outcome_counts(FAILED=20, CANCELLED=5, SUCCESS=175))
    notional = charts.notional_chart(notional_by_outcome())  # CANCELLED, FAILED, SUCCESS as queried
    assert list(outcome.data[0].x) == list(notional.data[0].x) == ["Succeeded", "Failed", "Cancelled"]
    assert list(notional.layout.xaxis.categoryarray) == ["Succeeded", "Failed", "Cancelled"]
    assert list(notional.data[0].y) == [260.9e6, 16.6e6, 1e6]


def test_stacked_charts_stack_and_list_outcomes_in_the_same_order() -> None:
    fig = charts.notional_by_chart(CLIENTS, "client")
    assert [t.name for t in fig.data] == ["Succeeded", "Failed"]
    by = pd.DataFrame({"key": ["A", "A", "A"], "status": ["PENDING", "FAILED", "SUCCESS"], "trades": [1, 2, 3]})
    assert [t.name for t in charts.outcomes_by_chart(by, "pair").data] == ["Succeeded", "Failed", "Not started"]


# -- top clients by money -------------------------------------------------------------------------------


def test_top_clients_are_ranked_by_notional_never_by_client_number() -> None:
    fig = charts.notional_by_chart(CLIENTS, "client")
    assert fig.layout.title.text == "Top 3 clients by notional (ZAR)"
    assert list(fig.layout.yaxis.categoryarray) == ["0376795521", "0089029770", "0000001"]
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.yaxis.type == "category"  # largest on top
    assert OTHER not in {y for t in fig.data for y in t.y}  # the rest would dwarf the top ten
    success = dict(zip(fig.data[0].y, fig.data[0].x, strict=True))
    assert success["0376795521"] == 9_000_000.0 and list(fig.data[0].customdata)[:1] == [20]
    caption = caption_of(fig)
    assert "270 other clients" in caption and "R 93.0m" in caption and "R 111.0m" in caption


def test_the_failed_view_ranks_and_draws_only_the_failed_notional() -> None:
    df = CLIENTS.copy()
    failed_rank = {"0089029770": 1, "0376795521": 2, "0000001": 4}
    df["rank"] = [failed_rank.get(k, 3) for k in df["key"]]
    fig = charts.notional_by_chart(df, "client", failed=True)
    [bars] = fig.data
    assert bars.name == "Failed" and bars.marker.color == RED
    assert list(bars.y) == ["0089029770", "0376795521"]  # the sliver without failures is not drawn
    assert list(bars.x) == [6_000_000.0, 1_000_000.0]
    assert fig.layout.title.text == "Top 2 clients by failed notional (ZAR)"
    assert "R 10.0m failed notional" in caption_of(fig)


def test_a_run_without_failures_says_so_in_the_failed_view() -> None:
    df = notional_by([("0376795521", "SUCCESS", 20, 9_000_000.0)])
    fig = charts.notional_by_chart(df, "client", failed=True)
    assert not fig.data and "no failed trades" in fig.layout.annotations[0].text


# -- time bins ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "width"),
    [(0.0, 0.001), (0.16, 0.005), (1.0, 0.05), (12.0, 0.5), (60.0, 2.0), (3600.0, 120.0), (36000.0, 900.0)],
)
def test_time_bins_are_round_and_cut_any_run_into_at_most_forty_bars(duration: float, width: float) -> None:
    assert time_bin_width(duration) == pytest.approx(width)
    assert duration / width <= 40


def test_a_one_second_run_is_drawn_as_many_bars_and_an_hour_long_one_as_few_wide_ones() -> None:
    short = charts.throughput_chart(throughput_frame(1.0))
    long = charts.throughput_chart(throughput_frame(3600.0))
    assert len(short.data[0].x) == 20 and short.data[0].width == pytest.approx(0.05)
    assert short.layout.xaxis.range == (0, pytest.approx(1.0))
    assert len(long.data[0].x) == 30 and long.data[0].width == 120
    assert long.layout.xaxis.range == (0, 3600)
    assert "50 ms bins" in caption_of(short) and "2 min bins" in caption_of(long)


# -- captions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fig"), list(figures()), ids=[n for n, _ in figures()])
def test_every_chart_has_a_one_line_caption_saying_what_to_read(name: str, fig: go.Figure) -> None:
    caption = caption_of(fig)
    assert caption and "\n" not in caption and caption.endswith("."), (name, caption)
    assert len(caption) < 260


def test_captions_carry_the_numbers_that_matter() -> None:
    assert caption_of(charts.outcome_chart(outcome_counts(SUCCESS=175, FAILED=20, CANCELLED=5))) == (
        "How the 200 trades ended: 175 succeeded (88%), 20 failed (10%), 5 cancelled (2%)."
    )
    assert caption_of(charts.notional_chart(notional_by_outcome())) == (
        "The money behind each outcome: R 260.9m booked, R 16.6m failed, R 1.0m cancelled (6% of R 278.5m)."
    )
    assert caption_of(charts.pareto_chart(pareto())).startswith("Which reasons to fix first: INSUFFICIENT_FUNDS is 46%")


@pytest.mark.parametrize(
    "fig",
    [
        charts.outcome_chart(pd.DataFrame(columns=["status", "trades", "share"])),
        charts.pareto_chart(pd.DataFrame(columns=["failure_code", "trades", "share", "cumulative_share"])),
        charts.throughput_chart(pd.DataFrame(columns=["second", "trades", "per_s", "width_s"])),
        charts.income_chart(pd.DataFrame(columns=["key", "trades", "spread_income_zar"]), "pair"),
    ],
)
def test_empty_charts_say_why_in_their_caption_too(fig: go.Figure) -> None:
    assert not fig.data
    assert caption_of(fig).startswith("Nothing to show: ")


def test_a_figure_from_elsewhere_has_no_caption() -> None:
    assert caption_of(go.Figure()) == ""


def test_a_run_without_failures_reads_its_notional_without_a_failed_share() -> None:
    df = pd.DataFrame({"status": ["SUCCESS"], "trades": [3], "amount_zar": [5e6]})
    assert caption_of(charts.notional_chart(df)) == "The money behind each outcome: R 5.0m booked."


def test_a_share_is_never_called_0_percent_of_something_or_100_percent_of_less_than_all() -> None:
    from fxbatch.chartstyle import caption_of

    fig = charts.outcome_chart(outcome_counts(SUCCESS=1999, FAILED=1))
    assert caption_of(fig) == "How the 2,000 trades ended: 1,999 succeeded (>99%), 1 failed (<1%)."
    assert list(fig.data[0].text) == ["1,999 (>99%)", "1 (<1%)"]
    assert [charts.share_text(s) for s in (0.0, 0.004, 0.005, 0.006, 0.5, 0.994, 0.996, 1.0)] == [
        "0%", "<1%", "<1%", "1%", "50%", "99%", ">99%", "100%",
    ]  # fmt: skip
