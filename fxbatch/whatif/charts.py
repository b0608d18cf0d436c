"""What-if figures: DataFrames in, plotly figures out (the app and the notebook show the same)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from fxbatch.charts import empty_figure
from fxbatch.models import FailureCode


def fan_chart(summary: pd.DataFrame | list[dict[str, Any]]) -> go.Figure:
    """Executed notional (ZAR) and success share against the success rate, with the 5-95% band."""
    df = pd.DataFrame(summary).sort_values("success_rate")
    fig = go.Figure()
    x = df["success_rate"]
    fig.add_trace(go.Scatter(x=x, y=df["p95"], mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"))
    fig.add_trace(
        go.Scatter(
            x=x, y=df["p05"], mode="lines", line={"width": 0}, fill="tonexty", fillcolor="rgba(31,119,180,0.2)",
            name="5-95% across seeds",
        )
    )  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=df["mean"], mode="lines+markers", name="executed notional (mean)"))
    fig.add_trace(
        go.Scatter(
            x=x, y=df["success_share_mean"], mode="lines+markers", name="success share (mean)", yaxis="y2",
            line={"dash": "dot"},
        )
    )  # fmt: skip
    fig.update_layout(
        title="What a bad day costs: executed notional vs bank success rate",
        xaxis={"title": "bank success rate", "tickformat": ".0%"},
        yaxis={"title": "executed notional (ZAR)", "tickformat": ",.0f"},
        yaxis2={"title": "success share", "overlaying": "y", "side": "right", "tickformat": ".0%", "range": [0, 1]},
        legend={"orientation": "h", "y": -0.2},
        margin={"t": 60},
    )
    return fig


def failure_reasons_chart(scenarios: pd.DataFrame | list[dict[str, Any]]) -> go.Figure:
    """Failed trades by reason (mean across seeds), stacked, against the success rate."""
    df = pd.DataFrame(scenarios)
    reasons = pd.json_normalize(df["failure_reasons"].tolist()).fillna(0) if len(df) else pd.DataFrame()
    reasons["success_rate"] = df["success_rate"].to_numpy()
    mean = reasons.groupby("success_rate").mean().sort_index()
    order = [c.value for c in FailureCode if c.value in mean.columns]
    fig = go.Figure([go.Bar(x=mean.index, y=mean[c], name=c) for c in order])
    fig.update_layout(
        barmode="stack",
        title="Failure reasons by bank success rate (mean across seeds)",
        xaxis={"title": "bank success rate", "tickformat": ".0%"},
        yaxis={"title": "failed trades"},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def comparison_chart(table: pd.DataFrame) -> go.Figure:
    """Chosen runs side by side: succeeded and failed trades, and executed notional."""
    labels = [f"run {r}" for r in table["run_id"]]
    fig = go.Figure(
        [
            go.Bar(x=labels, y=table["succeeded"], name="succeeded"),
            go.Bar(x=labels, y=table["failed"], name="failed"),
        ]
    )
    fig.add_trace(
        go.Scatter(x=labels, y=table["notional_zar_succeeded"], name="executed notional (ZAR)", yaxis="y2",
                   mode="markers+lines")
    )  # fmt: skip
    fig.update_layout(
        barmode="stack",
        title="Runs compared",
        yaxis={"title": "trades"},
        yaxis2={"title": "ZAR", "overlaying": "y", "side": "right", "tickformat": ",.0f"},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


_INCOME_COLUMNS = ("income_mean", "income_p05", "income_p95", "income_lost_mean", "income_lost_p05", "income_lost_p95")


def income_chart(summary: pd.DataFrame | list[dict[str, Any]]) -> go.Figure:
    """The desk's spread income earned and lost (ZAR) against the success rate: means with the 5-95% band.

    Sweeps made before income was recorded have no income figures: the chart says so.
    """
    title = "Spread income earned and lost vs bank success rate"
    df = pd.DataFrame(summary)
    if df.empty or any(c not in df.columns for c in _INCOME_COLUMNS) or df["income_mean"].isna().all():
        return empty_figure(title, "income was not recorded for this sweep", layout={})
    df = df.sort_values("success_rate")
    x = df["success_rate"]
    fig = go.Figure()
    for what, colour, fill in (
        ("income", "#2ca02c", "rgba(44,160,44,0.2)"),
        ("income_lost", "#d62728", "rgba(214,39,40,0.15)"),
    ):
        label = "income earned" if what == "income" else "income lost (failed trades)"
        fig.add_trace(
            go.Scatter(x=x, y=df[f"{what}_p95"], mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip")
        )
        fig.add_trace(
            go.Scatter(
                x=x, y=df[f"{what}_p05"], mode="lines", line={"width": 0}, fill="tonexty", fillcolor=fill,
                name=f"{label}: 5-95% across seeds", hoverinfo="skip",
            )
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=x, y=df[f"{what}_mean"], mode="lines+markers", name=f"{label} (mean)", line={"color": colour},
                hovertemplate="%{x:.0%}: R %{y:,.2f}<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        title=title,
        xaxis={"title": "bank success rate", "tickformat": ".0%"},
        yaxis={"title": "spread income (ZAR)", "tickformat": ",.0f", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.2},
        margin={"t": 60},
    )
    return fig
