"""Bookings in doubt settled by hand (fxbatch.engine.by_hand), against the doc-shaped fake bank.

A booking whose answer was lost and whose GetTxnStatus stays PENDING keeps its run INTERRUPTED:
nothing is booked again or failed. Once the bank's dealers have said what became of it, an
approver settles it by hand: the trade ends SUCCESS with the quote it was sent with, or FAILED with
the approver's note, the run ends when nothing else is left, and nothing is sent to the bank.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from fxbatch import Workbench
from fxbatch.bank.model import REASON_INDEX
from fxbatch.bank.port import (
    Bank,
    BankUnavailable,
    BookBatch,
    BookReplies,
    QuoteBatch,
    QuoteReplies,
    Replies,
    StatusReplies,
)
from fxbatch.bank.simulated import SimulatedBank
from fxbatch.cli import main
from fxbatch.client import connect
from fxbatch.engine import records
from fxbatch.errors import ConflictError, ForbiddenError, NotFoundError, SettingsError
from fxbatch.models import FailureCode, RunConfig, RunStatus
from tests.docbank import DocBank, serve_docbank
from tests.integration.api_helpers import assert_problem, serve_api
from tests.integration.run_helpers import (
    SpyBank,
    assert_every_trade_final,
    assert_ledger_matches_successes,
    load_generated,
    query,
)
from tests.integration.test_crash_resume import DiesAfterBooking, use_bank
from tests.integration.test_docbank_run import (
    CLIENT_SECRET,
    PASSWORD,
    _lose_one_booking_answer,
    _lost_deal,
    _run_in_doubt,
    bank,
    docbank,
    load_batch,
    settings_for,
)
from tests.integration.test_team import ADMIN, ANALYST, as_user, grant_roles, team_settings

NOTE = "Confirmed by the bank's dealing desk (J. Smith), deal ref BBF-7731"

__all__ = ["bank", "docbank"]  # fixtures used here


def _interrupted_with_one_in_doubt(wb: Workbench, bank: DocBank, tmp_path: Path) -> tuple[int, int]:
    """A run of 8 trades whose one booking stays PENDING at the bank: (run id, its row)."""
    _lose_one_booking_answer(bank)
    run = _run_in_doubt(wb, bank, tmp_path)
    assert run.error is not None and "settle them by hand" in run.error
    doubt = wb.bookings_in_doubt(run.run_id)
    assert len(doubt) == 1 and doubt["bank_status"].tolist() == [bank.pending_status]
    assert str(uuid.UUID(doubt["deal_transaction_id"][0])) == _lost_deal(bank)
    return run.run_id, int(doubt["row"][0])


def cli_in_doubt(bank: DocBank, tmp_path: Path) -> tuple[list[str], int, int]:
    """The command line's ``--db`` option for a database whose run has one booking in doubt, the run, its row."""
    settings = settings_for(bank, tmp_path)
    with Workbench.open(settings=settings) as wb:
        run_id, row = _interrupted_with_one_in_doubt(wb, bank, tmp_path)
    return ["--db", str(settings.db)], run_id, row


def test_a_booking_the_bank_confirms_is_settled_booked_with_its_quote_and_the_run_ends(
    bank: DocBank, tmp_path: Path
) -> None:
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        run_id, row = _interrupted_with_one_in_doubt(wb, bank, tmp_path)
        doubt = wb.bookings_in_doubt(run_id)
        asked = len(bank.requests())
        summary = wb.settle_by_hand(run_id, booked=[row], note=NOTE)
        assert len(bank.requests()) == asked, "settling by hand sends nothing to the bank"
        assert summary.status is RunStatus.PARTIAL, summary.error  # the refused CIF failed
        assert summary.counts["SUCCESS"] == 7 and summary.counts["FAILED"] == 1
        assert summary.error is None
        assert_every_trade_final(wb, run_id)
        settled = query(wb, "SELECT status, quote_id, quote_rate, deal_rate, spread_income_zar FROM run_trades "
                            "WHERE run_id = ? AND src_row = ?", run_id, row)  # fmt: skip
        status, quote_id, quote_rate, deal_rate, income = settled[0]
        assert (status, quote_id) == ("SUCCESS", int(doubt["quote_id"][0]))
        assert quote_rate == pytest.approx(float(doubt["quote_rate"][0]))
        assert deal_rate != quote_rate and income > 0, "booked at the client's rate: the desk's spread is income"
        # What the bank booked is exactly the run's successes, the settled trade among them.
        booked = {str(uuid.UUID(d)) for (d,) in query(wb, "SELECT deal_transaction_id FROM run_trades "
                                                          "WHERE run_id = ? AND status = 'SUCCESS'", run_id)}  # fmt: skip
        assert booked == set(bank.ledger_copy())
        assert wb.bookings_in_doubt(run_id).empty
        trail = query(wb, "SELECT action, object, outcome, params FROM audit_log WHERE action = 'settle'")
        assert len(trail) == 1 and trail[0][:3] == ("settle", f"run:{run_id}", "ok")
        assert NOTE in trail[0][3] and f"[{row}]" in trail[0][3]


