"""Selection that works (issue 16): a click on any cell of a row picks it, in every table that
leads somewhere (Batches -> batch, trades -> trade detail, scenarios -> promote)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.app.test_run_pages import app_workbench, finished_run, ok, tables
from tests.conftest import DATA

OpenPage = Callable[[str], AppTest]


def clicked_cell(row: int, column: str) -> dict[str, object]:
    """A click on one cell, as the browser reports it to a table drawn with single-row and single-cell selection."""
    return {"selection": {"rows": [], "columns": [], "cells": [[row, column]]}}


def test_clicking_a_cell_of_a_batch_row_opens_that_batch_and_the_dropdown_follows(
    db_path: Path, open_page: OpenPage
) -> None:
    open_page("pages/home.py")
    second = app_workbench().load(DATA / "sample_trades.csv", name="Second batch").batch_id
    at = ok(open_page("pages/batches.py"))
    shown = tables(at)[0]
    assert at.selectbox(key="batch").value == int(shown["batch_id"].iloc[0])
    position = shown["batch_id"].tolist().index(1)
    at.session_state["batches_table"] = clicked_cell(position, "name")
    ok(at.run())
    assert at.selectbox(key="batch").value == 1
    assert at.subheader[0].value.startswith("Batch 1:")
    # The dropdown still chooses on its own afterwards (the click is not applied again).
    at.selectbox(key="batch").select(second)
    ok(at.run())
    assert at.subheader[0].value.startswith(f"Batch {second}:")


def test_clicking_a_cell_of_a_trade_row_shows_that_trades_story(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    finished_run()
    at = ok(open_page("pages/run.py"))
    third = int(tables(at)[0]["row"].iloc[2])
    at.session_state["trades_table"] = clicked_cell(2, "status")
    ok(at.run())
    assert any(f"(row {third})" in m.value for m in at.markdown)
    assert not any("Click a row" in c.value for c in at.caption)


def test_clicking_a_scenario_picks_it_for_promotion(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    sweep = app_workbench().whatif.sweep(1, [0.5, 1.0], seeds=1)
    at = ok(open_page("pages/whatif.py"))
    assert at.selectbox(key="sweep_pick").value == sweep.sweep_id
    at.session_state["scenarios_table"] = clicked_cell(1, "seed")
    ok(at.run())
    assert at.selectbox(key="promote_pick").value == 2
    assert at.button(key="promote").label == "Promote scenario 2 to a run…"
