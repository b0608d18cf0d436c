"""A batch run end to end against a bank written from the bank's documentation alone (tests/docbank.py).

The fake was written from DOMAIN.md section 3 without reading fxbatch's client or simulator, so
passing here means the client agrees with the documentation, not merely with its own simulator:
the password grant, the documented payloads (64-bit quote ids beyond a float's precision), one
lost booking answer resolved by GetTxnStatus, the documented validation refusal shown on the
trade, and an answer that breaks the contract stopping the run resumably.
"""

from __future__ import annotations

import csv
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from fxbatch import Settings, Workbench
from fxbatch.engine import records
from fxbatch.engine.core import Engine
from fxbatch.errors import ConflictError
from fxbatch.models import RunStatus, RunSummary
from tests.docbank import FIRST_QUOTE_ID, ApiRequest, DocBank, serve_docbank
from tests.integration.api_helpers import serve_api
from tests.integration.run_helpers import assert_every_trade_final, query

REFUSED_CIF = "700000001"
CLIENT_SECRET, PASSWORD = "docbank-client-s3cret", "docbank-dealer-pa55"
PAIRS = ("USD/ZAR", "EUR/ZAR", "GBP/ZAR")


@pytest.fixture(scope="module")
def docbank() -> Iterator[DocBank]:
    with serve_docbank(refuse_cifs={REFUSED_CIF}, client_secret=CLIENT_SECRET, password=PASSWORD) as bank:
        yield bank


@pytest.fixture
def bank(docbank: DocBank) -> DocBank:
    docbank.reset()
    docbank.refuse_cifs = {REFUSED_CIF}
    return docbank


def settings_for(bank: DocBank, tmp_path: Path) -> Settings:
    return Settings(
        db=tmp_path / "client.duckdb", bank_token_url=bank.token_url, bank_grant="password",
        bank_client_id=bank.client_id, bank_client_secret=SecretStr(CLIENT_SECRET), bank_username=bank.username,
        bank_password=SecretStr(PASSWORD), bank_scope=bank.scope, bank_user_id="dealer@desk.example",
        bank_unreachable_window_s=2.0, bank_timeout_s=5.0,
    )  # fmt: skip


def load_batch(wb: Workbench, tmp_path: Path, n: int = 24) -> int:
    path = tmp_path / "orders.csv"
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["trade_id", "client_cif", "account_number", "currency_pair", "side", "amount", "spread_pips"])
        for i in range(n):
            cif = REFUSED_CIF if i == 5 else f"{100000000 + i}"
            out.writerow([f"T{i}", cif, f"{4000000000 + i}", PAIRS[i % 3], "BUY" if i % 2 else "SELL",
                          f"{10000 + 250 * i}.00", 75])  # fmt: skip
    return wb.load(path).batch_id  # type: ignore[return-value]


