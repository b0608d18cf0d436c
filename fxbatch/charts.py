"""Run review figures: the DataFrames of ``fxbatch.analytics`` in, plotly figures out (pure).

Every figure uses the shared outcome colours and order of ``fxbatch.chartstyle``, value axes
from zero with round ticks, and carries a one-line caption (``caption_of(fig)``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from fxbatch.analytics import OTHER
from fxbatch.chartstyle import (
    LAYOUT,
    NEUTRAL,
    OTHERS_COLOUR,
    OUTCOME_COLOURS,
    SHARE_AXIS,
    caption_of,
    colour,
    empty_figure,
    label,
    outcome_order,
    value_axis,
    with_caption,
    zar,
)

__all__ = [
    "STATUS_COLOURS",
    "caption_of",
    "empty_figure",
    "income_chart",
    "latency_chart",
    "notional_by_chart",
    "notional_chart",
    "outcome_chart",
    "outcomes_by_chart",
    "pareto_chart",
    "throughput_chart",
]

STATUS_COLOURS = OUTCOME_COLOURS  # the name this module used before chartstyle
_VERB = {"SUCCESS": "succeeded", "FAILED": "failed", "CANCELLED": "cancelled", "PENDING": "not started"}
_MONEY_VERB = {"SUCCESS": "booked", "FAILED": "failed", "CANCELLED": "cancelled", "PENDING": "not started"}


def _categories(labels: list[str]) -> dict[str, object]:
    """A category axis in exactly this order (CIFs look like numbers; plotly must not sort them)."""
    return {"type": "category", "categoryorder": "array", "categoryarray": labels}


def _status_bars(
    title: str, statuses: pd.Index, values: pd.Series, text: list[str], axis: dict[str, Any], **bar: Any
) -> go.Figure:
    """One bar per status, in the shared outcome order and colours (the outcome and notional charts)."""
    names = [label(s) for s in statuses]
    fig = go.Figure(
        go.Bar(x=names, y=values, marker_color=[colour(s) for s in statuses], text=text, textposition="auto", **bar)
    )
    fig.update_layout(title=title, xaxis=_categories(names), yaxis=axis, showlegend=False, **LAYOUT)
    return fig


def share_text(share: float) -> str:
    """A share as a whole percentage that never says 0% of something or 100% of less than all:
    0.0004 -> '<1%', 0.9996 -> '>99%'."""
    shown = f"{share:.0%}"
    if share > 0 and shown == "0%":
        return "<1%"
    if share < 1 and shown == "100%":
        return ">99%"
    return shown


def outcome_chart(counts: pd.DataFrame) -> go.Figure:
    """Trades per status (analytics.outcome_counts), in the shared outcome order and colours."""
    title = "Outcome of every trade"
    if counts.empty:
        return empty_figure(title, "no trades")
    df = counts.set_index("status").reindex(outcome_order(counts["status"]))
    text = [f"{n:,} ({share_text(s)})" for n, s in zip(df["trades"], df["share"], strict=True)]
    fig = _status_bars(title, df.index, df["trades"], text, value_axis(df["trades"].max(), "trades"),
                       hovertemplate="%{x}: %{y:,} trades<extra></extra>")  # fmt: skip
    total = int(df["trades"].sum())
    parts = [
        f"{int(n):,} {_VERB.get(str(s), 'in flight')} ({share_text(n / total)})"
        for s, n in df["trades"].items()
        if total
    ]
    return with_caption(fig, f"How the {total:,} trades ended: " + ", ".join(parts) + ".")


def notional_chart(df: pd.DataFrame) -> go.Figure:
    """Notional in ZAR per final status (analytics.notional_by_outcome), ordered as the outcome chart."""
    title = "Notional by outcome (ZAR)"
    if df.empty:
        return empty_figure(title, "no finished trades yet")
    df = df.set_index("status").reindex(outcome_order(df["status"]))
    amounts = df["amount_zar"].astype(float)
    fig = _status_bars(title, df.index, amounts, [zar(v) for v in amounts], value_axis(amounts.max(), "ZAR", money=True),
                       customdata=df["trades"], hovertemplate="%{x}: R %{y:,.2f} on %{customdata:,} trades<extra></extra>")  # fmt: skip
    total = float(amounts.sum())
    parts = [f"{zar(v)} {_MONEY_VERB.get(str(s), 'in flight')}" for s, v in amounts.items()]
    failed = float(amounts.get("FAILED", 0.0))
    share = f" ({share_text(failed / total)} of {zar(total)})" if total and failed else ""
    return with_caption(fig, "The money behind each outcome: " + ", ".join(parts) + share + ".")


def pareto_chart(pareto: pd.DataFrame) -> go.Figure:
    """Failed trades by reason, most frequent first, with the cumulative share (analytics.failure_pareto)."""
    title = "Why trades failed (Pareto)"
    if pareto.empty:
        return empty_figure(title, "no failed trades")
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=pareto["failure_code"], y=pareto["trades"], name="failed trades", marker_color=colour("FAILED"),
            hovertemplate="%{x}: %{y:,} failed trades<extra></extra>",
        )
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=pareto["failure_code"],
            y=pareto["cumulative_share"],
            name="cumulative share",
            yaxis="y2",
            mode="lines+markers",
            line={"color": "#333"},
            cliponaxis=False,
            hovertemplate="%{x}: %{y:.0%} of failures so far<extra></extra>",
        )
    )
    # Four intervals on both axes: the trades axis ticks on the same grid lines as 0/25/50/75/100%.
    fig.update_layout(
        title=title,
        xaxis=_categories([str(c) for c in pareto["failure_code"]]),
        yaxis=value_axis(pareto["trades"].max(), "failed trades", intervals=4),
        yaxis2={**SHARE_AXIS, "overlaying": "y", "side": "right", "showgrid": False},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
        **LAYOUT,
    )
    total = int(pareto["trades"].sum())
    first = pareto.iloc[0]
    most = min(int((pareto["cumulative_share"] < 0.8 - 1e-9).sum()) + 1, len(pareto))
    then = f"the first {most} reasons make at least 80%." if most > 1 else "it alone makes at least 80%."
    return with_caption(
        fig,
        f"Which reasons to fix first: {first['failure_code']} is {share_text(first['share'])} of the {total:,} failed trades; "
        + then,
    )


def outcomes_by_chart(df: pd.DataFrame, what: str) -> go.Figure:
    """Stacked trades per status for each currency pair or client (analytics.outcomes_by), keys as ranked."""
    title = f"Outcomes by {what}"
    if df.empty:
        return empty_figure(title, "no trades")
    keys = [k for k in dict.fromkeys(df["key"].astype(str)) if k != OTHER]
    keys += [OTHER] if (df["key"] == OTHER).any() else []
    fig = go.Figure()
    for status in outcome_order(df["status"]):
        part = df[df["status"] == status].groupby("key")["trades"].sum().reindex(keys).fillna(0)
        fig.add_trace(go.Bar(x=keys, y=part, name=label(status), marker_color=colour(status)))
    stacks = df.groupby("key")["trades"].sum()
    fig.update_layout(
        title=title, barmode="stack", xaxis=_categories(keys), yaxis=value_axis(stacks.max(), "trades"),
        legend={"traceorder": "normal"}, **LAYOUT,
    )  # fmt: skip
    first = stacks.drop(OTHER, errors="ignore").sort_values(ascending=False)
    lead = f"{first.index[0]} has the most ({int(first.iloc[0]):,})" if len(first) else "every trade is in (others)"
    return with_caption(fig, f"Trades per {what} and how they ended: {lead}; colours are outcomes.")


def notional_by_chart(df: pd.DataFrame, what: str, *, failed: bool = False) -> go.Figure:
    """The top currency pairs or clients by notional in ZAR, stacked by outcome (analytics.notional_by).

    Horizontal bars, the largest on top; ``what`` is the singular ("client", "currency pair").
    With ``failed`` (from ``notional_by(..., failed=True)``), only the failed notional is drawn,
    so the bars that lead are the failures that cost most. The "(others)" row is not drawn (it
    sums many keys and would dwarf the rest); the caption says what it holds.
    """
    plural = f"{what}s"
    view = "failed notional" if failed else "notional"
    named = df[df["key"] != OTHER] if not df.empty else df
    if failed and not named.empty:
        named = named[named["status"] == "FAILED"]
    if named.empty or float(named["amount_zar"].sum()) <= 0:
        why = "no failed trades" if failed else "no finished trades yet"
        return empty_figure(f"Top {plural} by {view} (ZAR)", why)
    keys = list(dict.fromkeys(named.sort_values("rank", kind="stable")["key"].astype(str)))
    title = f"Top {len(keys)} {plural} by {view} (ZAR)"
    fig = go.Figure()
    for status in outcome_order(named["status"]):
        part = named[named["status"] == status].groupby("key")[["amount_zar", "trades"]].sum().reindex(keys)
        fig.add_trace(
            go.Bar(
                x=part["amount_zar"].fillna(0.0), y=keys, orientation="h", name=label(status),
                marker_color=colour(status), customdata=part["trades"].fillna(0).astype(int),
                hovertemplate=f"%{{y}}: R %{{x:,.2f}} {label(status).lower()} on %{{customdata:,}} trades<extra></extra>",
            )
        )  # fmt: skip
    stacks = named.groupby("key")["amount_zar"].sum()
    fig.update_layout(
        title=title,
        barmode="stack",
        yaxis={**_categories(keys), "autorange": "reversed"},
        xaxis=value_axis(stacks.max(), "ZAR", money=True),
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom", "traceorder": "normal"},
        **LAYOUT,
    )
    everything = df[df["status"] == "FAILED"] if failed else df
    total = float(everything["amount_zar"].sum())
    shown = float(stacks.sum())
    rest = df[df["key"] == OTHER]
    others = (
        f"; {int(rest['keys'].max()):,} other {plural} hold the remaining {zar(total - shown)} (not drawn)"
        if len(rest) and total - shown > 0.005
        else ""
    )
    lead = "Whose failures cost the most" if failed else f"Which {plural} carry the money"
    return with_caption(
        fig,
        f"{lead}: the top {len(keys)} hold {share_text(shown / total)} of the run's {zar(total)} {view}{others}.",
    )


def latency_chart(hist: pd.DataFrame) -> go.Figure:
    """How long trades took from executing to final (analytics.latency_histogram)."""
    title = "Time per trade (executing to final)"
    if hist.empty:
        return empty_figure(title, "no finished trades yet")
    fig = go.Figure(
        go.Bar(
            x=(hist["from_ms"] + hist["to_ms"]) / 2,
            y=hist["trades"],
            width=hist["to_ms"] - hist["from_ms"],
            customdata=hist[["from_ms", "to_ms"]],
            hovertemplate="%{customdata[0]:.0f}-%{customdata[1]:.0f} ms: %{y} trades<extra></extra>",
            marker_color=NEUTRAL,
        )
    )
    fig.update_layout(
        title=title,
        xaxis={"title": "milliseconds", "rangemode": "tozero"},
        yaxis=value_axis(hist["trades"].max(), "trades"),
        **LAYOUT,
    )
    cumulative = hist["trades"].cumsum()
    half = hist["to_ms"][cumulative >= hist["trades"].sum() / 2].iloc[0]
    return with_caption(
        fig,
        f"How long one trade took at the bank: half were final within {half:,.0f} ms, "
        f"the slowest within {hist['to_ms'].iloc[-1]:,.0f} ms; a long tail means retries or a slow bank.",
    )


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:,.4g} ms"
    if seconds < 120:
        return f"{seconds:,.4g} s"
    return f"{seconds / 60:,.4g} min"


def throughput_chart(df: pd.DataFrame) -> go.Figure:
    """Trades finished per second over the run (analytics.throughput), in bins sized to the run's length."""
    title = "Throughput"
    if df.empty:
        return empty_figure(title, "no finished trades yet")
    if "width_s" in df:
        width = float(df["width_s"].iloc[0])
    else:  # a frame from before analytics chose the width: the smallest step between bins
        width = float(df["second"].diff().min()) if len(df) > 1 else 1.0
    end = float(df["second"].max()) + width
    fig = go.Figure(
        go.Bar(
            x=df["second"] + width / 2,
            y=df["per_s"],
            width=width,
            customdata=df["trades"],
            hovertemplate="%{x:.3~f} s: %{y:,.0f} trades/s (%{customdata:,} trades)<extra></extra>",
            marker_color=NEUTRAL,
        )
    )
    fig.update_layout(
        title=title,
        xaxis={"title": "seconds since the first trade finished", "range": [0, end], "rangemode": "tozero"},
        yaxis=value_axis(df["per_s"].max(), "trades / s"),
        bargap=0,
        **LAYOUT,
    )
    average = float(df["trades"].sum()) / end
    return with_caption(
        fig,
        f"Trades finished per second over the run's {_duration(end)}, in {_duration(width)} bins: "
        f"{average:,.0f}/s on average, {df['per_s'].max():,.0f}/s at the peak; dips and gaps are where the bank slowed.",
    )