def test_a_booking_the_bank_never_made_ends_failed_with_the_note_and_who_settled_it(
    bank: DocBank, tmp_path: Path
) -> None:
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        run_id, row = _interrupted_with_one_in_doubt(wb, bank, tmp_path)
        summary = wb.settle_by_hand(run_id, not_booked=[row], note=f"  {NOTE}\n")
        assert summary.status is RunStatus.PARTIAL, summary.error
        assert summary.counts["SUCCESS"] == 6 and summary.counts["FAILED"] == 2
        assert summary.failure_reasons.get("TIMEOUT_UNKNOWN") == 1
        (code, message, quote_id), = query(wb, "SELECT failure_code, failure_message, quote_id FROM run_trades "
                                               "WHERE run_id = ? AND src_row = ?", run_id, row)  # fmt: skip
        assert code == "TIMEOUT_UNKNOWN" and quote_id > 0
        assert message.startswith("Not booked at the bank, settled by hand by ") and message.endswith(NOTE)
        # A retry of the run's failed trades books it afresh, under a new deal id.
        retry = wb.run(summary.batch_id, retry_of_run=run_id, bank_url=bank.url, concurrency=4)
        assert retry.counts["SUCCESS"] == 1, retry.error  # the refused CIF is refused again


def test_settling_one_of_two_keeps_the_run_interrupted_until_the_other_is_settled(
    bank: DocBank, tmp_path: Path
) -> None:
    pending = _lose_one_booking_answer(bank)
    bank.lose_booking_answers = 2
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        run = _run_in_doubt(wb, bank, tmp_path)
        rows = wb.bookings_in_doubt(run.run_id)["row"].tolist()
        assert len(rows) == 2
        first = wb.settle_by_hand(run.run_id, booked=[rows[0]], note=NOTE)
        assert first.status is RunStatus.INTERRUPTED
        assert first.error is not None and "1 booking(s) still in doubt (not settled by hand)" in first.error
        assert wb.bookings_in_doubt(run.run_id)["row"].tolist() == [rows[1]]
        pending.pending = False  # the bank's books catch up: a resume settles the other from its status
        resumed = wb.resume(run.run_id, bank_url=bank.url)
        assert resumed.status is RunStatus.PARTIAL and resumed.counts["SUCCESS"] == 7, resumed.error
        assert_every_trade_final(wb, run.run_id)


def test_settling_refuses_what_is_not_in_doubt_and_a_note_that_says_nothing(bank: DocBank, tmp_path: Path) -> None:
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        run_id, row = _interrupted_with_one_in_doubt(wb, bank, tmp_path)
        with pytest.raises(SettingsError, match="note: say what the bank confirmed"):
            wb.settle_by_hand(run_id, booked=[row], note="  ")
        with pytest.raises(SettingsError, match="at most 500 characters"):
            wb.settle_by_hand(run_id, booked=[row], note="x" * 501)
        with pytest.raises(ConflictError, match=rf"Row\(s\) 1 of run {run_id} have no booking in doubt .*rows {row}"):
            wb.settle_by_hand(run_id, booked=[1], note=NOTE)
        with pytest.raises(SettingsError, match="named more than once"):
            wb.settle_by_hand(run_id, booked=[row], not_booked=[row], note=NOTE)
        with pytest.raises(SettingsError, match="Nothing to settle"):
            wb.settle_by_hand(run_id, note=NOTE)
        with pytest.raises(NotFoundError, match="no run 999"):
            wb.settle_by_hand(999, booked=[row], note=" ")
        assert wb.run_summary(run_id).status is RunStatus.INTERRUPTED, "nothing was written"
        assert wb.bookings_in_doubt(run_id)["row"].tolist() == [row]
        refused = query(wb, "SELECT count(*) FROM audit_log WHERE action = 'settle' AND outcome <> 'ok'")[0][0]
        assert refused == 6
        wb.settle_by_hand(run_id, booked=[row], note=NOTE)
        with pytest.raises(ConflictError, match="only an INTERRUPTED run has bookings in doubt"):
            wb.settle_by_hand(run_id, booked=[row], note=NOTE)