def test_a_run_against_the_documented_bank_books_resolves_a_lost_answer_and_shows_the_refusal(
    bank: DocBank, tmp_path: Path
) -> None:
    bank.lose_booking_answers = 1
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        batch = load_batch(wb, tmp_path)
        run = wb.run(batch, bank_url=bank.url, concurrency=4)
        assert run.status is RunStatus.PARTIAL, run.error
        assert run.counts["SUCCESS"] == 23 and run.counts["FAILED"] == 1
        assert_every_trade_final(wb, run.run_id)
        failed = query(wb, "SELECT t.client_cif, r.failure_code, r.failure_message FROM run_trades r JOIN trades t "
                           "ON t.batch_id = ? AND t.src_row = r.src_row WHERE r.run_id = ? AND r.status = 'FAILED'",
                       batch, run.run_id)  # fmt: skip
        assert len(failed) == 1
        cif, code, message = failed[0]
        assert (cif, code) == (REFUSED_CIF, "BANK_VALIDATION")
        assert "cifNo: INVALID CIF NUMBER" in message
        booked = query(wb, "SELECT deal_transaction_id, quote_id, deal_rate FROM run_trades "
                           "WHERE run_id = ? AND status = 'SUCCESS'", run.run_id)  # fmt: skip
    ledger = bank.ledger_copy()
    # One deal per SUCCESS, under the run's UUID, with the exact 64-bit quote id and the rate sent.
    assert {str(uuid.UUID(d)) for d, _, _ in booked} == set(ledger)
    for deal, quote_id, rate in booked:
        assert ledger[deal].quote_id == quote_id and quote_id >= FIRST_QUOTE_ID
        assert ledger[deal].deal_rate == pytest.approx(rate)
    lost = [r for r in bank.requests("bookquoteddeal") if not r.answered]
    assert len(lost) == 1
    asked = [r.body["transactionID"] for r in bank.requests("GetTxnStatus")]
    assert lost[0].body["trade"]["dealTransactionID"] in asked, "the lost answer is resolved by GetTxnStatus"
    assert len(bank.requests("bookquoteddeal")) == 23, "and not booked again"
    tokens = bank.tokens()
    assert tokens and tokens[0].grant_type == "password" and tokens[0].ok
    for request in bank.requests():
        assert not [h for h in request.headers if h.startswith("x-fxbatch")]
        assert request.body["header"]["userId"] == "dealer@desk.example"


def test_an_answer_that_breaks_the_contract_interrupts_the_run_and_resume_finishes_it(
    bank: DocBank, tmp_path: Path
) -> None:
    bank.break_contract["createquote"] = (
        b'{"header":{"transactionId":"x"},"result":{"resultCode":0},'
        b'"payload":{"quoteExpiryDateTime":"2026-12-01T10:00:00Z","quoteRate":18.0}}'
    )
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        batch = load_batch(wb, tmp_path)
        run = wb.run(batch, bank_url=bank.url, concurrency=4)
        assert run.status is RunStatus.INTERRUPTED
        assert run.error is not None and "createquote" in run.error and "payload.quoteId" in run.error
        assert run.counts["FAILED"] == 0, "a broken answer is not the trades' failure"
        resumed = wb.resume(run.run_id, bank_url=bank.url)
        assert resumed.status is RunStatus.PARTIAL
        assert resumed.counts["SUCCESS"] == 23
        assert_every_trade_final(wb, run.run_id)
        booked = {r[0] for r in query(wb, "SELECT deal_transaction_id FROM run_trades "
                                          "WHERE run_id = ? AND status = 'SUCCESS'", run.run_id)}  # fmt: skip
    assert booked == set(bank.ledger_copy())


def test_wrong_credentials_stop_the_run_before_any_trade_with_the_providers_error(
    bank: DocBank, tmp_path: Path
) -> None:
    settings = settings_for(bank, tmp_path).model_copy(update={"bank_password": SecretStr("not-the-password")})
    with Workbench.open(settings=settings) as wb:
        batch = load_batch(wb, tmp_path, 3)
        with pytest.raises(Exception) as info:
            wb.run(batch, bank_url=bank.url)
        message = str(info.value)
        assert "invalid_grant" in message and "FXBATCH_BANK_PASSWORD" in message
        assert "not-the-password" not in message and CLIENT_SECRET not in message
        assert not bank.requests()


class _PendingFirst:
    """GetTxnStatus answers PENDING for a deal whose booking answer was lost, for its first
    ``asks`` status requests; COMPLETED after (the bank's books catch up). Iterated by the fake
    once per status request, under its lock: reads its records directly."""

    def __init__(self, bank: DocBank, asks: int) -> None:
        self.bank, self.asks, self.seen = bank, asks, 0

    def __iter__(self) -> Iterator[str]:
        self.seen += 1
        if self.seen <= self.asks:
            for r in self.bank.api_requests:
                if r.operation == "bookquoteddeal" and not r.answered:
                    yield r.body["trade"]["dealTransactionID"]


