"""The What-if page: sweep from the form, see the charts, compare runs (AppTest)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from fxbatch import Workbench
from fxbatch.errors import CancelledError
from pages.common import workbench

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


def _hold_sweeps_until_cancelled(wb: Workbench, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Sweeps run one scenario at a time and hold after the first until they are cancelled; the
    event returned is set once a sweep holds."""
    real = wb.whatif.sweep
    holding = threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        def progress(done: int, total: int) -> None:
            kwargs_progress(done, total)
            holding.set()
            stop = wb.whatif._stop(kwargs["sweep_id"])
            assert stop is not None and stop.event.wait(60)  # the first scenario is done: hold until the cancel

        kwargs_progress = kwargs["on_progress"]
        return real(*args, **{**kwargs, "on_progress": progress, "workers": 1})

    monkeypatch.setattr(wb.whatif, "sweep", held)
    return holding


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
    # The sweep runs in the background while the page shows its progress and a cancel.
    job = workbench().whatif.sweep_job(1)
    assert job is not None and job.total == 9
    assert job.wait(60)
    at.run()
    assert not at.exception, at.exception
    assert not at.error
    assert at.selectbox(key="sweep_pick").value == 1
    charts = at.get("plotly_chart")
    assert len(charts) == 2, "the fan (income earned and lost, notional booked) and the failure reasons"
    captions = [c.value for c in at.caption]
    assert any(c.startswith("At a 50% success rate the desk earns R ") for c in captions)
    assert any(c.startswith("Why trades fail as the bank gets worse") for c in captions)
    assert "3 scenarios" not in at.subheader[0].value
    assert "9 scenarios" in at.subheader[0].value  # rates 0.5, 0.75, 1.0 x 3 seeds
    # A second sweep is the one shown once it has finished (the first stayed in view).
    at.slider(key="seeds").set_value(1)
    at.button[0].click().run()
    assert workbench().whatif.sweep_job(2).wait(60)
    at.run()
    assert not at.exception and [t.value for t in at.toast] == ["Sweep 2: 3 scenarios"]
    assert at.selectbox(key="sweep_pick").value == 2 and at.subheader[0].value.startswith("Sweep 2 ")


def test_two_runs_are_compared_with_their_differing_trades(db: Path) -> None:
    at = _page(db)
    st.cache_resource.clear()  # let the app's workbench go, then add two runs from "another client"
    with Workbench.open(db) as wb:
        batch = wb.batches()[0].batch_id
        wb.run(batch, seed=1, success_rate=0.7)
        wb.run(batch, seed=2, success_rate=0.7)
        differing = len(wb.whatif.differing_trades(2, 1, limit=10_000))
    st.cache_resource.clear()
    at.run()
    assert not at.exception
    assert at.multiselect(key="compare_runs").value == [2, 1]
    assert any(c.value.startswith("Run ") and " booked the most, R " in c.value for c in at.caption)
    said = [c.value for c in at.caption if "ended differently" in c.value]
    assert said and said[0].startswith(f"{differing:,} trade(s) ended differently in run 2 and run 1,")
    assert "differing" not in at.dataframe[-1].value.columns


def test_promote_asks_first_then_links_to_the_new_run_whose_page_names_the_scenario(db: Path) -> None:
    at = _page(db)
    at.slider(key="seeds").set_value(1)
    at.button[0].click().run()  # a sweep from the form's defaults
    assert not at.exception
    job = workbench().whatif.sweep_job(1)
    assert job is not None and job.wait(60)
    at.run()
    at.button(key="promote").click().run()
    assert f"This will run batch 1: {workbench().batch(1).trades:,} trades" in at.info[0].value
    assert not at.exception
    assert workbench().runs() == [], "nothing starts before the confirmation"
    at.button(key="promote_confirm").click().run()
    assert not at.exception
    (run,) = workbench().runs()
    scenario = at.selectbox(key="promote_pick").value
    assert at.success[-1].value == f"Run {run.run_id} started from scenario {scenario}."
    link = [e for e in at.get("page_link") if e.proto.label == f"Watch run {run.run_id}"]
    assert link, "a link to the new run"
    assert (run.config.sweep_id, run.config.scenario) == (1, scenario)
    workbench().engine.wait(run.run_id, timeout=60)
    page = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    page.query_params["run"] = str(run.run_id)
    page.run()
    page.switch_page("pages/run.py").run()
    assert any(f"promoted from scenario {scenario} of what-if sweep 1" in c.value for c in page.caption)


