"""Run review figures: the DataFrames of ``fxbatch.analytics`` in, plotly figures out (pure)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from fxbatch.analytics import OTHER

STATUS_COLOURS = {
    "SUCCESS": "#2ca02c",
    "FAILED": "#d62728",
    "CANCELLED": "#7f7f7f",
    "PENDING": "#c7c7c7",
    "EXECUTING": "#1f77b4",
    "QUOTED": "#17becf",
}
_LAYOUT: dict[str, object] = {"margin": {"t": 60, "b": 40, "l": 50, "r": 40}, "height": 360}


def empty_figure(title: str, why: str, layout: dict[str, object] | None = None) -> go.Figure:
    """A chart with nothing to draw: its title and why (``layout``: the page's sizing, default this module's)."""
    fig = go.Figure()
    fig.add_annotation(text=why, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(
        title=title, xaxis={"visible": False}, yaxis={"visible": False}, **(_LAYOUT if layout is None else layout)
    )
    return fig


def outcome_chart(counts: pd.DataFrame) -> go.Figure:
    """Trades per status (analytics.outcome_counts)."""
    title = "Outcome of every trade"
    if counts.empty:
        return empty_figure(title, "no trades")
    fig = go.Figure(
        go.Bar(
            x=counts["status"],
            y=counts["trades"],
            marker_color=[STATUS_COLOURS.get(s, "#999") for s in counts["status"]],
            text=[f"{n:,} ({s:.0%})" for n, s in zip(counts["trades"], counts["share"], strict=True)],
            textposition="auto",
        )
    )
    fig.update_layout(title=title, yaxis={"title": "trades"}, **_LAYOUT)
    return fig


def pareto_chart(pareto: pd.DataFrame) -> go.Figure:
    """Failed trades by reason, most frequent first, with the cumulative share (analytics.failure_pareto)."""
    title = "Why trades failed (Pareto)"
    if pareto.empty:
        return empty_figure(title, "no failed trades")
    fig = go.Figure()
    fig.add_trace(go.Bar(x=pareto["failure_code"], y=pareto["trades"], name="failed trades", marker_color="#d62728"))
    fig.add_trace(
        go.Scatter(
            x=pareto["failure_code"],
            y=pareto["cumulative_share"],
            name="cumulative share",
            yaxis="y2",
            mode="lines+markers",
            line={"color": "#333"},
        )
    )
    fig.update_layout(
        title=title,
        yaxis={"title": "failed trades"},
        yaxis2={"overlaying": "y", "side": "right", "tickformat": ".0%", "range": [0, 1.05]},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.12},
        **_LAYOUT,
    )
    return fig


def outcomes_by_chart(df: pd.DataFrame, what: str) -> go.Figure:
    """Stacked trades per status for each currency pair or client (analytics.outcomes_by)."""
    title = f"Outcomes by {what}"
    if df.empty:
        return empty_figure(title, "no trades")
    keys = list(dict.fromkeys(df["key"]))
    fig = go.Figure()
    for status in [s for s in STATUS_COLOURS if s in set(df["status"])]:
        part = df[df["status"] == status].set_index("key").reindex(keys)
        fig.add_trace(go.Bar(x=keys, y=part["trades"].fillna(0), name=status, marker_color=STATUS_COLOURS[status]))
    fig.update_layout(title=title, barmode="stack", xaxis={"type": "category"}, yaxis={"title": "trades"}, **_LAYOUT)
    return fig


def notional_chart(df: pd.DataFrame) -> go.Figure:
    """Notional in ZAR per final status (analytics.notional_by_outcome)."""
    title = "Notional by outcome (ZAR)"
    if df.empty:
        return empty_figure(title, "no finished trades yet")
    fig = go.Figure(
        go.Bar(
            x=df["status"],
            y=df["amount_zar"],
            marker_color=[STATUS_COLOURS.get(s, "#999") for s in df["status"]],
            text=[f"R {v:,.0f}" for v in df["amount_zar"]],
            textposition="auto",
        )
    )
    fig.update_layout(title=title, yaxis={"title": "ZAR", "tickformat": ",.0f"}, **_LAYOUT)
    return fig


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
            marker_color="#1f77b4",
        )
    )
    fig.update_layout(title=title, xaxis={"title": "milliseconds"}, yaxis={"title": "trades"}, **_LAYOUT)
    return fig


def throughput_chart(df: pd.DataFrame) -> go.Figure:
    """Trades finished per second over the run (analytics.throughput)."""
    title = "Throughput"
    if df.empty:
        return empty_figure(title, "no finished trades yet")
    width = float(df["second"].diff().min()) if len(df) > 1 else 1.0
    fig = go.Figure(
        go.Bar(
            x=df["second"] + width / 2,
            y=df["per_s"],
            width=width,
            customdata=df["trades"],
            hovertemplate="%{x:.1f} s: %{y:,.0f} trades/s (%{customdata:,} trades)<extra></extra>",
            marker_color="#1f77b4",
        )
    )
    fig.update_layout(
        title=title, xaxis={"title": "seconds since the first trade finished"}, yaxis={"title": "trades / s"},
        **_LAYOUT,
    )  # fmt: skip
    return fig


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
    top = float(income.max()) if len(income) else 0.0
    fig = go.Figure(
        go.Bar(
            x=income,
            y=keys,
            orientation="h",
            marker_color=["#9e9e9e" if k == OTHER else "#2ca02c" for k in keys],
            text=[f"R {v:,.0f}" for v in income],
            textposition="auto",
            customdata=ordered["trades"],
            hovertemplate="%{y}: R %{x:,.2f} on %{customdata:,} trades<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        # Categories as given (CIFs look like numbers); reversed, so the first (largest) is on top.
        yaxis={"type": "category", "categoryorder": "array", "categoryarray": keys, "autorange": "reversed"},
        xaxis={"title": "ZAR", "tickformat": ",.0f", "range": [0, top * 1.05 if top > 0 else 1]},
        **_LAYOUT,
    )
    return fig