class _PendingWhile:
    """GetTxnStatus answers PENDING for a deal whose booking answer was lost while ``pending``
    is set (the bank's books have not caught up); COMPLETED after. ``asked`` is set once the
    bank was asked about such a deal."""

    def __init__(self, bank: DocBank) -> None:
        self.bank, self.pending, self.asked = bank, True, threading.Event()

    def __iter__(self) -> Iterator[str]:
        if self.pending:
            for r in self.bank.api_requests:
                if r.operation == "bookquoteddeal" and not r.answered:
                    self.asked.set()
                    yield r.body["trade"]["dealTransactionID"]


def _lose_one_booking_answer(bank: DocBank) -> _PendingWhile:
    """The next booking's answer is lost, and its status stays PENDING until ``pending`` is cleared."""
    bank.lose_booking_answers = 1
    pending = _PendingWhile(bank)
    bank.pending_ids = pending  # type: ignore[assignment]
    return pending


def _run_in_doubt(wb: Workbench, bank: DocBank, tmp_path: Path) -> RunSummary:
    """A run of 8 trades, after ``_lose_one_booking_answer``: it ends INTERRUPTED, its lost booking in doubt."""
    run = wb.run(load_batch(wb, tmp_path, 8), bank_url=bank.url, concurrency=4)
    assert run.status is RunStatus.INTERRUPTED, run.error
    return run


def _lost_deal(bank: DocBank) -> str:
    lost = [r for r in bank.requests("bookquoteddeal") if not r.answered]
    assert len(lost) == 1
    return str(lost[0].body["trade"]["dealTransactionID"])


def _assert_ledger_is_the_runs_successes(wb: Workbench, bank: DocBank, run_id: int) -> None:
    """Every deal the bank booked is a SUCCESS of the run with the quote the bank booked, and
    every SUCCESS is one booked deal."""
    booked = query(wb, "SELECT deal_transaction_id, quote_id FROM run_trades WHERE run_id = ? "
                       "AND status = 'SUCCESS'", run_id)  # fmt: skip
    ledger = bank.ledger_copy()
    assert ledger and {str(uuid.UUID(d)): q for d, q in booked} == {d: deal.quote_id for d, deal in ledger.items()}


def test_a_booking_pending_for_a_while_is_settled_in_the_run_with_the_quote_the_bank_booked(
    bank: DocBank, tmp_path: Path
) -> None:
    bank.lose_booking_answers = 1
    # PENDING for more asks than the client's first round of status polls: settled by the
    # worker asking again once the booking call is over.
    bank.pending_ids = _PendingFirst(bank, 10)  # type: ignore[assignment]
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        batch = load_batch(wb, tmp_path, 8)
        run = wb.run(batch, bank_url=bank.url, concurrency=4)
        assert run.status is RunStatus.PARTIAL, run.error
        assert run.counts["SUCCESS"] == 7
        _assert_ledger_is_the_runs_successes(wb, bank, run.run_id)
    deal = _lost_deal(bank)
    assert [r.body["trade"]["dealTransactionID"] for r in bank.requests("bookquoteddeal")].count(deal) == 1


