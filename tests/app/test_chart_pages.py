"""The run page's charts as the analyst sees them: a caption under each, top clients by money (and by
failed money, one click away), one outcome order, axes from zero (AppTest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from fxbatch import charts
from tests.app.test_income_pages import figures
from tests.app.test_run_pages import CHARTS, app_workbench, finished_run, ok

OpenPage = Callable[[str], AppTest]


def failed_ranked(df: pd.DataFrame) -> pd.DataFrame:
    """The named rows of notional_by(..., failed=True) that carry failed notional, in rank order."""
    return df[(df["key"] != "(others)") & (df["status"] == "FAILED")].sort_values("rank")


def test_every_run_chart_has_its_caption_and_clients_rank_by_notional(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    run_id = finished_run(success_rate=0.7)
    wb = app_workbench()
    at = ok(open_page("pages/run.py"))
    shown = figures(at)
    assert len(shown) == CHARTS
    captions = [c.value for c in at.caption]
    for title, spec in shown.items():
        caption = spec["layout"]["meta"]["caption"]
        assert caption and caption in captions, title  # drawn under its chart

    expected = wb.notional_by(run_id, "client")
    ranked = list(dict.fromkeys(expected[expected["key"] != "(others)"].sort_values("rank")["key"]))
    clients = shown[f"Top {len(ranked)} clients by notional (ZAR)"]
    assert clients["layout"]["yaxis"]["categoryarray"] == ranked  # by money, largest on top
    assert [t["name"] for t in clients["data"]] == ["Succeeded", "Failed"]
    assert clients["layout"]["xaxis"]["range"][0] == 0

    outcome = shown["Outcome of every trade"]["layout"]["xaxis"]["categoryarray"]
    notional = shown["Notional by outcome (ZAR)"]["layout"]["xaxis"]["categoryarray"]
    assert outcome == notional == ["Succeeded", "Failed"]
    for title, spec in shown.items():
        for name, axis in spec["layout"].items():
            if name.startswith(("xaxis", "yaxis")) and "range" in axis:  # every set range starts at zero
                assert axis["range"][0] == 0, (title, name)

    throughput = shown["Throughput"]
    summary = wb.throughput(run_id)
    assert throughput["data"][0]["width"] == summary["width_s"].iloc[0]


def test_one_click_shows_the_pairs_and_clients_whose_failures_cost_the_most(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    run_id = finished_run(success_rate=0.6)
    at = ok(open_page("pages/run.py"))
    assert at.radio(key="clients_view").value == "by notional"
    ok(at.radio(key="clients_view").set_value("by failed notional").run())
    wb = app_workbench()
    clients, pairs = (failed_ranked(wb.notional_by(run_id, by, failed=True)) for by in ("client", "pair"))
    shown = figures(at)
    assert [t for t in shown if "by failed notional" in t] == [
        f"Top {len(pairs)} currency pairs by failed notional (ZAR)",
        f"Top {len(clients)} clients by failed notional (ZAR)",
    ]
    spec = shown[f"Top {len(clients)} clients by failed notional (ZAR)"]
    [bars] = spec["data"]
    assert bars["y"] == clients["key"].tolist() and bars["marker"]["color"] == charts.STATUS_COLOURS["FAILED"]
    assert [c.value for c in at.caption if c.value.startswith("Whose failures cost the most")]
