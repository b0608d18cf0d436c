"""Runs in the app: start one from Batches, watch it on Run detail until 100%, review charts and trades, act on batches."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from fxbatch import Workbench
from fxbatch.engine import Job
from fxbatch.models import FailureCode
from pages.common import workbench
from tests.conftest import DATA

OpenPage = Callable[[str], AppTest]
CHARTS = 9
WAIT_S = 60


def app_workbench() -> Workbench:
    """The workbench the app opened (a process-wide st.cache_resource, shared with AppTest's script runs)."""
    return workbench()


def tables(at: AppTest) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe if d.editing_mode == "read_only"]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def finished_run(success_rate: float = 0.7, **overrides: object) -> int:
    wb = app_workbench()
    return wb.run(wb.batches()[-1].batch_id, success_rate=success_rate, **overrides).run_id


def slow_job() -> Job:
    """A run of the 200-trade sample that lasts a few seconds (one bank call in flight at a time)."""
    wb = app_workbench()
    return wb.start_run(wb.batches()[-1].batch_id, latency_ms=10, concurrency=1, success_rate=0.7)


def wait_until(at: AppTest, done: Callable[[AppTest], bool], timeout: float = WAIT_S) -> AppTest:
    """AppTest does not fire run_every on its own: rerun the page until ``done`` (or fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
        if done(at):
            return at
    raise AssertionError(f"not done after {timeout} s: {[p.value for p in at.progress]}")


# -- the whole path ----------------------------------------------------------------------------


def test_upload_create_start_a_run_watch_it_reach_100_percent_and_see_the_charts(
    empty_db: Path, open_page: OpenPage
) -> None:
    at = open_page("pages/upload.py")
    at.file_uploader(key="upload").set_value(("morning.csv", (DATA / "sample_trades.csv").read_bytes(), "text/csv"))
    at.run()
    ok(at.button(key="create").click().run())
    assert "Batch 1 'morning' created" in at.success[0].value

    ok(at.switch_page("pages/batches.py").run())
    assert tables(at)[0]["status"].tolist() == ["Loaded"]
    at.slider(key="rate").set_value(0.6)
    at.number_input(key="latency").set_value(10.0)
    at.number_input(key="concurrency").set_value(2)
    ok(at.form_submit_button[0].click().run())
    confirm = at.info[0].value
    assert "batch 1: 200 trades" in confirm and "success rate of 60%" in confirm and "10 ms" in confirm
    assert not app_workbench().runs()  # nothing runs before the analyst confirms

    ok(at.button(key="run_confirm").click().run())
    assert [t.value for t in at.title] == ["Run detail"]  # st.switch_page took the analyst there
    assert at.query_params["run"] == "1"
    [run] = app_workbench().runs()
    assert run.config.bank.success_rate == 0.6 and run.config.bank.latency_ms == 10 and run.config.concurrency == 2

    at.switch_page("pages/run.py").run()  # AppTest stays on the page it ran; follow the switch
    ok(at)
    saw_progress = [p.value for p in at.progress]
    at = wait_until(at, lambda a: charts(a) == CHARTS)
    ok(at)
    assert saw_progress and saw_progress[0] < 100  # it was caught running, then reached the end
    assert [p.value for p in at.progress] == [100]
    summary = app_workbench().run_summary(1)
    assert metrics(at)["Succeeded"] == f"{summary.counts['SUCCESS']:,}"
    assert metrics(at)["Failed"] == f"{summary.counts['FAILED']:,}"
    assert [t.value for t in at.toast] == [f"Run 1 finished: Completed with failures, {summary.counts['SUCCESS']} succeeded · "
                                           f"{summary.counts['FAILED']} failed."]  # fmt: skip
    at.run()
    assert not at.toast  # once

    ok(at.switch_page("pages/batches.py").run())
    listed = tables(at)[0]
    assert listed["status"].tolist() == ["Completed with failures"]
    assert listed["last_run"].tolist() == [1]
    assert listed["outcome"].tolist() == [f"{summary.counts['SUCCESS']} succeeded · {summary.counts['FAILED']} failed"]


def test_the_run_page_shows_live_progress_of_a_run_started_elsewhere(db_path: Path, open_page: OpenPage) -> None:
    at = open_page("pages/home.py")
    job = slow_job()
    try:
        ok(at.run())
        assert at.subheader[0].value == "Running now"
        assert f"Run {job.run_id}:" in at.progress[0].proto.text
        at = AppTest.from_file(str(Path(__file__).parents[2] / "app.py"), default_timeout=30)
        at.query_params["run"] = str(job.run_id)
        at.run()
        at.switch_page("pages/run.py").run()
        ok(at)
        assert at.selectbox[0].value == job.run_id
        assert at.progress and at.progress[0].value < 100
        assert charts(at) == 0  # charts wait for the end
        assert metrics(at)["Not started"] != "0"
        assert [b.label for b in at.button if b.key == "cancel_run"] == [f"Cancel run {job.run_id}…"]
        ok(at.button(key="cancel_run").click().run())  # asks first, as Start and Delete do
        assert "No further quote or booking is sent" in at.warning[0].value and job.running
        ok(at.button(key="cancel_run_confirm").click().run())
        assert job.wait(WAIT_S)
    finally:
        job.cancel()
        job.wait(WAIT_S)
    at = wait_until(at, lambda a: charts(a) == CHARTS)
    assert app_workbench().run_summary(job.run_id).status.value == "CANCELLED"
    assert int(metrics(at)["Cancelled"].replace(",", "")) > 0


# -- reviewing a finished run ----------------------------------------------------------------------


def test_run_page_on_a_finished_run_shows_charts_a_paged_table_and_exports(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    run_id = finished_run()
    at = ok(open_page("pages/run.py"))
    assert charts(at) == CHARTS
    page = tables(at)[0]
    assert len(page) == 50 and page["row"].tolist() == sorted(page["row"])
    assert "Trades 1–50 of 200 matching · 4 pages" in [c.value for c in at.caption]

    ok(at.number_input(key="f_page").set_value(4).run())
    assert len(tables(at)[0]) == 50
    assert "Trades 151–200 of 200 matching · 4 pages" in [c.value for c in at.caption]

    ok(at.multiselect(key="f_status").select("FAILED").run())
    failed = app_workbench().run_summary(run_id).counts["FAILED"]
    shown = tables(at)[0]
    assert set(shown["status"]) == {"Failed"} and len(shown) == min(50, failed)
    assert f"of {failed} matching" in " ".join(c.value for c in at.caption)  # back on page 1 for new filters
    assert at.number_input(key="f_page").value == 1

    ok(at.text_input(key="f_text").input("no such trade").run())
    assert tables(at)[0].empty
    assert "Trades 0–0 of 0 matching · 1 pages" in [c.value for c in at.caption]

    ok(at.text_input(key="f_text").input("").run())
    ok(at.selectbox(key="export_format").select("Parquet").run())
    [download] = [d for d in at.get("download_button") if "run_1.parquet" in d.proto.label]
    assert "(200 trades)" in download.proto.label


def test_accounts_are_masked_unless_the_analyst_unmasks_them(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    finished_run()
    at = ok(open_page("pages/run.py"))
    masked = tables(at)[0]["account_number"]
    assert all(a.startswith("••") and a[-4:].isdigit() for a in masked)
    assert "account ••" in at.markdown[0].value  # the trade detail too
    ok(at.toggle(key="unmask").set_value(True).run())
    clear = tables(at)[0]["account_number"]
    assert all(a.isdigit() for a in clear)
    assert [a[-4:] for a in clear] == [a[-4:] for a in masked]


def test_a_failed_trades_detail_shows_its_timeline_and_reason(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    finished_run(success_rate=0.0)
    at = ok(open_page("pages/run.py"))
    timeline = tables(at)[1]
    assert timeline["stage"].tolist()[0] == "Executing" and timeline["stage"].tolist()[-1] == "Failed"
    reason = [m.value for m in at.markdown if "Retrying" in m.value]
    assert len(reason) == 1 and any(f"**{code.value}**" in reason[0] for code in FailureCode)
    assert any("Click a row" in c.value for c in at.caption)
    second = int(tables(at)[0]["row"].iloc[1])
    # A click on the table's second row, as the browser reports it.
    at.session_state["trades_table"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    ok(at.run())
    assert not any("Click a row" in c.value for c in at.caption)
    assert any(f"(row {second})" in m.value for m in at.markdown)


def test_a_run_id_in_the_url_opens_that_run_and_an_unknown_one_the_latest(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    first, second = finished_run(), finished_run(success_rate=1.0)
    app = str(Path(__file__).parents[2] / "app.py")
    for wanted, shown in ((str(first), first), ("999", second), ("[Sign in again](https://evil.example)", second)):
        at = AppTest.from_file(app, default_timeout=30)
        at.query_params["run"] = wanted
        at.run().switch_page("pages/run.py")
        at.query_params["run"] = wanted
        ok(at.run())
        assert at.selectbox[0].value == shown
        assert at.query_params["run"] == str(shown)
        said = [w.value for w in at.warning if "showing the latest run" in w.value]
        named = f"There is no run {wanted}" if wanted.isdigit() else "The link names no run"  # its text never echoed
        assert said == ([] if shown == first else [f"{named} (an old link, or its batch was deleted): "
                                                    f"showing the latest run, run {second}."])  # fmt: skip


# -- batches: actions -----------------------------------------------------------------------------


def test_changing_the_settings_before_confirming_starts_nothing(db_path: Path, open_page: OpenPage) -> None:
    at = open_page("pages/batches.py")
    ok(at.form_submit_button[0].click().run())
    assert "success rate of 95%" in at.info[0].value
    ok(at.button(key="run_back").click().run())
    assert not at.info
    assert app_workbench().runs() == []


def test_a_failure_mix_edited_in_the_form_is_the_one_the_run_uses(db_path: Path, open_page: OpenPage) -> None:
    at = open_page("pages/batches.py")
    [mix] = at.data_editor
    edited = mix.value.copy()
    edited["weight"] = 0.0
    edited.loc[edited["reason"] == "BELOW_MINIMUM", "weight"] = 1.0
    at.session_state["mix"] = {"edited_rows": {int(i): {"weight": float(w)} for i, w in edited["weight"].items()}}
    at.slider(key="rate").set_value(0.0)
    ok(at.form_submit_button[0].click().run())
    assert "Failures: BELOW_MINIMUM 100%." in at.info[0].value
    ok(at.button(key="run_confirm").click().run())
    run = app_workbench().runs()[0]
    app_workbench().engine.wait(run.run_id, WAIT_S)
    assert app_workbench().run_summary(run.run_id).failure_reasons == {"BELOW_MINIMUM": 200}


def test_a_failure_mix_weighing_nothing_is_refused_not_replaced(db_path: Path, open_page: OpenPage) -> None:
    at = open_page("pages/batches.py")
    [mix] = at.data_editor
    at.session_state["mix"] = {"edited_rows": {i: {"weight": 0.0} for i in range(len(mix.value))}}
    at.form_submit_button[0].click().run()
    assert [e.value for e in at.error] == [
        "Give at least one failure reason a weight above 0: the failure mix says why the trades that fail fail."
    ]
    assert not at.info and not app_workbench().runs()


def test_retrying_failed_trades_starts_a_run_of_only_those(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    first = finished_run(success_rate=0.5)
    failed = app_workbench().run_summary(first).counts["FAILED"]
    at = ok(open_page("pages/batches.py"))
    ok(at.button(key="retry").click().run())
    assert [t.value for t in at.title] == ["Run detail"]
    retry = app_workbench().runs()[0]
    assert retry.retry_of_run == first and retry.trades == failed
    parent = app_workbench().run_summary(first).config
    # The run's settings, and the next seed: the simulated bank answers afresh.
    assert retry.config.bank == parent.bank and retry.config.seed == parent.seed + 1


def test_a_running_batch_can_be_cancelled_and_not_deleted(db_path: Path, open_page: OpenPage) -> None:
    at = open_page("pages/batches.py")
    job = slow_job()
    try:
        ok(at.run())
        assert tables(at)[0]["status"].tolist() == ["Running"]
        assert f"Run {job.run_id}:" in at.progress[0].proto.text
        assert not at.form_submit_button  # no second run while one executes
        at.button(key="delete").click().run()
        at.button(key="delete_confirm").click().run()  # refused with a message, not a crash
        assert not at.exception
    except AssertionError:
        job.cancel()
        raise
    assert len(at.error) == 1 and "cancel the run" in at.error[0].value
    assert len(app_workbench().batches()) == 1
    ok(at.button(key="cancel").click().run())
    ok(at.button(key="cancel_confirm").click().run())
    assert job.wait(WAIT_S)
    at = wait_until(at, lambda a: tables(a)[0]["status"].tolist() == ["Cancelled"])
    assert at.form_submit_button  # a new run can be started again


def test_deleting_a_batch_asks_first_then_removes_it_with_its_runs(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    finished_run()
    at = ok(open_page("pages/batches.py"))
    ok(at.button(key="delete").click().run())
    assert "with its trades, rejections and 1 run(s)" in at.warning[0].value
    ok(at.button(key="delete_cancel").click().run())
    assert len(app_workbench().batches()) == 1
    ok(at.button(key="delete").click().run())
    ok(at.button(key="delete_confirm").click().run())
    assert [s.value for s in at.success] == ["Batch 1 'Sample batch' was deleted."]
    assert app_workbench().batches() == [] and app_workbench().runs() == []
    assert "No batches yet" in at.info[0].value


def test_batches_filter_by_status_and_text_and_sort(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    wb = app_workbench()
    wb.load(DATA / "sample_trades.csv", name="Tuesday desk")
    finished_run()  # runs batch 1, the sample
    at = ok(open_page("pages/batches.py"))
    assert tables(at)[0]["batch_id"].tolist() == [2, 1]
    shown = list(at.dataframe[0].proto.column_order)
    assert shown.index("notional_zar") == shown.index("trades") + 1, "the batch's notional in ZAR, by its trades"
    assert tables(at)[0]["notional_zar"].tolist() == [b.notional_zar for b in wb.batches()]
    ok(at.multiselect(key="b_status").select("Completed with failures").run())
    assert tables(at)[0]["name"].tolist() == ["Sample batch"]
    ok(at.multiselect(key="b_status").unselect("Completed with failures").run())
    ok(at.text_input(key="b_text").input("tuesday").run())
    assert tables(at)[0]["name"].tolist() == ["Tuesday desk"]
    ok(at.text_input(key="b_text").input("").run())
    ok(at.selectbox(key="b_sort").select("Oldest first").run())
    assert tables(at)[0]["batch_id"].tolist() == [1, 2]


# -- home -------------------------------------------------------------------------------------------


def test_home_lists_the_latest_runs_with_their_outcome(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    run_id = finished_run(success_rate=1.0)
    at = ok(open_page("pages/home.py"))
    runs = tables(at)[0]
    assert runs["run_id"].tolist() == [run_id]
    assert runs["status"].tolist() == ["Completed"] and runs["outcome"].tolist() == ["200 succeeded"]
    income = app_workbench().run_summary(run_id).spread_income_zar
    assert income and runs["income"].tolist() == [pytest.approx(income)]
    assert "Running now" not in [s.value for s in at.subheader]
    assert tables(at)[1]["status"].tolist() == ["Completed"]  # the batch's status is its latest run's


@pytest.mark.parametrize("page", ["pages/home.py", "pages/batches.py", "pages/run.py"])
def test_pages_render_on_a_database_with_finished_runs(db_path: Path, open_page: OpenPage, page: str) -> None:
    open_page("pages/home.py")
    finished_run()
    finished_run(success_rate=0.0)
    at = ok(open_page(page))
    assert at.dataframe


def _two_interrupted_http_runs(open_page: OpenPage, monkeypatch: pytest.MonkeyPatch) -> tuple[Workbench, int, int]:
    """Two runs at two HTTP bank addresses where nobody listens: each stops INTERRUPTED."""
    monkeypatch.setenv("FXBATCH_BANK_UNREACHABLE_WINDOW_S", "0.5")
    open_page("pages/home.py")
    wb = app_workbench()
    wb.load(DATA / "sample_trades.csv", name="Second batch")
    first = wb.run(1, bank_url="http://127.0.0.1:9").run_id
    second = wb.run(2, bank_url="http://127.0.0.1:19").run_id
    return wb, first, second


def test_resuming_a_run_from_its_page_keeps_its_own_bank_unless_another_address_is_typed(
    db_path: Path, open_page: OpenPage, monkeypatch: pytest.MonkeyPatch
) -> None:
    wb, first, second = _two_interrupted_http_runs(open_page, monkeypatch)
    at = ok(open_page("pages/run.py"))  # the latest run: the second, at :19
    next(s for s in at.selectbox if s.label == "Run").select(first).run()
    assert at.text_input(key=f"resume_url_{first}").value == "http://127.0.0.1:9", "its own bank, not the last run's"
    # A typo is a message, not a traceback; blanks keep the run's own bank (never the simulated bank).
    at.text_input(key=f"resume_url_{first}").set_value("http://127.0.0.1 :19").run()
    at.button(key="resume").click().run()
    assert not at.exception and [e.value for e in at.error] == [
        "Run 1 cannot resume there: bank_url: HTTP bank URL 'http://127.0.0.1 :19' is not a web address: enter "
        "the bank's base URL, for example http://127.0.0.1:8600."
    ]
    at.text_input(key=f"resume_url_{first}").set_value("   ").run()
    ok(at.button(key="resume").click().run())
    wb.engine.wait(first, timeout=60)
    assert wb.run_summary(first).config.bank_url == "http://127.0.0.1:9"
    assert wb.run_summary(second).config.bank_url == "http://127.0.0.1:19"


def test_the_trade_filters_of_one_run_do_not_follow_to_the_next(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    first = finished_run(success_rate=0.5)
    second = finished_run(success_rate=1.0)
    at = ok(open_page("pages/run.py"))
    next(s for s in at.selectbox if s.label == "Run").select(first).run()
    ok(at.multiselect(key="f_status").select("FAILED").run())
    next(s for s in at.selectbox if s.label == "Run").select(second).run()
    ok(at)
    assert at.multiselect(key="f_status").value == []
    assert any(c.value.startswith("Trades 1–50 of 200 matching") for c in at.caption)


def test_a_finished_runs_money_is_worked_out_once_not_on_every_rerun(
    db_path: Path, open_page: OpenPage, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_page("pages/home.py")
    wb = app_workbench()
    finished_run()
    asked: list[int] = []
    real = wb.run_money

    def counted(run_id: int) -> object:
        asked.append(run_id)
        return real(run_id)

    monkeypatch.setattr(wb, "run_money", counted)
    at = ok(open_page("pages/run.py"))
    for _ in range(3):
        ok(at.run())
    assert asked == [1], "a pass over the run's trades for each rerun (a quarter second for a million)"