def test_a_booking_that_lands_after_the_bank_said_it_had_none_is_recorded_with_the_quote_it_booked(
    bank: DocBank, tmp_path: Path
) -> None:
    # The first booking is stuck on its way: no answer to it or its resends, and GetTxnStatus says
    # the bank has no such deal, so the trade is quoted again. Its stuck booking lands just before
    # the second try's, which the bank refuses as a duplicate deal id; its status says COMPLETED.
    bank.hold_bookings = 1
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        batch = load_batch(wb, tmp_path, 8)
        run = wb.run(batch, bank_url=bank.url, concurrency=4)
        assert run.status is RunStatus.PARTIAL, run.error
        assert run.counts["SUCCESS"] == 7
        deals = bank.requests("bookquoteddeal")
        deal = deals[0].body["trade"]["dealTransactionID"]
        sent = [r.body["trade"] for r in deals if r.body["trade"]["dealTransactionID"] == deal]
        first, second = sent[0], sent[-1]
        assert first["quoteID"] != second["quoteID"]
        refused = [r for r in deals if r.body["trade"] == second]
        assert json.loads(refused[-1].response)["result"]["resultReasonCode"] == "DUPLICATE_TRANSACTION"
        (row,) = query(wb, "SELECT quote_id, quote_rate, deal_rate, attempts FROM run_trades "
                           "WHERE run_id = ? AND lower(deal_transaction_id) = ?", run.run_id, deal)  # fmt: skip
        _assert_ledger_is_the_runs_successes(wb, bank, run.run_id)
    booked = bank.ledger_copy()[deal]
    # The deal is the first try's: its quote, the bank's rate and the client's rate it was sent with.
    assert (row[0], row[1], row[2]) == (first["quoteID"], booked.quote_rate, pytest.approx(first["dealRate"]))
    assert booked.quote_id == first["quoteID"] and row[3] == 2
    # The second try's quote, which the bank holds open, is released; the first stays booked.
    assert second["quoteID"] in bank.cancelled_quotes and first["quoteID"] not in bank.cancelled_quotes


def test_a_run_cancelled_before_a_lost_booking_is_sent_again_keeps_its_deal_id_on_the_trade(
    bank: DocBank, tmp_path: Path
) -> None:
    # The first booking is stuck on its way (the bank says it has no such deal), and the run is
    # cancelled while the trade's next quote is asked for. The stuck booking may still land: the
    # CANCELLED trade keeps the deal id it was sent under, so the bank's ledger can be matched to it.
    bank.hold_bookings = 1
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        job = wb.start_run(load_batch(wb, tmp_path, 8), bank_url=bank.url, concurrency=4)

        def cancel_at_the_next_quote(request: ApiRequest) -> None:
            held = {quote.cif for quote, _, _ in bank.held.values()}
            if request.operation == "createquote" and request.body["customer"]["cifNo"] in held:
                bank.before_answer = None
                wb.cancel(job.run_id, wait=False)

        bank.before_answer = cancel_at_the_next_quote
        assert job.wait(60)
        run = wb.run_summary(job.run_id)
        assert run.status is RunStatus.CANCELLED, run.error
        assert (run.counts["SUCCESS"], run.counts["CANCELLED"], run.counts["FAILED"]) == (6, 1, 1)
        (deal,) = bank.held
        (row,) = query(wb, "SELECT status, lower(deal_transaction_id) FROM run_trades WHERE run_id = ? "
                           "AND status = 'CANCELLED'", job.run_id)  # fmt: skip
        assert row == ("CANCELLED", deal)
    retry_quote = [r for r in bank.requests("createquote") if r.body["customer"]["cifNo"] == bank.held[deal][0].cif][-1]
    assert json.loads(retry_quote.response)["payload"]["quoteId"] in bank.cancelled_quotes


def test_a_booking_still_pending_interrupts_the_run_unbooked_and_resume_settles_it(
    bank: DocBank, tmp_path: Path
) -> None:
    pending = _lose_one_booking_answer(bank)
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        # Neither booked again with a fresh quote (the bank may yet book the first) nor failed.
        run = _run_in_doubt(wb, bank, tmp_path)
        assert run.error is not None and "1 booking(s) still PENDING" in run.error and "resume" in run.error
        deal = _lost_deal(bank)
        assert [r.body["trade"]["dealTransactionID"] for r in bank.requests("bookquoteddeal")].count(deal) == 1
        assert run.counts["SUCCESS"] == 6 and run.counts["FAILED"] == 1
        assert not query(wb, "SELECT 1 FROM run_trades WHERE run_id = ? AND lower(deal_transaction_id) = ? "
                             "AND status IN ('SUCCESS', 'FAILED')", run.run_id, deal)  # fmt: skip
        # Still PENDING on resume: asked about again, not booked again, the run stays INTERRUPTED.
        again = wb.resume(run.run_id, bank_url=bank.url)
        assert again.status is RunStatus.INTERRUPTED and "1 booking(s) still PENDING" in (again.error or "")
        assert len(bank.requests("bookquoteddeal")) == 7
        pending.pending = False  # the bank's books catch up
        resumed = wb.resume(run.run_id, bank_url=bank.url)
        assert resumed.status is RunStatus.PARTIAL, resumed.error
        assert resumed.counts["SUCCESS"] == 7
        assert_every_trade_final(wb, run.run_id)
        _assert_ledger_is_the_runs_successes(wb, bank, run.run_id)
    assert len(bank.requests("bookquoteddeal")) == 7