def test_only_an_approver_settles_by_hand(bank: DocBank, tmp_path: Path) -> None:
    with Workbench.open_local(settings=team_settings(bank, tmp_path), login=True) as wb:
        grant_roles(wb)
        with as_user(wb, ANALYST), pytest.raises(ForbiddenError, match="need the approver role"):
            wb.settle_by_hand(1, booked=[1], note=NOTE)
        with as_user(wb, ADMIN), pytest.raises(Exception, match="no run 1"):
            wb.settle_by_hand(1, booked=[1], note=NOTE)


def test_over_http_an_approver_lists_and_settles_the_bookings_in_doubt(bank: DocBank, tmp_path: Path) -> None:
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        run_id, row = _interrupted_with_one_in_doubt(wb, bank, tmp_path)
        with serve_api(wb) as url, connect(url) as remote, httpx.Client(base_url=f"{url}/api/v1") as api:
            listed = api.get(f"/runs/{run_id}/in-doubt").json()
            assert [r["row"] for r in listed] == [row] and listed[0]["trade_id"] == f"T{row - 2}"
            doubt = remote.bookings_in_doubt(run_id)  # over Arrow, with its types
            assert doubt["row"].tolist() == [row] and doubt["quote_id"].dtype.kind == "i"
            assert_problem(api.post(f"/runs/{run_id}/settle", json={"booked": [row], "note": " "}), 422, "BAD_SETTING")
            assert_problem(api.post(f"/runs/{run_id}/settle", json={"booked": [row], "note": NOTE, "x": 1}), 422)
            gone = assert_problem(api.post(f"/runs/{run_id}/settle", json={"booked": [row + 1], "note": NOTE}), 409)
            assert f"Row(s) {row + 1} of run {run_id} have no booking in doubt" in gone["detail"]
            summary = remote.settle_by_hand(run_id, booked=[row], note=NOTE)
            assert summary.status is RunStatus.PARTIAL and summary.counts["SUCCESS"] == 7
            assert api.get(f"/runs/{run_id}/in-doubt").json() == []