def income_chart(df: pd.DataFrame, what: str) -> go.Figure:
    """The desk's spread income in ZAR per currency pair or client (analytics.income_by), largest first.

    Horizontal bars keep client CIFs and pairs readable; the ZAR axis starts at zero so bar lengths
    compare. The "(others)" row stays last whatever its size: it sums many keys.
    """
    title = f"Spread income by {what}"
    if df.empty:
        return empty_figure(title, "no spread income recorded for this run")
    named = df[df["key"] != OTHER].sort_values("spread_income_zar", ascending=False, kind="stable")
    ordered = pd.concat([named, df[df["key"] == OTHER]])
    income = ordered["spread_income_zar"].astype(float)
    keys = ordered["key"].astype(str).tolist()
    fig = go.Figure(
        go.Bar(
            x=income,
            y=keys,
            orientation="h",
            marker_color=[OTHERS_COLOUR if k == OTHER else colour("SUCCESS") for k in keys],
            text=[f"R {v:,.0f}" for v in income],
            textposition="auto",
            customdata=ordered["trades"],
            hovertemplate="%{y}: R %{x:,.2f} on %{customdata:,} trades<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        # Categories as given (CIFs look like numbers); reversed, so the first (largest) is on top.
        yaxis={**_categories(keys), "autorange": "reversed"},
        xaxis=value_axis(float(income.max()) if len(income) else 0.0, "ZAR", money=True),
        **LAYOUT,
    )
    total = float(income.sum())
    if named.empty or total <= 0:
        return with_caption(fig, f"Spread income by {what}: {zar(total)} in all.")
    top = named.iloc[0]
    return with_caption(
        fig,
        f"Where the desk's spread income came from: {top['key']} earned the most, {zar(top['spread_income_zar'])} "
        f"of {zar(total)} ({share_text(float(top['spread_income_zar']) / total)}).",
    )