def test_cancelling_a_run_interrupted_with_a_booking_in_doubt_asks_the_bank_first(
    bank: DocBank, tmp_path: Path
) -> None:
    pending = _lose_one_booking_answer(bank)
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        run = _run_in_doubt(wb, bank, tmp_path)
        # Still PENDING: cancelling cannot say the trade was not booked, so the run stays INTERRUPTED.
        wb.cancel(run.run_id)
        again = wb.run_summary(run.run_id)
        assert again.status is RunStatus.INTERRUPTED and "1 booking(s) still PENDING" in (again.error or "")
        pending.pending = False
        wb.cancel(run.run_id)
        cancelled = wb.run_summary(run.run_id)
        assert cancelled.status is RunStatus.CANCELLED
        assert cancelled.counts["SUCCESS"] == 7 and cancelled.counts["FAILED"] == 1
        assert_every_trade_final(wb, run.run_id)
        _assert_ledger_is_the_runs_successes(wb, bank, run.run_id)
    assert len(bank.requests("bookquoteddeal")) == 7 and not bank.requests("createquote")[8:]


class _HeldPending:
    """GetTxnStatus of the lost deal waits for ``release`` (the bank is slow to say), then finds
    it booked. ``asked`` is set once the bank is asked."""

    def __init__(self) -> None:
        self.asked, self.release = threading.Event(), threading.Event()

    def __iter__(self) -> Iterator[str]:
        self.asked.set()
        assert self.release.wait(60), "never released"
        return iter(())


def test_cancelling_over_http_answers_at_once_while_the_bank_is_asked_about_a_booking_in_doubt(
    bank: DocBank, tmp_path: Path
) -> None:
    _lose_one_booking_answer(bank)
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        run = _run_in_doubt(wb, bank, tmp_path)
        held = _HeldPending()
        bank.pending_ids = held  # type: ignore[assignment]
        with serve_api(wb) as url, httpx.Client(base_url=f"{url}/api/v1", timeout=60) as api:
            # Answered while the bank has not said yet (the status call is held): RUNNING, with progress.
            answer = api.post(f"/runs/{run.run_id}/cancel")
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "RUNNING" and answer.json()["progress"] is not None
            assert held.asked.wait(60)
            held.release.set()
            final = wb.engine.wait(run.run_id, 60)
        assert final.status is RunStatus.CANCELLED and final.counts["SUCCESS"] == 7, final.error
        assert_every_trade_final(wb, run.run_id)
        _assert_ledger_is_the_runs_successes(wb, bank, run.run_id)


@pytest.fixture
def second_bank(bank: DocBank) -> Iterator[DocBank]:
    """Another address of the bank's API, with the same identity provider (tokens of one serve both)."""
    with serve_docbank(refuse_cifs={REFUSED_CIF}, client_secret=CLIENT_SECRET, password=PASSWORD) as other:
        other._access_tokens = bank._access_tokens
        yield other


