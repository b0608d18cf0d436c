"""Run detail on a run INTERRUPTED with a booking in doubt: the approver settles it by hand there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamlit.testing.v1 import AppTest

from fxbatch import Workbench
from fxbatch.models import RunStatus
from pages.common import workbench
from tests.docbank import serve_docbank
from tests.integration.test_docbank_run import CLIENT_SECRET, PASSWORD, REFUSED_CIF, settings_for
from tests.integration.test_settle_by_hand import NOTE, _interrupted_with_one_in_doubt

OpenPage = Callable[[str], AppTest]


def test_an_approver_settles_a_booking_in_doubt_on_the_run_page(db_path: Path, open_page: OpenPage) -> None:
    with serve_docbank(refuse_cifs={REFUSED_CIF}, client_secret=CLIENT_SECRET, password=PASSWORD) as bank:
        settings = settings_for(bank, db_path.parent).model_copy(update={"db": db_path})
        with Workbench.open(settings=settings) as wb:
            run_id, row = _interrupted_with_one_in_doubt(wb, bank, db_path.parent)
        bank_url = bank.url
    at = open_page("pages/run.py")
    assert not at.exception, [e.message for e in at.exception]
    assert any(e.label == "Bookings in doubt (1)" for e in at.expander)
    shown = {m.label: m.value for m in at.metric}
    assert (shown["In flight"], shown["Not started"]) == ("1", "0"), "in doubt, not 'not started'"
    assert f"HTTP bank at {bank_url}" in at.caption[0].value
    [grid] = at.data_editor
    assert grid.value["row"].tolist() == [row] and grid.value["bank_says"].tolist() == ["still in doubt"]
    assert grid.value["bank_status"].tolist() == ["PENDING"]
    assert at.button(key=f"settle_{run_id}").disabled, "nothing chosen yet"
    at.session_state[grid.key] = {"edited_rows": {0: {"bank_says": "booked"}}}
    at.text_input(key=f"in_doubt_note_{run_id}").input("")
    at.run()
    at.button(key=f"settle_{run_id}").click().run()
    assert [e.value for e in at.error] == [
        "note: say what the bank confirmed (its reference, who at the bank): it is kept with the trades."
    ]
    at.text_input(key=f"in_doubt_note_{run_id}").input(NOTE)
    at.run()
    at.button(key=f"settle_{run_id}").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not [e for e in at.expander if e.label.startswith("Bookings in doubt")]
    summary = workbench().run_summary(run_id)  # the app's own workbench
    assert summary.status is RunStatus.PARTIAL and summary.counts["SUCCESS"] == 7


def test_an_interrupted_run_is_cancelled_from_its_page_after_asking(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")  # the app creates the database with the sample batch
    wb = workbench()
    job = wb.start_run(wb.batches()[-1].batch_id, latency_ms=10, concurrency=1)
    job.interrupt()
    assert job.wait(60)
    assert wb.run_summary(job.run_id).status is RunStatus.INTERRUPTED
    at = open_page("pages/run.py")
    at.button(key="cancel_interrupted").click().run()
    assert "trades not yet executed end cancelled" in at.warning[-1].value
    assert wb.run_summary(job.run_id).status is RunStatus.INTERRUPTED, "asked first"
    at.button(key="cancel_interrupted_confirm").click().run()
    assert not at.exception, [e.message for e in at.exception]
    cancelled = wb.run_summary(job.run_id)
    assert cancelled.status is RunStatus.CANCELLED and cancelled.counts["CANCELLED"] > 0
    assert "Cancelled" in at.progress[0].proto.text
