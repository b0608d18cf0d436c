"""What-if figures: DataFrames in, plotly figures out (the app and the notebook show the same).

Money first: the fan shows the desk's spread income earned and lost, and the notional booked,
against the bank's success rate; runs compare on trades and on money. Colours, order, round
axes and captions come from ``fxbatch.chartstyle``, as on the run page.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fxbatch.chartstyle import (
    caption_of,
    colour,
    empty_figure,
    label,
    reason_colour,
    value_axis,
    with_caption,
    zar,
)
from fxbatch.models import FailureCode

__all__ = ["caption_of", "comparison_chart", "failure_reasons_chart", "fan_chart", "income_chart"]

_RATE_AXIS: dict[str, Any] = {"title": "bank success rate", "tickformat": ".0%"}
_BANDS = {"SUCCESS": "rgba(44,160,44,0.2)", "FAILED": "rgba(214,39,40,0.15)"}
_INCOME_COLUMNS = ("income_mean", "income_p05", "income_p95", "income_lost_mean", "income_lost_p05", "income_lost_p95")


def _band(fig: go.Figure, df: pd.DataFrame, what: str, name: str, outcome: str, *, row: int | None = None) -> None:
    """The mean of ``what`` with its 5-95% band across seeds (``what``_p05/_p95/_mean columns)."""
    where = {"row": row, "col": 1} if row else {}
    mean = "mean" if what == "" else f"{what}_mean"
    low, high = ("p05", "p95") if what == "" else (f"{what}_p05", f"{what}_p95")
    x = df["success_rate"]
    fig.add_trace(
        go.Scatter(x=x, y=df[high], mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"), **where
    )
    fig.add_trace(
        go.Scatter(
            x=x, y=df[low], mode="lines", line={"width": 0}, fill="tonexty", fillcolor=_BANDS[outcome],
            name=f"{name}: 5-95% across seeds", hoverinfo="skip", showlegend=False,
        ),
        **where,
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=x, y=df[mean], mode="lines+markers", name=f"{name} (mean)", line={"color": colour(outcome)},
            hovertemplate="%{x:.0%}: R %{y:,.2f}<extra></extra>",
        ),
        **where,
    )  # fmt: skip


def _has_income(df: pd.DataFrame) -> bool:
    return not df.empty and all(c in df.columns for c in _INCOME_COLUMNS) and not df["income_mean"].isna().all()


def fan_chart(summary: pd.DataFrame | list[dict[str, Any]]) -> go.Figure:
    """What a bad day costs: spread income earned and lost (top) and notional booked (below), in ZAR,
    against the bank's success rate; means with the 5-95% band across seeds (a sweep's summary)."""
    title = "What a bad day costs: income earned and lost, and notional booked"
    df = pd.DataFrame(summary)
    if df.empty:
        return empty_figure(title, "the sweep has no scenarios", layout={})
    df = df.sort_values("success_rate")
    income = _has_income(df)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08) if income else go.Figure()
    row = 2 if income else None
    if income:
        _band(fig, df, "income", "income earned", "SUCCESS", row=1)
        _band(fig, df, "income_lost", "income lost (failed trades)", "FAILED", row=1)
        top = float(df[["income_p95", "income_lost_p95", "income_mean", "income_lost_mean"]].max().max())
        fig.update_yaxes(value_axis(top, "spread income (ZAR)", intervals=4, money=True), row=1, col=1)
    _band(fig, df, "", "notional booked", "SUCCESS", row=row)
    notional_axis = value_axis(float(df[["p95", "mean"]].max().max()), "notional booked (ZAR)", money=True)
    if income:
        fig.update_yaxes(notional_axis, row=2, col=1)
        fig.update_xaxes(_RATE_AXIS, row=2, col=1)
        fig.update_xaxes(tickformat=".0%", row=1, col=1)
    else:
        fig.update_layout(xaxis=_RATE_AXIS, yaxis=notional_axis)
    fig.update_layout(
        title=title,
        legend={"orientation": "h", "y": -0.15, "traceorder": "normal"},
        margin={"t": 60},
        height=560 if income else 400,
    )
    worst, best = df.iloc[0], df.iloc[-1]
    seeds = int(worst.get("scenarios", 0) or 0)
    across = f" (mean of {seeds} seeds; the bands hold 90% of them)" if seeds > 1 else ""
    if income:
        text = (
            f"At a {worst['success_rate']:.0%} success rate the desk earns {zar(worst['income_mean'])} and loses "
            f"{zar(worst['income_lost_mean'])} of spread income on failed trades"
            + (f", against {zar(best['income_mean'])} earned at {best['success_rate']:.0%}" if len(df) > 1 else "")
            + f"{across}."
        )
    else:
        text = (
            f"Notional booked falls from {zar(best['mean'])} at {best['success_rate']:.0%} to {zar(worst['mean'])} "
            f"at {worst['success_rate']:.0%}{across}; this sweep was made before income was recorded."
        )
    return with_caption(fig, text)


def failure_reasons_chart(scenarios: pd.DataFrame | list[dict[str, Any]]) -> go.Figure:
    """Failed trades by reason (mean across seeds), stacked, against the success rate."""
    title = "Failure reasons by bank success rate (mean across seeds)"
    df = pd.DataFrame(scenarios)
    if df.empty:
        return empty_figure(title, "the sweep has no scenarios", layout={})
    reasons = pd.json_normalize(df["failure_reasons"].tolist()).fillna(0)
    reasons["success_rate"] = df["success_rate"].to_numpy()
    mean = reasons.groupby("success_rate").mean().sort_index()
    order = [c.value for c in FailureCode if c.value in mean.columns]
    order += sorted(c for c in mean.columns if c not in order)
    fig = go.Figure([go.Bar(x=mean.index, y=mean[c], name=c, marker_color=reason_colour(c)) for c in order])
    stacks = mean[order].sum(axis=1) if order else pd.Series([0.0])
    fig.update_layout(
        barmode="stack",
        title=title,
        xaxis=_RATE_AXIS,
        yaxis=value_axis(float(stacks.max()), "failed trades"),
        legend={"orientation": "h", "y": -0.25, "traceorder": "normal"},
    )
    if not order or float(stacks.max()) <= 0:
        return with_caption(fig, "No trade failed in any scenario.")
    worst = mean.index[0]
    lead = mean.loc[worst, order].astype(float).idxmax()
    return with_caption(
        fig,
        f"Why trades fail as the bank gets worse: at {worst:.0%} about {stacks.iloc[0]:,.0f} trades fail, "
        f"most of them {lead}.",
    )


def _run_labels(table: pd.DataFrame) -> list[str]:
    return [f"run {r}" for r in table["run_id"]]


def comparison_chart(table: pd.DataFrame) -> go.Figure:
    """Chosen runs side by side (whatif.compare): trades by outcome, notional booked and failed, and
    spread income, each on its own axis from zero."""
    title = "Runs compared: trades and money"
    if table.empty:
        return empty_figure(title, "no runs chosen", layout={})
    labels = _run_labels(table)
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=("Trades", "Notional (ZAR)", "Spread income (ZAR)"), horizontal_spacing=0.12
    )
    counts = {"SUCCESS": "succeeded", "FAILED": "failed", "CANCELLED": "cancelled"}
    for status, column in counts.items():
        if column in table and (status != "CANCELLED" or table[column].any()):
            fig.add_trace(
                go.Bar(
                    x=labels, y=table[column], name=label(status), marker_color=colour(status), legendgroup=status,
                    hovertemplate="%{x}: %{y:,} " + column + "<extra></extra>",
                ),
                row=1, col=1,
            )  # fmt: skip
    money = [("SUCCESS", table["notional_zar_succeeded"])]
    money += [("FAILED", table["notional_zar_failed"])] if "notional_zar_failed" in table else []
    for status, values in money:
        fig.add_trace(
            go.Bar(
                x=labels, y=values, name=f"{label(status)} (ZAR)", marker_color=colour(status), legendgroup=status,
                showlegend=False, hovertemplate="%{x}: R %{y:,.2f} " + label(status).lower() + "<extra></extra>",
            ),
            row=1, col=2,
        )  # fmt: skip
    income = pd.to_numeric(table.get("spread_income_zar", pd.Series(dtype=float)), errors="coerce").fillna(0.0)
    fig.add_trace(
        go.Bar(
            x=labels, y=income, name="spread income", marker_color=colour("SUCCESS"), legendgroup="SUCCESS",
            showlegend=False, hovertemplate="%{x}: R %{y:,.2f} spread income<extra></extra>",
        ),
        row=1, col=3,
    )  # fmt: skip
    stacked = table[[c for c in counts.values() if c in table]].sum(axis=1)
    fig.update_yaxes(value_axis(float(stacked.max()), "trades"), row=1, col=1)
    money_top = max(float(v.max()) for _, v in money)
    fig.update_yaxes(value_axis(money_top, money=True), row=1, col=2)
    fig.update_yaxes(value_axis(float(income.max()), money=True), row=1, col=3)
    fig.update_layout(
        barmode="relative",
        title=title,
        legend={"orientation": "h", "y": -0.2, "traceorder": "normal"},
        margin={"t": 80},
    )
    # The money panels put booked and failed side by side, the trades panel stacks: barmode per axis
    # is not a thing in plotly, so the money bars are offset by group.
    for trace in fig.data:
        if trace.xaxis in ("x2", "x3"):
            trace.offsetgroup = trace.legendgroup
    booked = table["notional_zar_succeeded"].to_numpy(dtype=float)
    earned = income.to_numpy(dtype=float)
    hi, lo = int(booked.argmax()), int(booked.argmin())
    text = (
        f"{labels[hi].capitalize()} booked the most, {zar(booked[hi])}; {labels[lo]} the least, {zar(booked[lo])} "
        f"({zar(booked[hi] - booked[lo])} less, {zar(earned[hi] - earned[lo])} difference in spread income)."
    )
    return with_caption(fig, text)


def income_chart(summary: pd.DataFrame | list[dict[str, Any]]) -> go.Figure:
    """The desk's spread income earned and lost (ZAR) against the success rate: means with the 5-95% band.

    Sweeps made before income was recorded have no income figures: the chart says so.
    """
    title = "Spread income earned and lost vs bank success rate"
    df = pd.DataFrame(summary)
    if not _has_income(df):
        return empty_figure(title, "income was not recorded for this sweep", layout={})
    df = df.sort_values("success_rate")
    fig = go.Figure()
    _band(fig, df, "income", "income earned", "SUCCESS")
    _band(fig, df, "income_lost", "income lost (failed trades)", "FAILED")
    top = float(df[["income_p95", "income_lost_p95", "income_mean", "income_lost_mean"]].max().max())
    fig.update_layout(
        title=title,
        xaxis=_RATE_AXIS,
        yaxis=value_axis(top, "spread income (ZAR)", money=True),
        legend={"orientation": "h", "y": -0.2},
        margin={"t": 60},
    )
    worst = df.iloc[0]
    return with_caption(
        fig,
        f"Spread income the desk keeps and loses: at {worst['success_rate']:.0%} it earns {zar(worst['income_mean'])} "
        f"and loses {zar(worst['income_lost_mean'])}.",
    )