def test_a_run_goes_on_with_the_bank_it_was_resumed_against_and_never_moves_a_booking_in_doubt(
    bank: DocBank, second_bank: DocBank, tmp_path: Path
) -> None:
    second_bank.break_contract["createquote"] = b"not json"  # the run's first address: INTERRUPTED, nothing booked
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        batch = load_batch(wb, tmp_path, 8)
        run = wb.run(batch, bank_url=second_bank.url, concurrency=4)
        assert run.status is RunStatus.INTERRUPTED and not second_bank.ledger_copy()
        # Nothing in flight at the first address: the run may go on elsewhere.
        pending = _lose_one_booking_answer(bank)
        again = wb.resume(run.run_id, bank_url=bank.url)
        assert again.status is RunStatus.INTERRUPTED and again.config.bank_url == bank.url
        deal = _lost_deal(bank)
        # A booking in doubt there: another address may not book it again; the simulated bank never takes
        # a run of real orders on.
        with pytest.raises(ConflictError, match=r"1 booking\(s\) asked of the HTTP bank at .* never answered"):
            wb.resume(run.run_id, bank_url=second_bank.url)
        with pytest.raises(ConflictError, match="cannot go on at the simulated bank"):
            wb.resume(run.run_id, bank_url="")
        # Cancel asks the bank the run went on with (not its first address) and cancels nothing it may have.
        wb.cancel(run.run_id)
        assert wb.run_summary(run.run_id).status is RunStatus.INTERRUPTED
        assert not second_bank.requests("GetTxnStatus") and bank.requests("GetTxnStatus")
        assert not query(wb, "SELECT 1 FROM run_trades WHERE run_id = ? AND status = 'CANCELLED'", run.run_id)
        # The bank catches up: a resume without an address settles it there. Every other trade was
        # final when the cancel came, so none is CANCELLED: the trades decide; the old error is gone.
        pending.pending = False
        done = wb.resume(run.run_id)
        assert done.status is RunStatus.PARTIAL and done.error is None
        assert done.counts["SUCCESS"] == 7 and done.counts["FAILED"] == 1
        assert_every_trade_final(wb, run.run_id)
        _assert_ledger_is_the_runs_successes(wb, bank, run.run_id)
    assert [r.body["trade"]["dealTransactionID"] for r in bank.requests("bookquoteddeal")].count(deal) == 1
    assert not second_bank.requests("bookquoteddeal")


def test_a_resumed_trade_quoted_again_is_settled_with_the_quote_its_deal_was_last_sent_with(
    bank: DocBank, tmp_path: Path
) -> None:
    # The first wave (one round: one trade) books whole; the next wave's first booking breaks, and,
    # one at a time, the rest of its bookings are never sent.
    bank.break_contract["bookquoteddeal"] = b"not json"
    bank.break_after["bookquoteddeal"] = 1
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        batch = load_batch(wb, tmp_path, 8)
        run = wb.run(batch, bank_url=bank.url, concurrency=1)
        assert run.status is RunStatus.INTERRUPTED
        # On resume the bank has none of those deals: each is quoted again under the same attempt
        # (two in-flight rows), and one booking is left in doubt.
        pending = _lose_one_booking_answer(bank)
        assert wb.resume(run.run_id, bank_url=bank.url).status is RunStatus.INTERRUPTED
        tied = query(wb, "SELECT src_row FROM run_inflight WHERE run_id = ? GROUP BY src_row, attempt "
                         "HAVING count(*) > 1", run.run_id)  # fmt: skip
        assert len(tied) >= 5
        pending.pending = False
        assert wb.resume(run.run_id, bank_url=bank.url).status is RunStatus.PARTIAL
        _assert_ledger_is_the_runs_successes(wb, bank, run.run_id)


class _Reached:
    """A lock that tells when the thread named ``by`` first reaches for it."""

    def __init__(self, lock: threading.Lock, by: str) -> None:
        self.lock, self.by, self.reached = lock, by, threading.Event()

    def __enter__(self) -> bool:
        if threading.current_thread().name == self.by:
            self.reached.set()
        return self.lock.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__(*exc)  # type: ignore[arg-type]