def test_a_running_sweep_is_cancelled_from_the_page_and_nothing_is_stored(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(db)
    wb = workbench()
    _hold_sweeps_until_cancelled(wb, monkeypatch)
    at.slider(key="seeds").set_value(2)
    at.select_slider(key="step").set_value(0.25)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert [b.label for b in at.button if b.key == "cancel_sweep"] == ["Cancel sweep"]
    job = wb.whatif.sweep_job(1)
    assert job is not None and job.running
    assert at.button[0].disabled, "one sweep at a time"
    at.button(key="cancel_sweep").click()
    at.run()  # the cancel waits a moment for the sweep to stop, then redraws the page
    assert job.wait(60)
    if not at.info:
        at.run()  # it stopped after that moment: the next drawing says so
    assert not at.exception, at.exception
    assert [i.value for i in at.info] == ["Sweep 1 was cancelled after 1 of 6 scenarios; nothing of it was stored."]
    assert wb.whatif.sweeps() == []


def test_a_sweep_started_elsewhere_shows_its_progress_here_and_an_analyst_can_cancel_it(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _page(db)
    wb = workbench()
    held_at = _hold_sweeps_until_cancelled(wb, monkeypatch)
    # Another session (a colleague's page, the API, a notebook through the server) starts a sweep.
    (batch,) = wb.batches()
    job = wb.whatif.start_sweep(batch.batch_id, [0.5, 1.0], seeds=2, name="bad Monday")
    assert held_at.wait(60)
    assert [j.sweep_id for j in wb.whatif.running_sweeps(batch.batch_id)] == [job.sweep_id]
    assert wb.whatif.running_sweeps(batch.batch_id + 1) == []
    at.run()
    assert not at.exception, at.exception
    (shown,) = [p.proto.text for p in at.progress]
    assert shown.startswith(f"Sweep {job.sweep_id} (bad Monday), started") and shown.endswith("1 of 4 scenarios")
    assert not at.button[0].disabled, "another session's sweep does not hold this session's form"
    at.button(key=f"cancel_other_sweep_{job.sweep_id}").click()
    at.run()
    assert job.wait(60) and isinstance(job.error, CancelledError)
    at.run()
    assert not at.exception, at.exception
    assert not at.progress and not [b for b in at.button if b.key and b.key.startswith("cancel_other_sweep_")]
    assert wb.whatif.sweeps() == []


def test_two_finished_runs_are_compared_once_not_on_every_rerun(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _page(db)
    wb = workbench()
    batch = wb.batches()[0].batch_id
    wb.run(batch, seed=1, success_rate=0.7)
    wb.run(batch, seed=2, success_rate=0.7)
    asked: list[str] = []
    real_compare, real_differing = wb.whatif.compare, wb.whatif.differing_trades

    def compare(run_ids: list[int]) -> Any:
        asked.append("compare")
        return real_compare(run_ids)

    def differing(run_a: int, run_b: int, limit: int = 1000) -> Any:
        asked.append("differing")
        return real_differing(run_a, run_b, limit)

    monkeypatch.setattr(wb.whatif, "compare", compare)
    monkeypatch.setattr(wb.whatif, "differing_trades", differing)
    for _ in range(3):
        at.run()
        assert not at.exception
    assert asked == ["compare", "differing"]
    assert any("ended differently" in c.value for c in at.caption)
