"""What every fxbatch figure shares: outcome colours and order, round value axes, and captions.

Defined once so that a run's charts and the what-if charts agree: success is always the same
green and first, failed the same red and second, and a bar axis always starts at zero with
round ticks. Every figure carries a one-line caption saying what to read from it
(``caption_of(fig)``); the app shows it under the chart, the notebook can print it.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from fxbatch.models import FailureCode
from fxbatch.money import zar_compact

# Final outcomes first (in the order the analyst reads them), then the trades still in flight.
OUTCOMES: tuple[str, ...] = ("SUCCESS", "FAILED", "CANCELLED", "QUOTED", "EXECUTING", "PENDING")
OUTCOME_LABELS: dict[str, str] = {
    "SUCCESS": "Succeeded",
    "FAILED": "Failed",
    "CANCELLED": "Cancelled",
    "QUOTED": "Quoted (in flight)",
    "EXECUTING": "Executing (in flight)",
    "PENDING": "Not started",
}
OUTCOME_COLOURS: dict[str, str] = {
    "SUCCESS": "#2ca02c",  # green
    "FAILED": "#d62728",  # red
    "CANCELLED": "#7f7f7f",  # grey
    "QUOTED": "#c6dbef",  # pale neutrals: not an outcome yet
    "EXECUTING": "#dadaeb",
    "PENDING": "#d9d9d9",
}
NEUTRAL = "#1f77b4"  # charts of time, not of outcomes
OTHERS_COLOUR = "#bdbdbd"
# One colour per failure reason (in FailureCode order), the same in every chart: d3's palette
# without its green and grey, which mean succeeded and cancelled here.
REASON_PALETTE = (
    "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#1f77b4",
    "#ff9896", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#aec7e8",
)  # fmt: skip
LAYOUT: dict[str, Any] = {"margin": {"t": 60, "b": 40, "l": 50, "r": 40}, "height": 360}


def outcome_order(statuses: Any) -> list[str]:
    """The statuses present, in the one order every chart uses (unknown ones last, as given)."""
    present = list(dict.fromkeys(str(s) for s in statuses))
    return [s for s in OUTCOMES if s in present] + [s for s in present if s not in OUTCOMES]


def label(status: str) -> str:
    return OUTCOME_LABELS.get(status, status.replace("_", " ").capitalize())


def colour(status: str) -> str:
    return OUTCOME_COLOURS.get(status, OTHERS_COLOUR)


_REASONS = [c.value for c in FailureCode]


def reason_colour(code: str) -> str:
    """The colour of one failure reason, the same in every chart that splits failures by reason."""
    index = _REASONS.index(code) if code in _REASONS else len(_REASONS) + sum(map(ord, code))
    return REASON_PALETTE[index % len(REASON_PALETTE)]


# -- round value axes -----------------------------------------------------------------------------


def round_step(span: float, intervals: int = 5) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that cuts ``span`` into at most ``intervals``."""
    if not math.isfinite(span) or span <= 0:
        return 1.0
    raw = span / intervals
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * power >= raw * (1 - 1e-9):
            return m * power
    return 10.0 * power  # pragma: no cover - 10 always fits


def value_axis(top: float, title: str = "", *, intervals: int = 5, money: bool = False) -> dict[str, Any]:
    """A value axis from zero to a round top, ticking at round values (0, step, 2 step, ...).

    With ``intervals=4`` the ticks fall at the quarters of the range, so a 0-100% secondary axis
    beside it shares its grid lines.
    """
    top = float(top) if math.isfinite(float(top)) and top > 0 else 1.0
    step = round_step(top, intervals)
    end = step * intervals if intervals == 4 else step * math.ceil(top / step - 1e-9)
    axis: dict[str, Any] = {"range": [0, end], "tick0": 0, "dtick": step, "rangemode": "tozero"}
    if title:
        axis["title"] = title
    if money:  # 'R 2.5m' reads faster than 'R 2,500,000' and keeps narrow panels apart
        ticks = [i * step for i in range(round(end / step) + 1)]
        axis.update(tickmode="array", tickvals=ticks, ticktext=[money_tick(v) for v in ticks])
    else:
        axis["tickformat"] = ",~r" if step < 1 else ",.0f"
    return axis


def money_tick(value: float) -> str:
    """A round ZAR amount as a tick label: 'R 0', 'R 750', 'R 2.5k', 'R 40m', 'R 1.25bn'."""
    for limit, suffix in ((1e9, "bn"), (1e6, "m"), (1e3, "k")):
        if abs(value) >= limit:
            return f"R {value / limit:,.3g}{suffix}"
    return f"R {value:,.3g}"


SHARE_AXIS: dict[str, Any] = {"range": [0, 1], "tick0": 0, "dtick": 0.25, "tickformat": ".0%"}


# -- captions ---------------------------------------------------------------------------------------


def with_caption(fig: go.Figure, caption: str) -> go.Figure:
    """Attach the one-line reading of ``fig`` (kept in layout.meta, so it travels with the figure)."""
    meta = dict(fig.layout.meta) if isinstance(fig.layout.meta, dict) else {}
    meta["caption"] = caption
    fig.update_layout(meta=meta)
    return fig


def caption_of(fig: go.Figure) -> str:
    """What to read from ``fig``: the caption its chart function attached ("" for other figures)."""
    meta = fig.layout.meta
    return str(meta.get("caption", "")) if isinstance(meta, dict) else ""


def empty_figure(
    title: str, why: str, layout: dict[str, object] | None = None, caption: str | None = None
) -> go.Figure:
    """A chart with nothing to draw: its title and why (``layout``: the page's sizing, default LAYOUT)."""
    fig = go.Figure()
    fig.add_annotation(text=why, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(
        title=title, xaxis={"visible": False}, yaxis={"visible": False}, **(LAYOUT if layout is None else layout)
    )
    return with_caption(fig, caption or f"Nothing to show: {why}.")


def zar(value: float) -> str:
    """A ZAR amount at a glance: 'R 812.40', 'R 72.2k', 'R 260.9m'."""
    return zar_compact(float(value))
