"""Run detail on a run INTERRUPTED with a booking in doubt: the approver settles it by hand there
(with login, for a real-money run: one person proposes, an approver other than them confirms)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fxbatch import Workbench
from fxbatch.access import Role, acting
from fxbatch.models import RunStatus
from pages.common import _own_workbench, workbench
from tests.app.test_team_pages import ANALYST, APPROVER, BOSS, as_user, ok, signed_in, texts
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


def test_with_login_one_person_proposes_the_settlement_and_another_approver_confirms_it(
    empty_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_docbank(refuse_cifs={REFUSED_CIF}, client_secret=CLIENT_SECRET, password=PASSWORD) as bank:
        settings = settings_for(bank, empty_db.parent).model_copy(update={"db": empty_db})
        with Workbench.open(settings=settings) as wb:
            run_id, row = _interrupted_with_one_in_doubt(wb, bank, empty_db.parent)
    monkeypatch.setenv("FXBATCH_ADMIN_EMAIL", BOSS)
    wb = _own_workbench(login=True)
    with acting(as_user(BOSS, Role.ADMIN)):
        for email, role in ((ANALYST, Role.ANALYST), (APPROVER, Role.APPROVER)):
            wb.access.set_role(email, role)

    at = ok(signed_in(ANALYST, "pages/run.py"))
    [grid] = at.data_editor
    assert at.button(key=f"settle_{run_id}").label == "Propose settling"
    at.session_state[grid.key] = {"edited_rows": {0: {"bank_says": "not booked"}}}
    at.text_input(key=f"in_doubt_note_{run_id}").input(NOTE)
    at.run()
    assert at.button(key=f"settle_{run_id}").label == "Propose settling 1 booking(s)"
    ok(at.button(key=f"settle_{run_id}").click().run())
    (proposed,) = wb.settlements(run_id)
    assert proposed.status.value == "pending" and proposed.not_booked == [row]
    assert wb.run_summary(run_id).status is RunStatus.INTERRUPTED, "a proposal settles nothing"
    assert "An approver other than the proposer confirms or rejects it." in texts(at)
    assert not [b for b in at.button if b.key == f"confirm_{proposed.settlement_id}"]

    at = ok(signed_in(APPROVER, "pages/approvals.py"))  # what waits for the approver, with the way to it
    assert f"#{proposed.settlement_id}, run {run_id}: not booked: rows {row}; proposed by {ANALYST}" in texts(at)
    assert [p.label for p in at.get("page_link")] == [f"Open run {run_id} to confirm or reject it"]

    at = ok(signed_in(APPROVER, "pages/run.py"))
    assert f"**#{proposed.settlement_id}** not booked: rows {row}" in texts(at)
    ok(at.button(key=f"confirm_{proposed.settlement_id}").click().run())
    summary = wb.run_summary(run_id)
    assert summary.status is RunStatus.PARTIAL and summary.counts["FAILED"] == 2
    assert wb.settlement(proposed.settlement_id).decided_by == APPROVER
    assert not [e for e in at.expander if e.label.startswith("Bookings in doubt")]
