"""The in-process simulated bank against an in-memory store: every failure path of the port."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fxbatch.bank.latency import SlotClock
from fxbatch.bank.model import REASON_INDEX, BankModel, trade_keys
from fxbatch.bank.port import BookBatch, QuoteBatch, QuoteReplies, Replies
from fxbatch.bank.simulated import _PY_HASH_MAX, SimulatedBank, duckdb_hash
from fxbatch.models import FAILURES, BankSettings, FailureCode
from fxbatch.store import Store

FINGERPRINT = "3b5d5c3712955042212316173ccf37be800900000000000000000000000000aa"
MIDS = {"USD/ZAR": 18.0, "EUR/ZAR": 19.5}
F = FailureCode


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store(None)
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_bank(
    store: Store, clock: FakeClock | None = None, sleep: FakeSleep | None = None, **settings: object
) -> SimulatedBank:
    """A simulated bank; by default every valid trade succeeds and nothing is transient."""
    values: dict[str, object] = {"success_rate": 1.0, "transient_absorb_share": 0.0}
    values.update(settings)
    return SimulatedBank(
        store,
        BankSettings.model_validate(values),
        seed=42,
        mids=MIDS,
        clock=clock or FakeClock(),
        sleep=sleep or FakeSleep(),
    )


def quote_batch(
    n: int = 3,
    *,
    rows: Sequence[int] | None = None,
    pair: str | Sequence[str] = "USD/ZAR",
    side: str | Sequence[str] = "BUY",
    amount_zar: float | Sequence[float] = 1000.0,
    cif: str | Sequence[str] = "0123456789",
    account: str | Sequence[str] = "0012345678",
    attempt: int = 1,
) -> QuoteBatch:
    """createquote requests for ``n`` trades (spreadsheet rows 2.. unless ``rows`` are given)."""
    src = np.asarray(rows if rows is not None else range(2, n + 2), dtype=np.int64)
    n = len(src)

    def col(value: object) -> list[object]:
        return list(value) if isinstance(value, list | tuple) else [value] * n

    pairs, sides = col(pair), col(side)
    names, codes = np.unique(np.array(pairs, dtype=object), return_inverse=True)
    trades = pa.table(
        {
            "trade_id": [f"T{r}" for r in src],
            "client_cif": col(cif),
            "account_number": col(account),
            "currency_pair": pairs,
            "side": sides,
            "amount_currency": ["ZAR"] * n,
            "delivery": ["SPOT"] * n,
            "value_date": ["20261202"] * n,
        }
    )
    amounts = np.array(col(amount_zar), dtype=np.float64)
    return QuoteBatch(
        trade_key=trade_keys(FINGERPRINT, src),
        step=src,
        attempt=np.full(n, attempt, dtype=np.int64),
        amount=amounts,
        amount_zar=amounts,
        is_buy=np.array([s == "BUY" for s in sides]),
        pair_code=codes.astype(np.int64),
        pair_names=names,
        trades=trades,
    )


def book_batch(
    quotes: QuoteBatch,
    replies: QuoteReplies,
    *,
    deal_ids: Sequence[str] | None = None,
    deal_rate: np.ndarray | None = None,
    run_id: int = 1,
) -> BookBatch:
    """bookquoteddeal requests for every quote in ``replies`` (deal ids D<row> unless given)."""
    src = quotes.step
    ids = list(deal_ids) if deal_ids is not None else [f"D{r}" for r in src]
    return BookBatch(
        quote_id=replies.quote_id,
        deal_txn_id=pa.array(ids, type=pa.string()),
        quote_rate=replies.quote_rate,
        deal_rate=replies.quote_rate.copy() if deal_rate is None else deal_rate,
        trade_key=quotes.trade_key,
        attempt=quotes.attempt,
        trade_id=pa.array([f"T{r}" for r in src]),
        run_id=run_id,
        batch_id=1,
        src_row=src,
    )


def ledger(store: Store) -> list[tuple[str, int]]:
    return store.cursor().execute("SELECT deal_transaction_id, run_id FROM sim_ledger ORDER BY 1").fetchall()


def reasons(replies: Replies) -> list[str | None]:
    return list(replies.reason)


def keys_with(settings: BankSettings, want: FailureCode, *, transient: bool, n: int = 2000) -> list[int]:
    """Spreadsheet rows whose fate (or first-attempt transient error) is ``want`` under seed 42."""
    rows = np.arange(2, n + 2)
    fates = BankModel(42, settings).fates(trade_keys(FINGERPRINT, rows))
    picked = fates.transient if transient else fates.reason
    found = rows[picked == REASON_INDEX[want.value]]
    assert len(found), f"no row fated to {want} in {n}"
    return [int(r) for r in found[:3]]


# -- quotes ----------------------------------------------------------------------------------------


def test_a_quote_prices_the_trade_at_the_banks_mid_without_the_desks_spread_and_expires_after_the_ttl(
    store: Store, clock: FakeClock
) -> None:
    bank = make_bank(store, clock, quote_ttl_s=30)
    q = quote_batch(4, side=["BUY", "SELL", "BUY", "SELL"])
    r = bank.create_quotes(q, 16)
    assert r.ok.all()
    assert (r.quote_id > 0).all() and len(set(r.quote_id)) == 4
    mid = bank.walk.mid(q.pair, q.step)
    np.testing.assert_array_equal(r.quote_rate, mid)
    np.testing.assert_allclose(r.expires_at, clock.now + 30)
    assert r.envelope(0)["result"] == {"resultCode": 0, "resultMsg": "Success"}


def test_the_same_trade_and_attempt_get_the_same_quote_from_a_fresh_bank(store: Store) -> None:
    first = make_bank(store).create_quotes(quote_batch(5), 16)
    again = make_bank(store).create_quotes(quote_batch(5), 16)
    np.testing.assert_array_equal(first.quote_id, again.quote_id)
    np.testing.assert_array_equal(first.quote_rate, again.quote_rate)
    retry = make_bank(store).create_quotes(quote_batch(5, attempt=2), 16)
    assert not np.any(retry.quote_id == first.quote_id)


def test_a_pair_without_a_rate_is_refused_as_currency_not_supported(store: Store) -> None:
    r = make_bank(store).create_quotes(quote_batch(2, pair=["USD/ZAR", "XAU/ZAR"]), 16)
    assert reasons(r) == [None, "CURRENCY_NOT_SUPPORTED"]
    assert r.quote_id[1] == 0 and np.isnan(r.quote_rate[1])
    env = r.envelope(1)["result"]
    assert env["resultReasonCode"] == "CURRENCY_NOT_SUPPORTED"
    assert env["resultCode"] == FAILURES[F.CURRENCY_NOT_SUPPORTED].result_code > 0
    assert env["resultMsg"] == FAILURES[F.CURRENCY_NOT_SUPPORTED].message


def test_a_quote_stage_fate_fails_the_quote_on_every_attempt(store: Store) -> None:
    settings = BankSettings(success_rate=0.0, failure_mix={F.MARKET_CLOSED: 1.0})
    bank = SimulatedBank(store, settings, 42, MIDS, clock=FakeClock(), sleep=FakeSleep())
    for attempt in (1, 2, 3):
        assert reasons(bank.create_quotes(quote_batch(3, attempt=attempt), 16)) == ["MARKET_CLOSED"] * 3


def test_a_transient_quote_error_hits_the_first_attempt_only(store: Store) -> None:
    settings = BankSettings(
        success_rate=0.5, failure_mix={F.RATE_UNAVAILABLE: 1.0, F.INSUFFICIENT_FUNDS: 1.0}, transient_absorb_share=0.9
    )
    rows = keys_with(settings, F.RATE_UNAVAILABLE, transient=True)
    bank = SimulatedBank(store, settings, 42, MIDS, clock=FakeClock(), sleep=FakeSleep())
    assert reasons(bank.create_quotes(quote_batch(rows=rows), 16)) == ["RATE_UNAVAILABLE"] * len(rows)
    assert bank.create_quotes(quote_batch(rows=rows, attempt=2), 16).ok.all()


# -- booking -----------------------------------------------------------------------------------------


def test_a_booking_records_the_deal_in_the_ledger(store: Store) -> None:
    bank = make_bank(store)
    q = quote_batch(3)
    quotes = bank.create_quotes(q, 16)
    b = bank.book_deals(book_batch(q, quotes, run_id=5), 16)
    assert b.ok.all()
    np.testing.assert_array_equal(b.deal_rate, quotes.quote_rate)
    assert ledger(store) == [("D2", 5), ("D3", 5), ("D4", 5)]


def test_a_booking_repeated_with_the_same_deal_id_books_once_and_answers_the_same_rate(store: Store) -> None:
    bank = make_bank(store)
    q = quote_batch(2)
    quotes = bank.create_quotes(q, 16)
    first = bank.book_deals(book_batch(q, quotes), 16)
    # the retry carries a slightly different (still acceptable) rate: the booked deal wins
    nudged = quotes.quote_rate * (1 + 1e-5)
    again = bank.book_deals(book_batch(q, quotes, deal_rate=nudged), 16)
    assert first.ok.all() and again.ok.all()
    np.testing.assert_array_equal(again.deal_rate, first.deal_rate)
    assert ledger(store) == [("D2", 1), ("D3", 1)]


def test_a_repeated_booking_succeeds_even_after_its_quote_has_expired(store: Store, clock: FakeClock) -> None:
    bank = make_bank(store, clock, quote_ttl_s=1)
    q = quote_batch(1)
    quotes = bank.create_quotes(q, 16)
    assert bank.book_deals(book_batch(q, quotes), 16).ok.all()
    clock.advance(60)
    assert bank.book_deals(book_batch(q, quotes), 16).ok.all()
    assert len(ledger(store)) == 1


def test_a_restarted_bank_finds_the_deals_booked_before_and_books_none_twice(store: Store) -> None:
    q = quote_batch(2)
    first_bank = make_bank(store)
    quotes = first_bank.create_quotes(q, 16)
    booked = first_bank.book_deals(book_batch(q, quotes), 16)
    second_bank = make_bank(store)  # a new process: only the ledger table survives
    again = second_bank.book_deals(book_batch(q, quotes), 16)
    assert again.ok.all()
    np.testing.assert_array_equal(again.deal_rate, booked.deal_rate)
    assert len(ledger(store)) == 2


def test_one_deal_id_twice_in_the_same_call_is_booked_once(store: Store) -> None:
    bank = make_bank(store)
    q = quote_batch(rows=[2, 2])
    quotes = bank.create_quotes(q, 16)
    replies = bank.book_deals(book_batch(q, quotes, deal_ids=["D2", "D2"]), 16)
    assert replies.ok.all()
    assert ledger(store) == [("D2", 1)]


def test_booking_after_the_quote_expired_fails_quote_expired_and_books_nothing(store: Store, clock: FakeClock) -> None:
    bank = make_bank(store, clock, quote_ttl_s=0.5)
    q = quote_batch(2)
    quotes = bank.create_quotes(q, 16)
    clock.advance(0.75)
    b = bank.book_deals(book_batch(q, quotes), 16)
    assert reasons(b) == ["QUOTE_EXPIRED", "QUOTE_EXPIRED"]
    assert np.isnan(b.deal_rate).all()
    assert ledger(store) == []
    assert FAILURES[F.QUOTE_EXPIRED].retry_helps


def test_booking_just_before_expiry_succeeds(store: Store, clock: FakeClock) -> None:
    bank = make_bank(store, clock, quote_ttl_s=0.5)
    q = quote_batch(1)
    quotes = bank.create_quotes(q, 16)
    clock.advance(0.49)
    assert bank.book_deals(book_batch(q, quotes), 16).ok.all()


def test_a_quote_the_bank_never_issued_cannot_be_booked(store: Store) -> None:
    bank = make_bank(store)
    q = quote_batch(1)
    quotes = bank.create_quotes(q, 16)
    quotes.quote_id = quotes.quote_id + 1
    b = bank.book_deals(book_batch(q, quotes), 16)
    assert not b.ok.any()
    assert ledger(store) == []


@pytest.mark.parametrize("side", ["BUY", "SELL"])
def test_a_quote_rate_off_the_issued_quote_beyond_tolerance_fails_price_moved(store: Store, side: str) -> None:
    bank = make_bank(store, price_tolerance_bps=5)
    q = quote_batch(4, side=side)
    quotes = bank.create_quotes(q, 16)
    off_bps = np.array([4.0, -4.0, 6.0, -6.0])
    batch = book_batch(q, quotes)
    batch.quote_rate = quotes.quote_rate * (1 + off_bps / 10_000)
    b = bank.book_deals(batch, 16)
    assert reasons(b) == [None, None, "PRICE_MOVED", "PRICE_MOVED"]
    assert [d for d, _ in ledger(store)] == ["D2", "D3"]


def test_a_deal_rate_moved_by_the_desks_spread_books_and_is_kept_in_the_ledger(store: Store) -> None:
    bank = make_bank(store, price_tolerance_bps=5)
    q = quote_batch(2, side=["BUY", "SELL"])
    quotes = bank.create_quotes(q, 16)
    client = quotes.quote_rate + np.array([0.0385, -0.0385])  # 385 pips, far beyond 5 bps of tolerance
    b = bank.book_deals(book_batch(q, quotes, deal_rate=client), 16)
    assert b.ok.all()
    np.testing.assert_array_equal(b.deal_rate, client)
    booked = store.cursor().execute("SELECT deal_rate FROM sim_ledger ORDER BY deal_transaction_id").fetchall()
    np.testing.assert_array_equal([r for (r,) in booked], client)


def test_a_client_rate_not_above_zero_is_refused_as_the_http_bank_refuses_it_and_books_nothing(
    store: Store,
) -> None:
    bank = make_bank(store)
    q = quote_batch(3, side="SELL")
    quotes = bank.create_quotes(q, 16)
    # the spread wider than the rate: the client's rate goes to zero or below (or is not a number)
    client = np.array([quotes.quote_rate[0] * -0.5, 0.0, np.nan])
    b = bank.book_deals(book_batch(q, quotes, deal_rate=client), 16)
    assert reasons(b) == ["BANK_VALIDATION"] * 3 and not b.ok.any()
    assert b.message[0].startswith(f"not sent: the client's rate would be {client[0]:.6g}")
    assert ledger(store) == []


def test_a_book_stage_fate_fails_the_booking_on_every_attempt(store: Store) -> None:
    settings = BankSettings(success_rate=0.0, failure_mix={F.INSUFFICIENT_FUNDS: 1.0})
    bank = SimulatedBank(store, settings, 42, MIDS, clock=FakeClock(), sleep=FakeSleep())
    for attempt in (1, 2):
        q = quote_batch(2, attempt=attempt)
        quotes = bank.create_quotes(q, 16)
        assert quotes.ok.all()  # the quote is fine; the account cannot cover the deal
        b = bank.book_deals(book_batch(q, quotes), 16)
        assert reasons(b) == ["INSUFFICIENT_FUNDS"] * 2
    assert ledger(store) == []


def test_a_lost_booking_answer_is_booked_and_found_by_transaction_status(store: Store) -> None:
    settings = BankSettings(
        success_rate=0.5, failure_mix={F.TIMEOUT_UNKNOWN: 1.0, F.INSUFFICIENT_FUNDS: 1.0}, transient_absorb_share=0.9
    )
    rows = keys_with(settings, F.TIMEOUT_UNKNOWN, transient=True)
    bank = SimulatedBank(store, settings, 42, MIDS, clock=FakeClock(), sleep=FakeSleep())
    q = quote_batch(rows=rows)
    quotes = bank.create_quotes(q, 16)
    b = bank.book_deals(book_batch(q, quotes), 16)
    assert reasons(b) == ["TIMEOUT_UNKNOWN"] * len(rows)
    assert b.booked is not None and b.booked.all()  # the reply says so (the simulator's desk uses it)
    ids = [f"D{r}" for r in rows]
    assert [d for d, _ in ledger(store)] == sorted(ids)  # booked, though the caller heard nothing
    st = bank.transaction_status(pa.array(ids), 16, run_id=1)
    assert list(st.status) == ["COMPLETED"] * len(rows)
    np.testing.assert_array_equal(st.quote_id, quotes.quote_id)
    np.testing.assert_allclose(st.deal_rate, quotes.quote_rate)
    # booking it again on a retry (same deal id) books nothing new
    assert bank.book_deals(book_batch(q, quotes), 16).ok.all()
    assert len(ledger(store)) == len(rows)


def test_a_persistent_timeout_books_nothing_and_status_says_not_found(store: Store) -> None:
    settings = BankSettings(success_rate=0.0, failure_mix={F.TIMEOUT_UNKNOWN: 1.0})
    bank = SimulatedBank(store, settings, 42, MIDS, clock=FakeClock(), sleep=FakeSleep())
    q = quote_batch(2)
    quotes = bank.create_quotes(q, 16)
    b = bank.book_deals(book_batch(q, quotes), 16)
    assert reasons(b) == ["TIMEOUT_UNKNOWN"] * 2
    assert b.booked is not None and not b.booked.any()
    assert ledger(store) == []
    assert list(bank.transaction_status(pa.array(["D2", "D3"]), 16, run_id=1).status) == ["NOT_FOUND"] * 2


# -- transaction status ----------------------------------------------------------------------------


def test_transaction_status_is_completed_for_booked_ids_and_not_found_otherwise(store: Store) -> None:
    bank = make_bank(store)
    q = quote_batch(2)
    quotes = bank.create_quotes(q, 16)
    bank.book_deals(book_batch(q, quotes, run_id=3), 16)
    asked = pa.array(["D2", "NOPE", "D3"])
    for run_id in (3, None):
        st = make_bank(store).transaction_status(asked, 16, run_id=run_id)
        assert list(st.status) == ["COMPLETED", "NOT_FOUND", "COMPLETED"]
        assert st.quote_id[1] == 0 and np.isnan(st.deal_rate[1])
        np.testing.assert_array_equal(st.quote_id[[0, 2]], quotes.quote_id)
        np.testing.assert_allclose(st.deal_rate[[0, 2]], quotes.quote_rate)


def test_transaction_status_of_an_empty_request_is_empty(store: Store) -> None:
    st = make_bank(store).transaction_status(pa.array([], type=pa.string()), 16, run_id=1)
    assert len(st.status) == 0


# -- client registry -----------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> str:
    path = tmp_path / "clients.csv"
    path.write_text(
        "CIF,Account_Number,Status,Limit_ZAR\n"
        "0123456789,0012345678,ACTIVE,1000000\n"
        "0123456789,0099999999,frozen,1000000\n"
        "0555555555,0666666666,active,\n",
        encoding="utf-8",
    )
    return str(path)


REGISTRY_CASES = [
    # (cif, account, amount_zar, expected)
    ("0123456789", "0012345678", 500_000.0, None),
    ("123456789", "0012345678", 500_000.0, "CLIENT_NOT_FOUND"),  # the leading zero matters
    ("0123456789", "0666666666", 500_000.0, "ACCOUNT_MISMATCH"),  # another client's account
    ("0123456789", "0099999999", 500_000.0, "ACCOUNT_BLOCKED"),
    ("0123456789", "0012345678", 1_000_000.01, "LIMIT_EXCEEDED"),
    ("0123456789", "0012345678", 1_000_000.0, None),  # exactly at the limit
    ("0555555555", "0666666666", 9e12, None),  # no limit given
]


def registry_batch(attempt: int = 1) -> QuoteBatch:
    cifs, accounts, amounts, _ = zip(*REGISTRY_CASES, strict=True)
    return quote_batch(len(REGISTRY_CASES), cif=cifs, account=accounts, amount_zar=amounts, attempt=attempt)


def test_the_client_registry_refuses_unknown_clients_wrong_accounts_blocked_accounts_and_limits(
    store: Store, registry: str
) -> None:
    r = make_bank(store, registry_file=registry).create_quotes(registry_batch(), 16)
    assert reasons(r) == [case[3] for case in REGISTRY_CASES]
    assert all(not FAILURES[F(code)].retry_helps for code in reasons(r) if code)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("success_rate", [0.0, 0.5, 1.0])
def test_client_checks_are_deterministic_and_win_over_the_random_fate(
    store: Store, registry: str, seed: int, success_rate: float
) -> None:
    settings = BankSettings(success_rate=success_rate, registry_file=registry)
    bank = SimulatedBank(store, settings, seed, MIDS, clock=FakeClock(), sleep=FakeSleep())
    for attempt in (1, 2):
        got = reasons(bank.create_quotes(registry_batch(attempt), 16))
        for (_, _, _, expected), code in zip(REGISTRY_CASES, got, strict=True):
            if expected is not None:
                assert code == expected
            else:  # passes the checks: only the random fate can refuse it, never with a registry code
                assert code is None or F(code) not in {
                    F.CLIENT_NOT_FOUND,
                    F.ACCOUNT_MISMATCH,
                    F.ACCOUNT_BLOCKED,
                    F.LIMIT_EXCEEDED,
                }


def test_without_a_registry_every_well_formed_client_is_accepted(store: Store) -> None:
    assert make_bank(store).create_quotes(registry_batch(), 16).ok.all()


# -- latency -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "in_flight", "waves"), [(10, 4, 3), (8, 4, 2), (1, 16, 1), (16, 16, 1), (17, 16, 2), (5, 1, 5)]
)
def test_a_call_of_n_requests_takes_ceil_n_over_concurrency_latencies(
    store: Store, n: int, in_flight: int, waves: int
) -> None:
    sleep = FakeSleep()
    bank = make_bank(store, sleep=sleep, latency_ms=20)
    q = quote_batch(n)
    quotes = bank.create_quotes(q, in_flight)
    bank.book_deals(book_batch(q, quotes), in_flight)
    bank.transaction_status(pa.array([f"D{r}" for r in q.step]), in_flight, run_id=1)
    bank.cancel_quotes(quotes.quote_id, in_flight)
    assert sleep.calls == pytest.approx([waves * 0.020] * 4)
    assert bank.calls == {"createquote": n, "bookquoteddeal": n, "cancelquote": n, "gettxnstatus": n}


def test_no_latency_or_no_requests_means_no_sleep(store: Store) -> None:
    sleep = FakeSleep()
    make_bank(store, sleep=sleep).create_quotes(quote_batch(50), 4)
    make_bank(store, sleep=sleep, latency_ms=20).cancel_quotes(np.zeros(0, dtype=np.int64), 4)
    assert sleep.calls == []


def test_cancelling_quotes_answers_success_for_each(store: Store) -> None:
    bank = make_bank(store)
    quotes = bank.create_quotes(quote_batch(3), 16)
    r = bank.cancel_quotes(quotes.quote_id, 16)
    assert r.ok.all() and len(r.result_code) == 3


def test_a_deal_id_booked_under_one_run_is_not_booked_again_under_another(store: Store) -> None:
    bank = make_bank(store)
    q = quote_batch(1)
    quotes = bank.create_quotes(q, 16)
    bank.book_deals(book_batch(q, quotes, run_id=1), 16)
    bank.book_deals(book_batch(q, quotes, run_id=2), 16)
    assert len(ledger(store)) == 1


def test_ids_that_are_a_prefix_and_the_row_are_stored_compactly_and_read_back_whole(store: Store) -> None:
    bank = make_bank(store)
    q = quote_batch(rows=[7, 8, 9, 10])
    quotes = bank.create_quotes(q, 16)
    ids = ["FXB-ab12-3-7", "FXB-ab12-3-8", "FXB-ab12-3-09", "other-10"]  # the last two do not follow the form
    assert bank.book_deals(book_batch(q, quotes, deal_ids=ids), 16).ok.all()
    assert ledger(store) == sorted((d, 1) for d in ids)
    stored = store.cursor().execute("SELECT src_row, deal_transaction_id FROM sim_ledger_rows ORDER BY 1").fetchall()
    assert stored == [(7, None), (8, None), (9, "FXB-ab12-3-09"), (10, "other-10")]
    again = make_bank(store).book_deals(book_batch(q, quotes, deal_ids=ids), 16)  # a restarted bank
    assert again.ok.all()
    assert len(ledger(store)) == 4
    status = make_bank(store).transaction_status(pa.array([*ids, "FXB-ab12-3-11"]), 16)
    assert list(status.status) == ["COMPLETED"] * 4 + ["NOT_FOUND"]


def test_the_ledger_hash_of_every_deal_is_the_hash_of_its_id(store: Store) -> None:
    bank = make_bank(store)
    q = quote_batch(rows=[2, 3])
    quotes = bank.create_quotes(q, 16)
    bank.book_deals(book_batch(q, quotes, deal_ids=["P-2", "free-form"]), 16)
    rows = store.cursor().execute("SELECT count(*) FROM sim_ledger WHERE deal_hash = hash(deal_transaction_id)")
    assert rows.fetchall() == [(2,)]


def test_the_python_hash_of_an_id_is_duckdbs_hash_for_every_length_and_alphabet(store: Store) -> None:
    rng = np.random.default_rng(7)
    alphabet = list("abcXYZ0123456789-_ é€ü")
    texts = ["", "a", "FXB-ab12-3-11"] + ["".join(rng.choice(alphabet, size=n)) for n in range(40) for _ in range(5)]
    got = store.cursor().execute("SELECT hash(s) FROM unnest(?::VARCHAR[]) WITH ORDINALITY t(s, i) ORDER BY i", [texts])
    assert [int(r[0]) for r in got.fetchall()] == [duckdb_hash(t) for t in texts]


def test_a_few_ids_hashed_in_python_match_the_same_ids_hashed_by_duckdb_in_a_long_column(store: Store) -> None:
    index = make_bank(store)._booked()
    many = pa.array([f"FXB-{i}" for i in range(_PY_HASH_MAX + 1)])  # long enough to go to DuckDB
    few = many.slice(0, 40)
    np.testing.assert_array_equal(index.hashes(few), index.hashes(many)[:40])


def test_calls_at_the_same_time_share_the_slots_and_a_call_frees_its_slots_when_it_returns() -> None:
    clock = FakeClock(0.0)
    slots = SlotClock(FakeSleep(), clock)
    first, _, end1 = slots.reserve(10, 4, 0.02)  # 10 requests, 4 in flight: 3 rounds
    assert end1 == pytest.approx(0.06)
    # Made meanwhile (another thread): its 4 requests take the slots as the first call frees them,
    # two of them after its second round and two after its third, so 14 requests end in 4 rounds.
    second, _, end2 = slots.reserve(4, 4, 0.02)
    assert end2 == pytest.approx(0.08)
    slots.release(first)
    slots.release(second)
    # A sleep that did not really pass (a test's) leaves no request behind: the next call starts now.
    assert slots.reserve(4, 4, 0.02)[2] == pytest.approx(0.02)
    clock.advance(1.0)
    assert slots.reserve(5, 4, 0.02)[2] == pytest.approx(1.04)


def test_a_call_made_while_another_is_in_flight_waits_only_for_the_slots_it_needs() -> None:
    clock = FakeClock(0.0)
    slots = SlotClock(FakeSleep(), clock)
    slots.reserve(6, 4, 0.02)  # 4 slots busy for a round, 2 of them for a second one
    _, _, end = slots.reserve(2, 4, 0.02)  # the two slots free after the first round
    assert end == pytest.approx(0.04)