def test_the_command_line_lists_and_settles_the_bookings_in_doubt(
    bank: DocBank, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, run_id, row = cli_in_doubt(bank, tmp_path)
    assert main([*db, "in-doubt", str(run_id)]) == 0
    out = capsys.readouterr().out
    assert f"T{row - 2}" in out and f"fxbatch settle {run_id} --booked ROW" in out
    assert main([*db, "settle", str(run_id), "--not-booked", str(row), "--note", NOTE, "--json"]) == 0
    settled = json.loads(capsys.readouterr().out)
    assert settled["status"] == "PARTIAL" and settled["counts"]["FAILED"] == 2
    assert main([*db, "in-doubt", str(run_id)]) == 0
    assert f"Run {run_id} has no booking in doubt." in capsys.readouterr().out
    assert main([*db, "settle", str(run_id), "--booked", str(row), "--note", NOTE]) != 0
    assert "only an INTERRUPTED run has bookings in doubt" in capsys.readouterr().err


def test_a_status_the_documentation_does_not_give_is_shown_and_the_desk_settles_it(
    bank: DocBank, tmp_path: Path
) -> None:
    _lose_one_booking_answer(bank)
    bank.pending_status = "REVERSED"  # "COMPLETED|PENDING|...": neither booked nor refused for fxbatch
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        run = _run_in_doubt(wb, bank, tmp_path)
        assert run.error is not None and run.error.startswith("1 booking(s) still in doubt (status REVERSED 1) after")
        assert len(bank.requests("bookquoteddeal")) == 7, "not booked again"
        [row] = wb.bookings_in_doubt(run.run_id)["row"].tolist()
        settled = wb.settle_by_hand(run.run_id, not_booked=[row], note=NOTE)
        assert settled.status is RunStatus.PARTIAL and settled.counts["FAILED"] == 2
        assert_every_trade_final(wb, run.run_id)


def test_a_booking_the_bank_was_never_asked_about_is_not_settled_by_hand(wb: Workbench, tmp_path: Path) -> None:
    # A process died after the bank booked a wave and before it heard back: only the bank's
    # status settles those (a resume asks it first); the desk's word does not stand in for it.
    batch = load_generated(wb, tmp_path, 300)
    banks = use_bank(wb, lambda inner: DiesAfterBooking(inner, wb, on_call=3))
    run_id = wb.run(batch, seed=5, success_rate=0.7, chunk_size=40).run_id
    lost = banks[0].booked_then_died
    assert lost and wb.run_summary(run_id).status is RunStatus.INTERRUPTED
    assert wb.bookings_in_doubt(run_id).empty
    unanswered = query(wb, "SELECT min(src_row) FROM run_inflight WHERE run_id = ? AND src_row NOT IN "
                           "(SELECT src_row FROM run_trades WHERE run_id = ?)", run_id, run_id)[0][0]  # fmt: skip
    with pytest.raises(ConflictError, match="a resume asks the bank first"):
        wb.settle_by_hand(run_id, not_booked=[unanswered], note=NOTE)
    wb.engine.bank_factory = wb.engine._default_bank


def test_a_booking_the_bank_later_says_it_never_had_is_no_longer_in_doubt(bank: DocBank, tmp_path: Path) -> None:
    pending = _lose_one_booking_answer(bank)
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        run = _run_in_doubt(wb, bank, tmp_path)
        deal = str(uuid.UUID(wb.bookings_in_doubt(run.run_id)["deal_transaction_id"][0]))
        with bank.lock:  # the bank's books catch up: it never made that deal (GetTxnStatus: not found)
            bank.ledger.pop(deal)
            bank._txns.pop(deal)
        pending.pending = False
        # A resume hears NOT_FOUND (the trade is to be quoted again), then the bank goes away before
        # the new quote: the run stays INTERRUPTED with the trade unbooked, and no longer in doubt.
        default = wb.engine.bank_factory

        def unreachable_for_quotes(config: RunConfig) -> Bank:
            made = default(config)

            def gone(*args: object, **kwargs: object) -> QuoteReplies:
                raise BankUnavailable("connection refused")

            made.create_quotes = gone  # type: ignore[method-assign]
            return made

        wb.engine.bank_factory = unreachable_for_quotes
        resumed = wb.resume(run.run_id, bank_url=bank.url)
        assert resumed.status is RunStatus.INTERRUPTED and "could not be reached" in (resumed.error or "")
        assert bank.requests("GetTxnStatus")
        assert wb.bookings_in_doubt(run.run_id).empty, "the bank's newest word on it was: not found"
        wb.engine.bank_factory = default
        finished = wb.resume(run.run_id, bank_url=bank.url)
        assert finished.status is RunStatus.PARTIAL and finished.counts["SUCCESS"] == 7, finished.error
        assert_every_trade_final(wb, run.run_id)


class _GoneAfterBooking(SpyBank):
    """The bank books the deals of its n-th booking call, its answers never come back, and it
    cannot be reached from then on (GetTxnStatus included)."""

    def __init__(self, inner: SimulatedBank, wb: Workbench, on_call: int, *, gone: bool = False) -> None:
        super().__init__(inner, wb)
        self.on_call, self.calls, self.gone = on_call, 0, gone
        self.lost: list[str] = []  # deal ids of the wave whose answers were lost

    def _reachable(self) -> None:
        if self.gone:
            raise BankUnavailable("connection refused")

    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> QuoteReplies:
        self._reachable()
        return super().create_quotes(batch, max_in_flight)

    def book_deals(self, batch: BookBatch, max_in_flight: int) -> Any:
        self._reachable()
        replies = super().book_deals(batch, max_in_flight)
        self.calls += 1
        if self.calls == self.on_call:  # booked (those the bank accepts): the answers are lost
            self.gone = True
            self.lost = [str(uuid.UUID(d)) for d in batch.deal_txn_id.to_pylist()]
            raise BankUnavailable("connection reset, then refused")
        return replies

    def cancel_quotes(self, quote_ids: np.ndarray, max_in_flight: int) -> Replies:
        self._reachable()
        return super().cancel_quotes(quote_ids, max_in_flight)

    def transaction_status(
        self, deal_txn_ids: pa.Array, max_in_flight: int, run_id: int | None = None
    ) -> StatusReplies:
        self._reachable()
        return super().transaction_status(deal_txn_ids, max_in_flight, run_id)


def _gone_after_booking(wb: Workbench, tmp_path: Path) -> tuple[int, _GoneAfterBooking]:
    """A run of 300 trades whose bank goes away with the answers to its third booking wave."""
    batch = load_generated(wb, tmp_path, 300)
    banks = use_bank(wb, lambda inner: _GoneAfterBooking(inner, wb, on_call=3))
    run = wb.run(batch, seed=5, success_rate=0.7, chunk_size=40)
    assert run.status is RunStatus.INTERRUPTED and run.counts["PENDING"] > 0
    (gone,) = banks
    assert gone.lost, "the third wave was booked at the bank"
    use_bank(wb, lambda inner: _GoneAfterBooking(inner, wb, on_call=0, gone=True))  # and it stays gone
    return run.run_id, gone


def _sim_ledger(wb: Workbench) -> set[str]:
    """The deals the simulated bank booked."""
    return {str(uuid.UUID(d)) for (d,) in query(wb, "SELECT deal_transaction_id FROM sim_ledger")}


def _by_deal(doubt: pd.DataFrame) -> dict[str, int]:
    return {str(uuid.UUID(d)): int(r) for d, r in zip(doubt["deal_transaction_id"], doubt["row"], strict=True)}


def test_bookings_the_bank_went_away_without_answering_are_settled_by_hand_and_the_run_cancelled(
    wb: Workbench, tmp_path: Path
) -> None:
    run_id, gone = _gone_after_booking(wb, tmp_path)
    error = wb.run_summary(run_id).error or ""
    n = len(gone.lost)
    assert "could not be reached" in error, error
    assert f"{n} booking(s) are in doubt (its answers never came)" in error, error
    assert "settle them by hand" in error
    doubt = wb.bookings_in_doubt(run_id)
    assert set(doubt["bank_status"]) == {"bank unreachable"}
    rows = _by_deal(doubt)
    assert set(rows) == set(gone.lost), "exactly the bookings whose answers never came"

    # The bank's dealers say which were booked (by phone: its API is gone for good).
    ledger = _sim_ledger(wb)
    booked = [r for d, r in rows.items() if d in ledger]
    not_booked = [r for d, r in rows.items() if d not in ledger]
    assert booked and not_booked
    settled = wb.settle_by_hand(run_id, booked=booked, not_booked=not_booked, note=NOTE)
    assert settled.status is RunStatus.INTERRUPTED, "trades never sent are still to execute"
    assert settled.error is not None and "resume it to execute them, or cancel it" in settled.error
    assert wb.bookings_in_doubt(run_id).empty
    asked = len(gone.status_asked)

    wb.cancel(run_id)  # nothing is in flight: no bank is asked
    cancelled = wb.run_summary(run_id)
    assert cancelled.status is RunStatus.CANCELLED, cancelled.error
    assert cancelled.error is None, "why it was INTERRUPTED no longer stands"
    assert len(gone.status_asked) == asked
    # A trade whose booking the bank refused (to be tried again) keeps that attempt, its quote and
    # its deal id; one never started has none.
    kept = query(
        wb,
        f"""SELECT t.attempts, i.attempt, t.quote_id, i.quote_id, t.deal_transaction_id, t.executing_at
            FROM run_trades t JOIN (SELECT * FROM run_inflight WHERE run_id = $1 {records.NEWEST_INFLIGHT}) i
              ON i.src_row = t.src_row
            WHERE t.run_id = $1 AND t.status = 'CANCELLED'""",
        run_id,
    )
    assert kept, "some bookings were refused, to be tried again, when the bank went away"
    for attempts, attempt, quote, sent_quote, deal, executing in kept:
        assert (attempts, quote) == (attempt, sent_quote) and deal and executing is not None
    never = query(wb, "SELECT attempts, deal_transaction_id FROM run_trades WHERE run_id = ? AND status = 'CANCELLED' "
                      "AND src_row NOT IN (SELECT src_row FROM run_inflight WHERE run_id = ?)", run_id, run_id)  # fmt: skip
    assert never and all(row == (0, None) for row in never)
    assert cancelled.counts["CANCELLED"] == cancelled.counts["PENDING"] + cancelled.counts["CANCELLED"] > 0
    assert_every_trade_final(wb, run_id)
    assert_ledger_matches_successes(wb, run_id)
    wb.engine.bank_factory = wb.engine._default_bank


def test_a_cancel_while_the_bank_is_still_gone_keeps_them_in_doubt_and_a_resume_settles_them_once_it_is_back(
    wb: Workbench, tmp_path: Path
) -> None:
    run_id, gone = _gone_after_booking(wb, tmp_path)
    wb.cancel(run_id)  # asks the bank first: it is still gone
    still = wb.run_summary(run_id)
    assert still.status is RunStatus.INTERRUPTED and "could not be reached" in (still.error or "")
    # Exactly the bookings the bank went away with: those it had refused (to be tried again) are
    # not in doubt, and need no bank to be cancelled.
    assert set(_by_deal(wb.bookings_in_doubt(run_id))) == set(gone.lost)

    wb.engine.bank_factory = wb.engine._default_bank  # the bank is back: its status settles them
    resumed = wb.resume(run_id)
    assert resumed.status in (RunStatus.COMPLETED, RunStatus.PARTIAL), resumed.error
    assert wb.bookings_in_doubt(run_id).empty
    assert_every_trade_final(wb, run_id)
    assert_ledger_matches_successes(wb, run_id)


def test_over_http_a_bank_gone_for_good_leaves_its_unanswered_bookings_to_settle_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The process died after the bank booked (the answers lost); then the bank's API went away.
    lost: list[str] = []
    with serve_docbank(client_secret=CLIENT_SECRET, password=PASSWORD) as gone:
        settings = settings_for(gone, tmp_path)
        wb = Workbench.open(settings=settings)
        default = wb.engine.bank_factory

        def dies_after_booking(config: RunConfig) -> Bank:
            made = default(config)
            book = made.book_deals

            def booked_then_died(batch: BookBatch, max_in_flight: int) -> BookReplies:
                book(batch, max_in_flight)
                lost.extend(str(uuid.UUID(d)) for d in batch.deal_txn_id.to_pylist())
                raise RuntimeError("the process died before the answers were recorded")

            made.book_deals = booked_then_died  # type: ignore[method-assign]
            return made

        wb.engine.bank_factory = dies_after_booking
        try:
            run = wb.run(load_batch(wb, tmp_path, 8), bank_url=gone.url, concurrency=4)
        finally:
            wb.close()
        ledger = gone.ledger_copy()
    assert run.status is RunStatus.INTERRUPTED and lost and set(ledger) == set(lost)
    with Workbench.open(settings=settings) as wb:
        assert wb.bookings_in_doubt(run.run_id).empty, "never asked about: a cancel or resume asks the bank first"
    # The bank is gone: its status cannot be asked (a 2 s window). The command line says the run
    # was not cancelled, and why, with a non-zero exit.
    for name, value in settings.model_dump(mode="json").items():
        if name.startswith("bank_") and value is not None:
            monkeypatch.setenv(f"FXBATCH_{name.upper()}", str(value))
    monkeypatch.setenv("FXBATCH_BANK_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("FXBATCH_BANK_PASSWORD", PASSWORD)
    capsys.readouterr()
    assert main(["--db", str(settings.db), "cancel", str(run.run_id)]) == 3  # stopped INTERRUPTED
    out, err = capsys.readouterr()
    assert f"Run {run.run_id} of batch" in out and "INTERRUPTED" in out and "  stopped: " in out
    assert f"error: run {run.run_id} is still INTERRUPTED, not cancelled: " in err and "settle them by hand" in err
    with Workbench.open(settings=settings) as wb:
        stopped = wb.run_summary(run.run_id)
        assert stopped.status is RunStatus.INTERRUPTED and "could not be reached" in (stopped.error or "")
        assert "settle them by hand" in (stopped.error or "")
        doubt = wb.bookings_in_doubt(run.run_id)
        assert set(_by_deal(doubt)) == set(lost) and set(doubt["bank_status"]) == {"bank unreachable"}
        summary = wb.settle_by_hand(run.run_id, booked=doubt["row"].tolist(), note=NOTE)
        assert summary.status is RunStatus.COMPLETED and summary.counts["SUCCESS"] == 8, summary.error
        booked = {str(uuid.UUID(d)) for (d,) in query(wb, "SELECT deal_transaction_id FROM run_trades "
                                                          "WHERE run_id = ? AND status = 'SUCCESS'", run.run_id)}  # fmt: skip
        assert booked == set(ledger)


class _RefusesThenGone(SpyBank):
    """Every booking of the first call is refused PRICE_MOVED (a reason to try again with a fresh
    quote), then the bank goes away at the next quote call."""

    def __init__(self, inner: SimulatedBank, wb: Workbench) -> None:
        super().__init__(inner, wb)
        self.quote_calls = 0

    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> QuoteReplies:
        self.quote_calls += 1
        if self.quote_calls >= 2:
            raise BankUnavailable("connection refused")
        return super().create_quotes(batch, max_in_flight)

    def book_deals(self, batch: BookBatch, max_in_flight: int) -> BookReplies:
        super().book_deals(batch, max_in_flight)  # recorded by the spy, then refused without booking
        n = len(batch)
        moved = REASON_INDEX[FailureCode.PRICE_MOVED.value]
        return BookReplies(np.full(n, 409, np.int64), np.full(n, moved, np.int8), np.full(n, None, object), None,
                           np.full(n, np.nan), np.zeros(n, bool))  # fmt: skip

    def transaction_status(
        self, deal_txn_ids: pa.Array, max_in_flight: int, run_id: int | None = None
    ) -> StatusReplies:
        raise AssertionError("a booking the bank refused is never asked about")


def test_a_refused_booking_needs_no_bank_to_cancel_and_its_retry_on_resume_is_a_new_attempt(
    wb: Workbench, tmp_path: Path
) -> None:
    batch = load_generated(wb, tmp_path, 6)
    use_bank(wb, lambda inner: _RefusesThenGone(inner, wb))
    run = wb.run(batch, seed=5, success_rate=1.0, chunk_size=10)
    assert run.status is RunStatus.INTERRUPTED and "could not be reached" in (run.error or "")
    assert wb.bookings_in_doubt(run.run_id).empty and "in doubt" not in (run.error or "")
    # The resume books each trade again at its next attempt (a fresh quote), then the process dies
    # before hearing back: those bookings are the bank's to settle, not a refused booking's replay.
    banks = use_bank(wb, lambda inner: DiesAfterBooking(inner, wb, on_call=1))
    assert wb.resume(run.run_id).status is RunStatus.INTERRUPTED
    assert {attempt for _, attempt, _ in banks[0].bookings} == {2}
    assert records.unsettled_bookings(wb.store.cursor(), run.run_id) == 6
    wb.engine.bank_factory = wb.engine._default_bank
    wb.cancel(run.run_id)  # asks the bank first: it booked them
    cancelled = wb.run_summary(run.run_id)
    assert cancelled.counts["SUCCESS"] == len(banks[0].booked_then_died) > 0
    assert_every_trade_final(wb, run.run_id)
    assert_ledger_matches_successes(wb, run.run_id)


def test_answers_the_bank_gave_are_kept_when_it_goes_away_before_its_status_is_asked(
    wb: Workbench, tmp_path: Path
) -> None:
    batch = load_generated(wb, tmp_path, 60)

    class StatusGone(SpyBank):
        """Half of the first wave's booking answers are lost, and GetTxnStatus cannot be reached."""

        def book_deals(self, batch: BookBatch, max_in_flight: int) -> BookReplies:
            got = super().book_deals(batch, max_in_flight)
            lost = np.arange(len(batch)) % 2 == 0
            got.ok[lost] = False
            got.reason_idx[lost] = REASON_INDEX[FailureCode.TIMEOUT_UNKNOWN.value]
            return got

        def transaction_status(self, ids: pa.Array, max_in_flight: int, run_id: int | None = None) -> StatusReplies:
            raise BankUnavailable("connection refused")

    banks = use_bank(wb, lambda inner: StatusGone(inner, wb))
    run = wb.run(batch, seed=5, success_rate=1.0, chunk_size=100)
    assert run.status is RunStatus.INTERRUPTED
    sent = len(banks[0].bookings)
    assert run.counts["SUCCESS"] == sent // 2, "the answers that came are kept"
    assert len(wb.bookings_in_doubt(run.run_id)) == sent - sent // 2
    assert f"{sent - sent // 2} booking(s) are in doubt" in (run.error or "")
