"""Four-eyes for settling bookings in doubt by hand (fxbatch.settlements).

On a server with login, a run against an HTTP bank moves real money, so settling its bookings in
doubt takes two people: one proposes what the bank's dealers said, an approver other than them
confirms it (it is then applied) or rejects it. Without login an approver settles at once
(tests/integration/test_settle_by_hand.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fxbatch import Workbench
from fxbatch.cli import main
from fxbatch.client import connect
from fxbatch.errors import ConflictError, ForbiddenError, SettingsError
from fxbatch.models import RunStatus
from fxbatch.settlements import SettlementStatus
from tests.docbank import DocBank
from tests.integration.api_helpers import WAIT, assert_problem, serve_api
from tests.integration.run_helpers import assert_every_trade_final, query
from tests.integration.test_docbank_run import _lose_one_booking_answer, _run_in_doubt, bank, docbank, settings_for
from tests.integration.test_settle_by_hand import NOTE, _interrupted_with_one_in_doubt, cli_in_doubt
from tests.integration.test_team import ANALYST, APPROVER, APPROVER2, ROLES, VIEWER, as_user, grant_roles, team_settings

__all__ = ["bank", "docbank"]  # fixtures used here


def _with_login(bank: DocBank, tmp_path: Path) -> Workbench:
    """The database of a run interrupted with bookings in doubt, opened by a server with login."""
    wb = Workbench.open_local(settings=team_settings(bank, tmp_path), login=True)
    grant_roles(wb)
    return wb


@pytest.fixture
def one_in_doubt(bank: DocBank, tmp_path: Path) -> Iterator[tuple[Workbench, int, int]]:
    """(a server's workbench with login, the run, the row of its one booking in doubt)."""
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        run_id, row = _interrupted_with_one_in_doubt(wb, bank, tmp_path)
    with _with_login(bank, tmp_path) as wb:
        yield wb, run_id, row


def test_settling_a_real_money_run_takes_a_proposal_and_another_approvers_confirmation(
    one_in_doubt: tuple[Workbench, int, int],
) -> None:
    wb, run_id, row = one_in_doubt
    assert wb.settling_needs_two(run_id)
    with as_user(wb, APPROVER), pytest.raises(ForbiddenError, match="needs a second approver"):
        wb.settle_by_hand(run_id, not_booked=[row], note=NOTE)
    with as_user(wb, VIEWER), pytest.raises(ForbiddenError, match="need the analyst role"):
        wb.propose_settlement(run_id, not_booked=[row], note=NOTE)
    with as_user(wb, ANALYST):
        with pytest.raises(SettingsError, match="note"):
            wb.propose_settlement(run_id, not_booked=[row], note="  ")
        with pytest.raises(ConflictError, match="no booking in doubt"):
            wb.propose_settlement(run_id, not_booked=[row + 1], note=NOTE)
        proposed = wb.propose_settlement(run_id, not_booked=[row], note=NOTE)
        assert proposed.status is SettlementStatus.PENDING and proposed.proposed_by == ANALYST
        assert (proposed.booked, proposed.not_booked) == ([], [row])
        assert proposed.quotes == {row: int(wb.bookings_in_doubt(run_id)["quote_id"][0])}
        with pytest.raises(ForbiddenError, match="need the approver role"):
            wb.confirm_settlement(proposed.settlement_id)
    assert wb.run_summary(run_id).status is RunStatus.INTERRUPTED, "nothing is applied by a proposal"
    assert [s.settlement_id for s in wb.settlements(run_id)] == [proposed.settlement_id]
    assert [s.settlement_id for s in wb.awaiting_settlements()] == [proposed.settlement_id]

    with as_user(wb, APPROVER):
        summary = wb.confirm_settlement(proposed.settlement_id)
    assert summary.status is RunStatus.PARTIAL and summary.counts["FAILED"] == 2, summary.error
    assert_every_trade_final(wb, run_id)
    ((message,),) = query(wb, "SELECT failure_message FROM run_trades WHERE run_id = ? AND src_row = ?", run_id, row)
    assert message == f"Not booked at the bank, settled by hand by {ANALYST}, confirmed by {APPROVER}: {NOTE}"
    assert wb.awaiting_settlements() == []
    done = wb.settlement(proposed.settlement_id)
    assert done.status is SettlementStatus.CONFIRMED and done.decided_by == APPROVER
    with as_user(wb, APPROVER2), pytest.raises(ConflictError, match="is confirmed by"):
        wb.confirm_settlement(proposed.settlement_id)
    trail = query(wb, "SELECT action, outcome FROM audit_log WHERE action LIKE 'settle%' ORDER BY seq")
    assert [a for a, _ in trail] == ["settle", *["settle.propose"] * 4, *["settle.confirm"] * 3]  # refusals too
    assert [o for _, o in trail].count("ok") == 2
    ((params,),) = query(wb, "SELECT params FROM audit_log WHERE action = 'settle.confirm' AND outcome = 'ok'")
    assert NOTE in params and ANALYST in params and f"[{row}]" in params, "the confirmation says what it applied"


def test_a_proposer_never_confirms_their_own_and_a_rejection_says_why(one_in_doubt: tuple[Workbench, int, int]) -> None:
    wb, run_id, row = one_in_doubt
    with as_user(wb, APPROVER):
        proposed = wb.propose_settlement(run_id, booked=[row], note=NOTE)
        with pytest.raises(ForbiddenError, match="yourself: another approver must confirm it"):
            wb.confirm_settlement(proposed.settlement_id)
    with as_user(wb, ANALYST), pytest.raises(ConflictError, match=f"Settlement {proposed.settlement_id} .* already"):
        wb.propose_settlement(run_id, booked=[row], note="the same, again")
    with as_user(wb, APPROVER2):
        with pytest.raises(SettingsError, match="needs a reason"):
            wb.reject_settlement(proposed.settlement_id, " ")
        rejected = wb.reject_settlement(proposed.settlement_id, "the dealers' reference is for another deal")
    assert rejected.status is SettlementStatus.REJECTED and rejected.decided_by == APPROVER2
    assert rejected.reason == "the dealers' reference is for another deal"
    with as_user(wb, APPROVER2), pytest.raises(ConflictError, match="is rejected"):
        wb.confirm_settlement(proposed.settlement_id)
    assert wb.run_summary(run_id).status is RunStatus.INTERRUPTED
    assert wb.bookings_in_doubt(run_id)["row"].tolist() == [row]


def test_a_proposal_is_void_once_its_bookings_are_settled_otherwise(bank: DocBank, tmp_path: Path) -> None:
    _lose_one_booking_answer(bank)
    bank.lose_booking_answers = 2
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        run_id = _run_in_doubt(wb, bank, tmp_path).run_id
    with _with_login(bank, tmp_path) as wb:
        first, second = wb.bookings_in_doubt(run_id)["row"].tolist()
        with as_user(wb, ANALYST):
            both = wb.propose_settlement(run_id, booked=[first, second], note=NOTE)
            one = wb.propose_settlement(run_id, booked=[first], note=NOTE)
        with as_user(wb, APPROVER):
            left = wb.confirm_settlement(one.settlement_id)
        assert left.status is RunStatus.INTERRUPTED, "the other booking is still in doubt"
        void = wb.settlement(both.settlement_id)
        assert void.status is SettlementStatus.VOID and f"row(s) {first} are no longer in doubt" in (
            void.void_reason or ""
        )
        with as_user(wb, APPROVER), pytest.raises(ConflictError, match="is void: row"):
            wb.confirm_settlement(both.settlement_id)
        assert wb.awaiting_settlements() == [], "a void proposal waits for nobody"
        # A booking sent again since (another quote) is not the one the dealers spoke of.
        quote = int(wb.bookings_in_doubt(run_id)["quote_id"][0])
        with pytest.raises(ConflictError, match="sent to the bank again since the settlement was proposed"):
            wb.engine.settle(run_id, [second], [], "x", quotes={second: quote + 1})
        assert wb.bookings_in_doubt(run_id)["row"].tolist() == [second]


def test_over_http_a_proposal_and_its_confirmation_come_from_two_people(
    one_in_doubt: tuple[Workbench, int, int],
) -> None:
    wb, run_id, row = one_in_doubt
    tokens = {}
    for email in ROLES:
        with as_user(wb, email):
            tokens[email] = wb.access.create_token("tests").token
    with serve_api(wb) as url:

        def api(email: str) -> httpx.Client:
            return httpx.Client(
                base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {tokens[email]}"}, timeout=WAIT
            )

        with api(APPROVER) as pat, api(ANALYST) as ana, connect(url, token=tokens[APPROVER2]) as quinn:
            body = {"booked": [row], "note": NOTE}
            refused = assert_problem(pat.post(f"/runs/{run_id}/settle", json=body), 403)
            assert "/settlements" in refused["detail"]
            made = ana.post(f"/runs/{run_id}/settlements", json=body)
            assert made.status_code == 201, made.text
            sid = made.json()["settlement_id"]
            assert made.headers["Location"].endswith(f"/api/v1/settlements/{sid}")
            assert [s["status"] for s in pat.get(f"/runs/{run_id}/settlements").json()] == ["pending"]
            assert [s["settlement_id"] for s in pat.get("/settlements").json()] == [sid]
            assert_problem(ana.post(f"/settlements/{sid}:confirm"), 403)
            assert_problem(pat.post(f"/settlements/{sid}:reject", json={"reason": ""}), 422)
            summary = quinn.confirm_settlement(sid)
            assert summary.status is RunStatus.PARTIAL and summary.counts["SUCCESS"] == 7, summary.error
            assert quinn.settlements(run_id)[0].status is SettlementStatus.CONFIRMED
            assert_problem(pat.get("/settlements/999"), 404)


def test_the_command_line_proposes_lists_and_confirms_a_settlement(
    bank: DocBank, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, run_id, row = cli_in_doubt(bank, tmp_path)
    assert main([*db, "settle", str(run_id), "--booked", str(row), "--note", NOTE, "--propose"]) == 0
    said = capsys.readouterr().out
    sid = int(said.split()[1])
    assert said.startswith(f"settlement {sid} of run {run_id}: ")
    # Without sign-in nobody is told another person must confirm it (the same user may).
    assert (
        f"An approver (no sign-in here: you may yourself) confirms it: `python -m fxbatch confirm-settlement {sid}`"
        in said
    )
    assert main([*db, "in-doubt", str(run_id)]) == 0
    out = capsys.readouterr().out
    assert f"settlement {sid} of run {run_id}: booked: rows {row}; pending" in out
    assert main([*db, "settlements", "--json"]) == 0
    assert [s["settlement_id"] for s in json.loads(capsys.readouterr().out)] == [sid]
    assert main([*db, "confirm-settlement", str(sid), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "PARTIAL"
    assert main([*db, "confirm-settlement", str(sid)]) != 0
    assert f"Settlement {sid} is confirmed" in capsys.readouterr().err
    assert main([*db, "settlements"]) == 0
    assert "No settlement of bookings in doubt waits for a decision." in capsys.readouterr().out