def test_a_resume_started_while_a_cancel_writes_waits_and_finds_the_run_cancelled(
    bank: DocBank, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank.break_contract["createquote"] = b"not json"
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        batch = load_batch(wb, tmp_path, 8)
        run = wb.run(batch, bank_url=bank.url, concurrency=4)
        assert run.status is RunStatus.INTERRUPTED
        bank.break_contract.clear()
        reading, resumed = threading.Event(), threading.Event()
        outcome: list[object] = []
        real = records.load_todo
        registry = _Reached(Engine._registry_lock, "resumer")
        monkeypatch.setattr(Engine, "_registry_lock", registry)

        def resume() -> None:
            try:
                outcome.append(wb.start_resume(run.run_id, bank_url=bank.url).wait())
            except ConflictError as exc:
                outcome.append(exc)
            resumed.set()

        def cancel_reads(*args: object, **kwargs: object) -> object:
            todo = real(*args, **kwargs)  # type: ignore[arg-type]
            if threading.current_thread().name == "canceller" and not reading.is_set():
                reading.set()
                threading.Thread(target=resume, name="resumer").start()
                # The resume reaches for the engine's registry lock: let in now, it would book what
                # this cancel is about to write CANCELLED.
                assert registry.reached.wait(60)
            return todo

        monkeypatch.setattr(records, "load_todo", cancel_reads)
        canceller = threading.Thread(target=wb.cancel, args=(run.run_id,), name="canceller")
        canceller.start()
        canceller.join(60)
        assert resumed.wait(60)
        assert isinstance(outcome[0], ConflictError) and "CANCELLED" in str(outcome[0])
        final = wb.run_summary(run.run_id)
        assert final.status is RunStatus.CANCELLED and final.counts["CANCELLED"] == 8
        assert not query(wb, "SELECT src_row FROM run_trades WHERE run_id = ? GROUP BY src_row HAVING count(*) > 1",
                         run.run_id)  # fmt: skip
    assert not bank.requests("bookquoteddeal")


def test_a_run_cancelled_while_a_booking_was_in_doubt_ends_cancelled_once_the_bank_settles_it(
    bank: DocBank, tmp_path: Path
) -> None:
    pending = _lose_one_booking_answer(bank)
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        batch = load_batch(wb, tmp_path, 40)
        job = wb.start_run(batch, bank_url=bank.url, concurrency=1)
        assert pending.asked.wait(60), "the booking whose answer is lost was never asked about"
        wb.cancel(job.run_id)  # while the bank still has it PENDING
        job.wait(60)
        stopped = wb.run_summary(job.run_id)
        assert stopped.status is RunStatus.INTERRUPTED and stopped.counts["CANCELLED"] > 0
        pending.pending = False
        done = wb.resume(job.run_id)
        assert done.status is RunStatus.CANCELLED and done.error is None
        assert done.counts["CANCELLED"] == stopped.counts["CANCELLED"] and done.counts["PENDING"] == 0
        _assert_ledger_is_the_runs_successes(wb, bank, job.run_id)


def test_a_batch_sent_to_an_http_bank_is_never_deleted_with_its_runs(bank: DocBank, tmp_path: Path) -> None:
    with Workbench.open(settings=settings_for(bank, tmp_path)) as wb:
        batch = load_batch(wb, tmp_path, 4)
        wb.run(batch)  # the simulated bank first: deletable so far
        real = wb.run(batch, bank_url=bank.url)
        with pytest.raises(ConflictError, match=rf"Batch {batch} was sent to an HTTP bank \(run {real.run_id}\)"):
            wb.delete_batch(batch)
        assert wb.run_summary(real.run_id).counts["SUCCESS"] == len(bank.ledger_copy()) > 0
        assert len(wb.runs(batch)) == 2
        other = load_batch(wb, tmp_path, 4)
        wb.run(other)
        wb.delete_batch(other)
        assert other not in [b.batch_id for b in wb.batches()]
        # A run older versions let go on at the simulated bank had its stored bank rewritten: its
        # real deals (ones the simulated bank never made) still keep the batch.
        wb.store.cursor().execute("UPDATE runs SET config = json_object('seed', 1) WHERE run_id = ?", [real.run_id])
        with pytest.raises(ConflictError, match=rf"Batch {batch} was sent to an HTTP bank \(run {real.run_id}\)"):
            wb.delete_batch(batch)
