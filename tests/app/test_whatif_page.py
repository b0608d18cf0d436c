"""The What-if page: sweep from the form, see the charts, compare runs (AppTest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from fxbatch import Workbench

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(__import__("os").environ):
        if name.startswith("FXBATCH_"):
            monkeypatch.delenv(name)
    path = tmp_path / "app.duckdb"
    monkeypatch.setenv("FXBATCH_DB", str(path))
    st.cache_resource.clear()
    yield path
    st.cache_resource.clear()


def _page(db: Path) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/whatif.py")
    at.run()
    return at


def test_whatif_page_says_what_to_do_without_batches(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXBATCH_LOAD_SAMPLE_ON_CREATE", "false")
    at = _page(db)
    assert not at.exception
    assert "No batches yet" in at.info[0].value


def test_a_sweep_from_the_form_draws_the_fan_and_failure_charts(db: Path) -> None:
    at = _page(db)  # the app loads the sample batch on first start
    assert not at.exception
    at.slider(key="seeds").set_value(3)
    at.select_slider(key="step").set_value(0.25)
    at.button[0].click()  # the form's submit button
    at.run()
    assert not at.exception, at.exception
    assert not at.error
    assert at.selectbox(key="sweep_pick").value == 1
    charts = at.get("plotly_chart")
    assert len(charts) == 3, "fan chart, income chart and failure reasons chart"
    assert "3 scenarios" not in at.subheader[0].value
    assert "9 scenarios" in at.subheader[0].value  # rates 0.5, 0.75, 1.0 x 3 seeds


def test_two_runs_are_compared_with_their_differing_trades(db: Path) -> None:
    at = _page(db)
    st.cache_resource.clear()  # let the app's workbench go, then add two runs from "another client"
    with Workbench.open(db) as wb:
        batch = wb.batches()[0].batch_id
        wb.run(batch, seed=1, success_rate=0.7)
        wb.run(batch, seed=2, success_rate=0.7)
    st.cache_resource.clear()
    at.run()
    assert not at.exception
    assert at.multiselect(key="compare_runs").value == [2, 1]
    assert any("ended differently" in c.value for c in at.caption)
