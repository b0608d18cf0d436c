"""The bank simulator's ASGI app in-process: what a strict bank refuses, its quote book, its tokens.

Each test drives a ``Simulator`` on a temporary ledger through ``httpx.ASGITransport`` on one
event loop of its own (``SimBank``), with a fake clock where time matters.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fxbatch import calendars
from fxbatch.bank.http import wire
from fxbatch.bank.model import NONE, QUOTE_STAGE, REASONS, BankModel
from fxbatch.bank.registry import ClientRegistry
from fxbatch.banksim import Credentials, SimConfig, Simulator, create_app
from fxbatch.banksim.checks import Clients, StrictCreateQuoteRequest
from fxbatch.banksim.desk import trade_key
from fxbatch.banksim.service import Faults
from fxbatch.models import FAILURES, BankSettings, FailureCode
from fxbatch.rates import RateTable
from fxbatch.settings import DATA_DIR
from tests.conftest import TODAY

F = FailureCode
RATES = RateTable.from_csv(DATA_DIR / "rates.csv")
USER = "dealer@example.com"
QUOTE: dict[str, Any] = {
    "header": {"userId": USER},
    "customer": {
        "cifNo": "0123456789",
        "fromSettlementAccount": {"currency": "ZAR", "accountNumber": "0012345678"},
        "toSettlementAccount": {"currency": "USD", "accountNumber": "0012345678"},
    },
    "trade": {
        "tradeType": "Buy", "deliveryType": "Spot", "currencyPair": "USD/ZAR", "dealCurrency": "ZAR",
        "dealCurrencyAmount": 50000.0, "settlementDate": "20261202", "dealDateTime": "2026-11-30T09:15:00Z",
    },
}  # fmt: skip
# TODAY (2026-11-30) is a Monday: TOM is 2026-12-01, SPOT 2026-12-02; 2026-12-16 is a South African holiday.


class FakeClock:
    def __init__(self, start: float = 1_796_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def quote_body(**trade: object) -> dict[str, Any]:
    body = copy.deepcopy(QUOTE)
    body["trade"].update(trade)
    return body


class SimBank:
    """A simulator and a client on one event loop of their own; every call is synchronous."""

    def __init__(
        self, tmp_path: Path, clock: FakeClock | None = None, grant: dict[str, str] | None = None, **config: Any
    ) -> None:
        values: dict[str, Any] = {"db": tmp_path / "bank.duckdb", "rates": RATES, "today": TODAY,
                                  "bank": BankSettings(success_rate=1.0, transient_absorb_share=0.0)}  # fmt: skip
        values.update(config)
        self.clock = clock or FakeClock()
        self.config = SimConfig(**values)
        self.sim = Simulator(self.config, clock=self.clock)
        self.loop = asyncio.new_event_loop()
        self.app = create_app(self.sim)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://banksim")
        self.token = self.grant(**(grant or {"grant_type": "client_credentials"})).json()["access_token"]

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = self.run(self.client.post(path, **kwargs))
        return response

    def grant(self, **form: str) -> httpx.Response:
        return self.post(wire.TOKEN_PATH, data=form)

    def call(self, op: str, body: Any, **headers: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
        response = self.post(wire.API + op, headers={"Authorization": f"Bearer {self.token}", **headers}, **kwargs)
        answer: dict[str, Any] = response.json()
        # A refusal is an HTTP 200 with its result block; the bank's service being unavailable a 503 with it.
        unavailable = answer.get("result", {}).get("resultReasonCode") == F.SERVICE_UNAVAILABLE.value
        assert response.status_code == (503 if unavailable else 200), response.text
        uuid.UUID(answer["header"]["transactionId"])  # every answer carries the bank's id of the call
        return answer

    def quote(self, **trade: object) -> dict[str, Any]:
        return self.call(wire.CREATE_QUOTE, quote_body(**trade))

    def quoted(self, **trade: object) -> dict[str, Any]:
        answer = self.quote(**trade)
        assert answer["result"]["resultCode"] == 0, answer
        payload: dict[str, Any] = answer["payload"]
        return payload

    def book(self, payload: dict[str, Any], deal_id: str | None = None, /, **trade: object) -> dict[str, Any]:
        values = {"quoteID": payload["quoteId"], "dealTransactionID": deal_id or str(uuid.uuid4()),
                  "quoteRate": payload["quoteRate"], "dealRate": round(payload["quoteRate"] + 0.0358, 4)}  # fmt: skip
        values.update(trade)  # a None drops the field
        trade_values = {k: v for k, v in values.items() if v is not None}
        return self.call(wire.BOOK_DEAL, {"header": {"userId": USER}, "trade": trade_values})

    def cancel(self, quote_id: int) -> dict[str, Any]:
        return self.call(wire.CANCEL_QUOTE, {"header": {"userId": USER}, "quoteID": quote_id})

    def latest(self, quote_id: int) -> dict[str, Any]:
        return self.call(wire.LATEST_QUOTE, {"header": {"userId": USER}, "quoteID": quote_id})

    def status(self, txn_id: str) -> dict[str, Any]:
        return self.call(wire.TXN_STATUS, {"header": {"userId": USER}, "transactionID": txn_id})

    def booked(self) -> int:
        return int(self.sim.ledger.conn.execute("SELECT count(*) FROM banksim_journal WHERE kind = 'BOOKED'").fetchall()[0][0])  # fmt: skip

    def close(self) -> None:
        self.run(self.client.aclose())
        self.sim.close()
        self.loop.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., SimBank]]:
    banks: list[SimBank] = []

    def _make(**config: Any) -> SimBank:
        config.setdefault("db", tmp_path / f"bank{len(banks)}.duckdb")
        banks.append(SimBank(tmp_path, **config))
        return banks[-1]

    yield _make
    for bank in banks:
        bank.close()


@pytest.fixture
def bank(make: Callable[..., SimBank]) -> SimBank:
    return make()


def refused(answer: dict[str, Any], code: FailureCode | str, field: str | None = None) -> None:
    """``answer`` is the refusal ``code`` (resultCode 1 for BANK_VALIDATION), naming ``field``."""
    result = answer["result"]
    reason = code.value if isinstance(code, FailureCode) else code
    assert result["resultReasonCode"] == reason, answer
    if isinstance(code, FailureCode):
        assert result["resultCode"] == FAILURES[code].result_code, answer
    assert result["resultCode"] > 0 and result["resultMsg"]
    if field is not None:
        assert field in [e["validation"] for e in result["validationErrors"]], answer


# -- validation ----------------------------------------------------------------------------------
REQUIRED = [
    "header", "header.userId", "customer", "customer.cifNo", "customer.fromSettlementAccount",
    "customer.fromSettlementAccount.currency", "customer.fromSettlementAccount.accountNumber",
    "customer.toSettlementAccount", "customer.toSettlementAccount.currency",
    "customer.toSettlementAccount.accountNumber", "trade", "trade.tradeType", "trade.deliveryType",
    "trade.currencyPair", "trade.dealCurrency", "trade.dealCurrencyAmount", "trade.settlementDate",
    "trade.dealDateTime",
]  # fmt: skip


@pytest.mark.parametrize("field", REQUIRED)
def test_a_quote_request_without_a_required_field_is_refused_naming_it(bank: SimBank, field: str) -> None:
    body = copy.deepcopy(QUOTE)
    *parents, name = field.split(".")
    node = body
    for part in parents:
        node = node[part]
    del node[name]
    refused(bank.call(wire.CREATE_QUOTE, body), F.BANK_VALIDATION, field)


V, D = F.BANK_VALIDATION, F.INVALID_VALUE_DATE
BAD_QUOTES: list[tuple[str, dict[str, object], FailureCode, str]] = [
    ("date with dashes", {"settlementDate": "2026-12-01"}, V, "trade.settlementDate"),
    ("month 13", {"settlementDate": "20261340"}, V, "trade.settlementDate"),
    ("a Saturday", {"settlementDate": "20261205"}, D, "trade.settlementDate"),
    ("a South African holiday", {"settlementDate": "20261216"}, D, "trade.settlementDate"),
    ("a past date", {"settlementDate": "20261127"}, D, "trade.settlementDate"),
    ("spot before the spot date", {"settlementDate": "20261201"}, D, "trade.settlementDate"),
    ("tom not the next business day", {"deliveryType": "Tom", "settlementDate": "20261202"}, D, "trade.settlementDate"),
    ("cash not the trade date", {"deliveryType": "Cash", "settlementDate": "20261201"}, D, "trade.settlementDate"),
    ("a forward over a year out", {"settlementDate": "20280104"}, D, "trade.settlementDate"),
    ("deal currency outside the pair", {"dealCurrency": "EUR"}, V, "trade.dealCurrency"),
    ("amount -5", {"dealCurrencyAmount": -5}, V, "trade.dealCurrencyAmount"),
    ("amount 0", {"dealCurrencyAmount": 0}, V, "trade.dealCurrencyAmount"),
    ("amount 1e12", {"dealCurrencyAmount": 1e12}, V, "trade.dealCurrencyAmount"),
    ("amount as text", {"dealCurrencyAmount": "5"}, V, "trade.dealCurrencyAmount"),
    ("side in capitals", {"tradeType": "BUY"}, V, "trade.tradeType"),
    ("delivery in capitals", {"deliveryType": "SPOT"}, V, "trade.deliveryType"),
    ("pair without a slash", {"currencyPair": "USDZAR"}, V, "trade.currencyPair"),
    ("deal time a bare date", {"dealDateTime": "2026-11-30"}, V, "trade.dealDateTime"),
    ("deal time in seconds", {"dealDateTime": 1796000000}, V, "trade.dealDateTime"),
    ("deal time not a time", {"dealDateTime": "yesterday"}, V, "trade.dealDateTime"),
]  # fmt: skip


@pytest.mark.parametrize(("trade", "code", "field"), [c[1:] for c in BAD_QUOTES], ids=[c[0] for c in BAD_QUOTES])
def test_a_malformed_quote_request_is_refused_naming_the_field(
    bank: SimBank, trade: dict[str, object], code: FailureCode, field: str
) -> None:
    refused(bank.quote(**trade), code, field)


def test_the_valid_deliveries_of_each_kind_are_quoted(bank: SimBank) -> None:
    for delivery, day in [("Cash", "20261130"), ("Tom", "20261201"), ("Spot", "20261202"), ("Spot", "20261215")]:
        assert bank.quote(deliveryType=delivery, settlementDate=day)["result"]["resultCode"] == 0, (delivery, day)


def test_the_settlement_accounts_are_in_the_currencies_the_client_pays_and_gets(bank: SimBank) -> None:
    body = copy.deepcopy(QUOTE)
    body["customer"]["fromSettlementAccount"]["currency"] = "USD"  # a buyer of USD pays ZAR
    refused(bank.call(wire.CREATE_QUOTE, body), F.BANK_VALIDATION, "customer.fromSettlementAccount.currency")
    body = quote_body(tradeType="Sell")
    refused(bank.call(wire.CREATE_QUOTE, body), F.BANK_VALIDATION, "customer.toSettlementAccount.currency")


@pytest.mark.parametrize("user", ["not an e-mail", "", None])
def test_the_dealer_is_named_by_an_e_mail(bank: SimBank, user: str | None) -> None:
    body = copy.deepcopy(QUOTE)
    body["header"] = {} if user is None else {"userId": user}
    refused(bank.call(wire.CREATE_QUOTE, body), F.BANK_VALIDATION, "header.userId")


def test_a_pair_the_bank_does_not_quote_is_not_supported(bank: SimBank) -> None:
    body = quote_body(currencyPair="NZD/ZAR")
    body["customer"]["toSettlementAccount"]["currency"] = "NZD"
    refused(bank.call(wire.CREATE_QUOTE, body), F.CURRENCY_NOT_SUPPORTED, "trade.currencyPair")


@pytest.mark.parametrize(("body", "field"), [(b"not json", "body"), (b"[1, 2]", "body"), (b"", "body")])
def test_a_body_that_is_not_a_json_object_is_refused_naming_the_body(bank: SimBank, body: bytes, field: str) -> None:
    for op in (wire.CREATE_QUOTE, wire.BOOK_DEAL, wire.CANCEL_QUOTE, wire.LATEST_QUOTE, wire.TXN_STATUS):
        refused(bank.call(op, body), F.BANK_VALIDATION, field)


BAD_BOOKINGS: list[tuple[str, dict[str, object], str]] = [
    ("quote id a float", {"quoteID": 1.5}, "trade.quoteID"),
    ("quote id as text", {"quoteID": "12"}, "trade.quoteID"),
    ("quote id a whole float", {"quoteID": 12.0}, "trade.quoteID"),
    ("quote id over int64", {"quoteID": 1 << 63}, "trade.quoteID"),
    ("deal id not a UUID", {"dealTransactionID": "deal-1"}, "trade.dealTransactionID"),
    ("quote rate negative", {"quoteRate": -1}, "trade.quoteRate"),
    ("deal rate missing", {"dealRate": None}, "trade.dealRate"),
    ("quote rate as text", {"quoteRate": "17.6"}, "trade.quoteRate"),
    ("deal rate as text", {"dealRate": "17.6"}, "trade.dealRate"),
    ("deal rate true", {"dealRate": True}, "trade.dealRate"),
    ("deal rate nowhere near the quote", {"dealRate": 1e-9}, "trade.dealRate"),
]


@pytest.mark.parametrize(("trade", "field"), [c[1:] for c in BAD_BOOKINGS], ids=[c[0] for c in BAD_BOOKINGS])
def test_a_malformed_booking_is_refused_naming_the_field(bank: SimBank, trade: dict[str, object], field: str) -> None:
    refused(bank.book(bank.quoted(), **trade), F.BANK_VALIDATION, field)
    assert bank.booked() == 0


@pytest.mark.parametrize("quote_id", [1.5, "12", None])
def test_cancel_and_latest_need_an_int64_quote_id(bank: SimBank, quote_id: object) -> None:
    body: dict[str, Any] = {"header": {"userId": USER}}
    if quote_id is not None:
        body["quoteID"] = quote_id
    for op in (wire.CANCEL_QUOTE, wire.LATEST_QUOTE):
        refused(bank.call(op, body), F.BANK_VALIDATION, "quoteID")


def test_status_needs_a_uuid(bank: SimBank) -> None:
    refused(bank.call(wire.TXN_STATUS, {"header": {"userId": USER}, "transactionID": "x"}), F.BANK_VALIDATION, "transactionID")  # fmt: skip


def test_the_strict_quote_model_is_the_wire_model_with_a_real_deal_time() -> None:
    assert issubclass(StrictCreateQuoteRequest, wire.CreateQuoteRequest)
    assert StrictCreateQuoteRequest.model_validate(QUOTE).trade.dealDateTime.year == 2026


# -- the quote book ------------------------------------------------------------------------------
def test_a_quote_carries_an_int64_id_beyond_2_53_the_mid_and_its_expiry(bank: SimBank) -> None:
    payload = bank.quoted()
    assert isinstance(payload["quoteId"], int) and 1 << 53 < payload["quoteId"] < 1 << 63
    assert payload["quoteRate"] == pytest.approx(RATES.mids["USD/ZAR"], rel=0.01)
    assert wire.QuotePayload.model_validate(payload).quoteExpiryDateTime.timestamp() == pytest.approx(bank.clock.now + 30)  # fmt: skip


def test_a_quote_books_once_and_never_under_another_deal_id(bank: SimBank) -> None:
    payload = bank.quoted()
    first, second, third = (str(uuid.uuid4()) for _ in range(3))
    assert bank.book(payload, first)["result"]["resultCode"] == 0
    refused(bank.book(payload, second), F.QUOTE_ALREADY_BOOKED, "trade.quoteID")
    refused(bank.book(payload, third), F.QUOTE_ALREADY_BOOKED)
    assert bank.book(payload, first)["result"] == {"resultCode": 0, "resultMsg": "Success"}  # the same booking again
    assert bank.booked() == 1


def test_a_deal_id_used_for_one_quote_is_refused_for_another(bank: SimBank) -> None:
    deal = str(uuid.uuid4())
    one, other = bank.quoted(), bank.quoted(dealCurrencyAmount=60000.0)
    assert bank.book(one, deal)["result"]["resultCode"] == 0
    refused(bank.book(other, deal), F.DUPLICATE_TRANSACTION, "trade.dealTransactionID")
    assert bank.latest(other["quoteId"])["result"]["resultCode"] == 0  # still open
    assert bank.booked() == 1


def test_unknown_cancelled_and_expired_quotes_do_not_book(make: Callable[..., SimBank]) -> None:
    bank = make()
    refused(bank.book({"quoteId": 4242, "quoteRate": 17.6}), F.QUOTE_NOT_FOUND, "trade.quoteID")
    never = bank.quoted()["quoteId"] + 10
    refused(bank.book({"quoteId": never, "quoteRate": 17.6}), F.QUOTE_NOT_FOUND)
    cancelled = bank.quoted()
    assert bank.cancel(cancelled["quoteId"])["result"]["resultCode"] == 0
    assert bank.cancel(cancelled["quoteId"])["result"]["resultCode"] == 0  # twice is fine
    refused(bank.book(cancelled), F.QUOTE_CANCELLED)
    refused(bank.latest(cancelled["quoteId"]), F.QUOTE_CANCELLED)
    expiring = bank.quoted()
    bank.clock.now += 30.001
    refused(bank.book(expiring), F.QUOTE_EXPIRED)
    refused(bank.latest(expiring["quoteId"]), F.QUOTE_EXPIRED)
    assert bank.booked() == 0


def test_cancelling_checks_the_quote(bank: SimBank) -> None:
    refused(bank.cancel(4242), F.QUOTE_NOT_FOUND, "quoteID")
    payload = bank.quoted()
    assert bank.book(payload)["result"]["resultCode"] == 0
    refused(bank.cancel(payload["quoteId"]), F.QUOTE_ALREADY_BOOKED)
    refused(bank.latest(payload["quoteId"]), F.QUOTE_ALREADY_BOOKED)


def test_latest_quote_answers_an_open_quote(bank: SimBank) -> None:
    payload = bank.quoted()
    answer = bank.latest(payload["quoteId"])
    assert answer["payload"]["quoteId"] == payload["quoteId"]
    assert answer["payload"]["quoteExpiryDateTime"][:19] == payload["quoteExpiryDateTime"][:19]


def test_a_rate_off_the_quote_beyond_the_tolerance_is_a_price_move(bank: SimBank) -> None:
    payload = bank.quoted()
    rate = payload["quoteRate"]
    refused(bank.book(payload, quoteRate=rate * 1.001), F.PRICE_MOVED, "trade.quoteRate")  # 10 bps > 5
    assert bank.book(payload, quoteRate=rate * 1.0004)["result"]["resultCode"] == 0  # 4 bps


def test_a_client_rate_as_far_off_as_the_widest_spread_the_loader_takes_books(bank: SimBank) -> None:
    # JPY/ZAR takes spreads up to half its rate: such a client rate is the desk's, not a typo.
    wide = bank.quoted()
    assert bank.book(wide, dealRate=round(wide["quoteRate"] * 1.49, 4))["result"]["resultCode"] == 0
    far = bank.quoted(dealCurrencyAmount=60000.0)
    refused(bank.book(far, dealRate=round(far["quoteRate"] * 1.8, 4)), F.BANK_VALIDATION, "trade.dealRate")


def test_a_deal_id_is_one_whatever_the_case_of_its_letters(bank: SimBank) -> None:
    deal = str(uuid.uuid4())
    one, other = bank.quoted(), bank.quoted(dealCurrencyAmount=60000.0)
    assert bank.book(one, deal)["result"]["resultCode"] == 0
    assert bank.book(one, deal.upper())["result"]["resultCode"] == 0  # the same booking again: its answer
    refused(bank.book(other, deal.upper()), F.DUPLICATE_TRANSACTION, "trade.dealTransactionID")
    assert wire.TxnStatusAnswer.model_validate(bank.status(deal.upper())).transaction is not None
    assert bank.booked() == 1


def test_status_finds_a_deal_by_its_deal_id_and_by_the_bank_id_of_its_booking(bank: SimBank) -> None:
    deal = str(uuid.uuid4())
    booking = bank.book(bank.quoted(), deal)
    for asked in (deal, booking["header"]["transactionId"]):
        answer = bank.status(asked)
        txn = wire.TxnStatusAnswer.model_validate(answer).transaction
        assert txn is not None and txn.status == wire.COMPLETED and txn.operation == wire.BOOK_DEAL
        assert txn.transactionId == booking["header"]["transactionId"] and txn.userID == USER
        assert txn.context is not None and txn.context.thirdPartyDealID == deal
    refused(bank.status(str(uuid.uuid4())), wire.TXN_NOT_FOUND, "transactionID")


def test_the_book_survives_a_restart_on_the_same_ledger(tmp_path: Path) -> None:
    clock = FakeClock()
    first = SimBank(tmp_path, clock)
    deal = str(uuid.uuid4())
    booked, cancelled, idle = first.quoted(), first.quoted(dealCurrencyAmount=2.0), first.quoted(dealCurrencyAmount=3.0)
    first.book(booked, deal)
    first.cancel(cancelled["quoteId"])
    first.close()
    again = SimBank(tmp_path, clock)
    try:
        refused(again.book(booked), F.QUOTE_ALREADY_BOOKED)
        assert again.book(booked, deal)["result"]["resultCode"] == 0
        refused(again.book(cancelled), F.QUOTE_CANCELLED)
        assert again.book(idle)["result"]["resultCode"] == 0  # an open quote is still open
        assert again.status(deal)["transaction"]["status"] == wire.COMPLETED
        assert again.quoted()["quoteId"] > idle["quoteId"]
        clock.now += 3600  # long expired: they are no longer in memory, the journal answers
        refused(again.book(cancelled), F.QUOTE_CANCELLED)
        refused(again.cancel(booked["quoteId"]), F.QUOTE_ALREADY_BOOKED)
        assert again.book(booked, deal)["result"]["resultCode"] == 0
        fresh = again.quoted(dealCurrencyAmount=4.0)
        clock.now += 3600
        again.quoted(dealCurrencyAmount=5.0)  # prunes the book
        refused(again.book(fresh), F.QUOTE_EXPIRED)
    finally:
        again.close()


def test_bookings_arriving_together_share_one_transaction_and_are_written_before_the_answer(
    make: Callable[..., SimBank],
) -> None:
    bank = make(latency_ms=20.0)
    payloads = [bank.quoted(dealCurrencyAmount=1000.0 + i) for i in range(40)]
    groups = bank.sim.journal.groups

    async def book_all() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {bank.token}"}
        bodies = [{"header": {"userId": USER}, "trade": {"quoteID": p["quoteId"], "dealTransactionID": str(uuid.uuid4()),
                   "quoteRate": p["quoteRate"], "dealRate": p["quoteRate"]}} for p in payloads]  # fmt: skip
        return await asyncio.gather(*[bank.client.post(wire.API + wire.BOOK_DEAL, json=b, headers=headers) for b in bodies])  # fmt: skip

    answers = bank.run(book_all())
    assert all(a.json()["result"]["resultCode"] == 0 for a in answers)
    assert bank.booked() == 40  # on disk as soon as answered
    assert bank.sim.journal.groups - groups < 20


def test_a_change_the_ledger_could_not_write_is_taken_back(bank: SimBank, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = bank.quoted()
    write = bank.sim.ledger.write

    def failing(events: list[Any]) -> None:
        monkeypatch.setattr(bank.sim.ledger, "write", write)  # once
        raise OSError("disk full")

    monkeypatch.setattr(bank.sim.ledger, "write", failing)
    with pytest.raises(OSError, match="disk full"):  # the caller gets a 500
        bank.book(payload)
    assert bank.book(payload)["result"]["resultCode"] == 0  # the quote was not left booked
    assert bank.booked() == 1


def test_every_answer_waits_out_the_latency(make: Callable[..., SimBank]) -> None:
    bank = make(latency_ms=60.0)
    start = bank.loop.time()
    bank.quote()
    assert bank.loop.time() - start >= 0.06


def test_a_hung_booking_service_takes_its_first_n_bookings_then_none(tmp_path: Path) -> None:
    hung = Faults(SimConfig(db=tmp_path / "b.duckdb", rates=RATES, hang_after_bookings=3))
    assert [hung.hung() for _ in range(6)] == [False, False, False, True, True, True]
    assert hung.bookings_taken == 3
    never = Faults(SimConfig(db=tmp_path / "b.duckdb", rates=RATES))
    assert not any(never.hung() for _ in range(100))


# -- the bank model decides who fails --------------------------------------------------------------
def test_each_trade_meets_the_fate_the_bank_model_gives_its_key(make: Callable[..., SimBank]) -> None:
    settings = BankSettings(success_rate=0.6, transient_absorb_share=0.0)
    bank = make(bank=settings, seed=11)
    model = BankModel(11, settings)
    for i in range(120):
        body = quote_body(dealCurrencyAmount=1000.0 + i)
        reason = int(model.fates(np.array([trade_key(StrictCreateQuoteRequest.model_validate(body))], dtype=np.uint64)).reason[0])  # fmt: skip
        answer = bank.call(wire.CREATE_QUOTE, body)
        if reason != NONE and QUOTE_STAGE[reason + 1]:
            refused(answer, REASONS[reason])
            continue
        booking = bank.book(answer["payload"])
        if reason == NONE:
            assert booking["result"]["resultCode"] == 0
        else:  # a trade fated to time out is told so, and not booked
            refused(booking, REASONS[reason])


def test_a_transient_quote_error_comes_on_the_first_attempt_only(make: Callable[..., SimBank]) -> None:
    # Half the trades fail RATE_UNAVAILABLE on every attempt; with an absorb share of 0.9 every
    # other trade meets it once, on attempt 1, and is quoted on attempt 2.
    settings = BankSettings(success_rate=0.5, failure_mix={F.RATE_UNAVAILABLE: 1.0}, transient_absorb_share=0.9)
    bank = make(bank=settings)
    model = BankModel(bank.config.seed, settings)
    assert model.absorb_prob == 1.0
    for i in range(20):
        body = quote_body(dealCurrencyAmount=100.0 + i)
        key = trade_key(StrictCreateQuoteRequest.model_validate(body))
        fated = bool(model.fates(np.array([key], dtype=np.uint64)).success[0])
        refused(bank.call(wire.CREATE_QUOTE, body), F.RATE_UNAVAILABLE)
        second = bank.call(wire.CREATE_QUOTE, body)
        if fated:
            assert second["result"]["resultCode"] == 0
        else:
            refused(second, F.RATE_UNAVAILABLE)


@pytest.mark.parametrize(
    ("code", "field"),
    [(F.INSUFFICIENT_FUNDS, "customer.fromSettlementAccount.accountNumber"), (F.MARKET_CLOSED, "trade.dealDateTime"),
     (F.RATE_UNAVAILABLE, "trade.currencyPair"), (F.PRICE_MOVED, "trade.quoteRate"),
     (F.BELOW_MINIMUM, "trade.dealCurrencyAmount")],
)  # fmt: skip
def test_a_refusal_the_bank_model_decides_names_the_field_at_fault(
    make: Callable[..., SimBank], code: FailureCode, field: str
) -> None:
    bank = make(bank=BankSettings(success_rate=0.0, failure_mix={code: 1.0}, transient_absorb_share=0.0))
    answer = bank.call(wire.CREATE_QUOTE, quote_body())
    if "payload" in answer:  # a booking-stage reason: the quote is given, its booking refused
        answer = bank.book(answer["payload"])
    refused(answer, code, field)


def test_a_transient_timeout_at_booking_books_the_deal_and_loses_the_answer(make: Callable[..., SimBank]) -> None:
    settings = BankSettings(success_rate=0.5, failure_mix={F.TIMEOUT_UNKNOWN: 1.0}, transient_absorb_share=0.9)
    bank = make(bank=settings)
    lost = 0
    for i in range(20):
        payload = bank.quoted(dealCurrencyAmount=100.0 + i)
        deal = str(uuid.uuid4())
        messages = asgi_book(bank, payload, deal)
        if messages[-1].get("more_body"):  # the answer started and never ended
            lost += 1
            assert bank.status(deal)["transaction"]["status"] == wire.COMPLETED
            assert bank.book(payload, deal)["result"]["resultCode"] == 0  # asked again: the deal it made
        else:
            refused(wire_json(messages), F.TIMEOUT_UNKNOWN)  # fated to time out: answered so, not booked
            refused(bank.status(deal), wire.TXN_NOT_FOUND)
    assert lost > 0


def test_a_share_of_bookings_can_lose_their_answer_and_of_calls_fail_with_a_bare_503(
    make: Callable[..., SimBank],
) -> None:
    bank = make(drop_after_book_rate=1.0)
    deal = str(uuid.uuid4())
    assert asgi_book(bank, bank.quoted(), deal)[-1]["more_body"] is True
    assert bank.status(deal)["transaction"]["status"] == wire.COMPLETED
    down = make(error_rate=1.0)
    response = down.post(wire.API + wire.CREATE_QUOTE, json=QUOTE, headers={"Authorization": f"Bearer {down.token}"})
    assert response.status_code == 503 and response.headers["content-type"].startswith("text/plain")


def test_no_x_fxbatch_header_changes_an_answer(make: Callable[..., SimBank]) -> None:
    settings = BankSettings(success_rate=0.5)
    plain, headed = make(bank=settings), make(bank=settings)
    sim_headers = {"X-Fxbatch-Trade-Key": "7", "X-Fxbatch-Attempt": "3", "X-Fxbatch-Step": "99",
                   "X-Fxbatch-Run": "5", "X-Fxbatch-Error-Rate": "1", "X-Fxbatch-Success-Rate": "0"}  # fmt: skip
    for i in range(30):
        body = quote_body(dealCurrencyAmount=500.0 + i)
        a, b = plain.call(wire.CREATE_QUOTE, body), headed.call(wire.CREATE_QUOTE, body, **sim_headers)
        assert a["result"] == b["result"]
        assert (a.get("payload") or {}).get("quoteRate") == (b.get("payload") or {}).get("quoteRate")


def asgi_book(bank: SimBank, payload: dict[str, Any], deal: str) -> list[dict[str, Any]]:
    """A booking through the ASGI app itself: the messages it sends (a lost answer never ends)."""
    body = wire.BookDealRequest.model_validate({"header": {"userId": USER}, "trade": {
        "quoteID": payload["quoteId"], "dealTransactionID": deal, "quoteRate": payload["quoteRate"],
        "dealRate": payload["quoteRate"]}}).model_dump_json().encode()  # fmt: skip
    path = wire.API + wire.BOOK_DEAL
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {bank.token}".encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {}}  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    bank.run(bank.app(scope, receive, send))
    return sent


def wire_json(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return wire.BookDealAnswer.model_validate_json(b"".join(m.get("body", b"") for m in messages[1:])).model_dump()


# -- the client registry ---------------------------------------------------------------------------
REGISTRY = "cif,account_number,status,limit_zar\n0123456789,0012345678,ACTIVE,1000000\n0123456789,0099,DORMANT,\n"


@pytest.mark.parametrize(
    ("cif", "account", "into", "amount", "code", "field"),
    [
        ("999", "0012345678", None, 100.0, F.CLIENT_NOT_FOUND, "cifNo"),
        ("0123456789", "0042", None, 100.0, F.ACCOUNT_MISMATCH, "customer.fromSettlementAccount.accountNumber"),
        ("0123456789", "0099", None, 100.0, F.ACCOUNT_BLOCKED, "customer.fromSettlementAccount.accountNumber"),
        ("0123456789", "0012345678", None, 2_000_000.0, F.LIMIT_EXCEEDED, "trade.dealCurrencyAmount"),
        # the account the client is paid into is the client's own, and active, too
        (
            "0123456789",
            "0012345678",
            "5550001",
            100.0,
            F.ACCOUNT_MISMATCH,
            "customer.toSettlementAccount.accountNumber",
        ),
        ("0123456789", "0012345678", "0099", 100.0, F.ACCOUNT_BLOCKED, "customer.toSettlementAccount.accountNumber"),
    ],
)
def test_with_a_registry_the_client_checks_refuse_naming_the_field(
    make: Callable[..., SimBank], tmp_path: Path, cif: str, account: str, into: str | None, amount: float,
    code: FailureCode, field: str,
) -> None:  # fmt: skip
    (tmp_path / "clients.csv").write_text(REGISTRY + "5550000,5550001,ACTIVE,\n")
    bank = make(registry=ClientRegistry.from_csv(tmp_path / "clients.csv"))
    body = quote_body(dealCurrencyAmount=amount)
    body["customer"]["cifNo"] = cif
    body["customer"]["fromSettlementAccount"]["accountNumber"] = account
    body["customer"]["toSettlementAccount"]["accountNumber"] = into or account
    answer = bank.call(wire.CREATE_QUOTE, body)
    refused(answer, code, field)
    if code is F.CLIENT_NOT_FOUND:
        assert answer["result"]["validationErrors"] == [{"validation": "cifNo", "error": "INVALID CIF NUMBER"}]
    assert bank.quote()["result"]["resultCode"] == 0  # the registered client is quoted


def test_the_registry_lookup_agrees_with_the_client_registry(tmp_path: Path) -> None:
    (tmp_path / "clients.csv").write_text(REGISTRY)
    registry = ClientRegistry.from_csv(tmp_path / "clients.csv")
    cases = [("0123456789", "0012345678", 10.0), ("0123456789", "0012345678", 5e6), ("0123456789", "0099", 1.0),
             ("0123456789", "1", 1.0), ("1", "0012345678", 1.0)]  # fmt: skip
    expected = registry.check(*(np.array(c, dtype=object) for c in zip(*cases, strict=True)))
    ours = [Clients(registry).check(*case) for case in cases]
    assert [r.reason if r else None for r in ours] == list(expected)


# -- tokens and authorisation ----------------------------------------------------------------------
SECRET, PASSWORD = "s3cret-client-value", "pa55word-of-the-dealer"
CREDS = Credentials(client_id="fxbatch", client_secret=SECRET, username="dealer", password=PASSWORD)
PASSWORD_GRANT = {"grant_type": "password", "client_id": "fxbatch", "client_secret": SECRET, "scope": "trading",
                  "username": "dealer", "password": PASSWORD}  # fmt: skip


@pytest.fixture
def guarded(make: Callable[..., SimBank]) -> SimBank:
    return make(credentials=CREDS, grant=PASSWORD_GRANT)


def test_the_password_grant_answers_like_the_identity_provider(guarded: SimBank) -> None:
    answer = guarded.grant(**PASSWORD_GRANT)
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "trading"
    assert body["expires_in"] == 300 and body["ext_expires_in"] == 600
    assert body["access_token"] and body["refresh_token"]
    wire.TokenAnswer.model_validate(body)
    guarded.token = body["access_token"]
    assert guarded.quote()["result"]["resultCode"] == 0


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"password": "wrong-" + PASSWORD}, 400, "invalid_grant"),
        ({"username": "someone-else"}, 400, "invalid_grant"),
        ({"client_secret": "not-the-" + SECRET}, 401, "invalid_client"),
        ({"client_id": "stranger"}, 401, "invalid_client"),
        ({"client_id": "fxbatch-\u00e9"}, 401, "invalid_client"),  # not ASCII: refused, never a 500
        ({"client_secret": "s\u00e9cret"}, 401, "invalid_client"),
        ({"password": "p\u00e4ss"}, 400, "invalid_grant"),
        ({"username": "\ufffd"}, 400, "invalid_grant"),
        ({"password": ""}, 400, "invalid_request"),
        ({"grant_type": "implicit"}, 400, "unsupported_grant_type"),
    ],
)
def test_a_refused_grant_says_why_and_never_echoes_a_secret(
    guarded: SimBank, change: dict[str, str], status: int, error: str
) -> None:
    answer = guarded.grant(**{**PASSWORD_GRANT, **change})
    assert answer.status_code == status
    body = answer.json()
    assert body["error"] == error and body["error_description"]
    assert body["error_codes"] and all(isinstance(c, int) for c in body["error_codes"])
    assert body["timestamp"] and uuid.UUID(body["trace_id"]) and uuid.UUID(body["correlation_id"])
    sent = [PASSWORD, SECRET, *(v for k, v in change.items() if k in ("password", "client_secret") and v)]
    assert not [s for s in sent if s in answer.text]
    wire.TokenError.model_validate(body)


def test_client_credentials_in_the_form_or_as_basic(guarded: SimBank) -> None:
    form = guarded.grant(grant_type="client_credentials", client_id="fxbatch", client_secret=SECRET)
    assert form.status_code == 200
    basic = base64.b64encode(f"fxbatch:{SECRET}".encode()).decode()
    answer = guarded.post(wire.TOKEN_PATH, data={"grant_type": "client_credentials"},
                          headers={"Authorization": f"Basic {basic}"})  # fmt: skip
    assert answer.status_code == 200
    bad = base64.b64encode(b"fxbatch:nope").decode()
    refused_ = guarded.post(wire.TOKEN_PATH, data={"grant_type": "client_credentials"},
                            headers={"Authorization": f"Basic {bad}"})  # fmt: skip
    assert refused_.status_code == 401 and refused_.headers["www-authenticate"].startswith("Basic")


def test_a_refresh_token_gives_a_new_access_token(guarded: SimBank) -> None:
    first = guarded.grant(**PASSWORD_GRANT).json()
    again = guarded.grant(grant_type="refresh_token", refresh_token=first["refresh_token"], client_id="fxbatch",
                          client_secret=SECRET)  # fmt: skip
    assert again.status_code == 200 and again.json()["access_token"] != first["access_token"]
    guarded.token = again.json()["access_token"]
    assert guarded.quote()["result"]["resultCode"] == 0
    unknown = guarded.grant(
        grant_type="refresh_token", refresh_token="made-up", client_id="fxbatch", client_secret=SECRET
    )
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_grant"


def test_without_configured_credentials_any_well_formed_grant_is_accepted(bank: SimBank) -> None:
    assert bank.grant(grant_type="password", username="anyone", password="anything").status_code == 200
    assert bank.grant(grant_type="client_credentials", client_id="x", client_secret="y").status_code == 200


def test_a_dealers_token_calls_only_as_that_dealer_also_once_refreshed(make: Callable[..., SimBank]) -> None:
    # The password grant's username is the dealer's e-mail: every call's header.userId must be it.
    creds = Credentials(client_id="fxbatch", client_secret=SECRET, username="Dealer@Example.com", password=PASSWORD)
    grant = {**PASSWORD_GRANT, "username": "Dealer@Example.com"}
    bank = make(credentials=creds, grant=grant)
    assert bank.quote()["result"]["resultCode"] == 0  # USER is the same address, in other case
    other = quote_body()
    other["header"]["userId"] = "someone.else@example.com"
    refused(bank.call(wire.CREATE_QUOTE, other), F.NOT_AUTHORISED, "header.userId")
    refreshed = bank.grant(grant_type="refresh_token", refresh_token=bank.grant(**grant).json()["refresh_token"],
                           client_id="fxbatch", client_secret=SECRET).json()  # fmt: skip
    bank.token = refreshed["access_token"]
    refused(bank.call(wire.CREATE_QUOTE, other), F.NOT_AUTHORISED, "header.userId")
    status = {"header": {"userId": "someone.else@example.com"}, "transactionID": str(uuid.uuid4())}
    refused(bank.call(wire.TXN_STATUS, status), F.NOT_AUTHORISED, "header.userId")


def test_a_token_that_names_no_dealer_lets_the_caller_name_one(guarded: SimBank, bank: SimBank) -> None:
    # A username that is not an e-mail address, and client_credentials, tie no header.userId.
    for sim in (guarded, bank):
        other = quote_body()
        other["header"]["userId"] = "someone.else@example.com"
        assert sim.call(wire.CREATE_QUOTE, other)["result"]["resultCode"] == 0


def test_only_the_dealer_a_quote_was_issued_to_books_cancels_or_reads_it(bank: SimBank) -> None:
    payload = bank.quoted()
    other = {"header": {"userId": "someone.else@example.com"}, "quoteID": payload["quoteId"]}
    refused(bank.call(wire.CANCEL_QUOTE, other), F.NOT_AUTHORISED, "quoteID")
    refused(bank.call(wire.LATEST_QUOTE, other), F.NOT_AUTHORISED, "quoteID")
    trade = {"quoteID": payload["quoteId"], "dealTransactionID": str(uuid.uuid4()), "quoteRate": payload["quoteRate"],
             "dealRate": payload["quoteRate"]}  # fmt: skip
    refused(bank.call(wire.BOOK_DEAL, {"header": other["header"], "trade": trade}), F.NOT_AUTHORISED, "trade.quoteID")
    assert bank.booked() == 0
    # The dealer it was issued to (the address in any case) still books it.
    assert bank.call(wire.BOOK_DEAL, {"header": {"userId": USER.upper()}, "trade": trade})["result"]["resultCode"] == 0


@pytest.mark.parametrize("authorization", [None, "Bearer made-up", "Basic eDp5"])
def test_the_api_needs_a_bearer_token_it_issued(bank: SimBank, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = bank.post(wire.API + wire.CREATE_QUOTE, json=QUOTE, headers=headers)
    assert answer.status_code == 401
    refused(answer.json(), F.NOT_AUTHORISED)


# -- HTTP --------------------------------------------------------------------------------------------
def test_paths_match_without_regard_to_case_and_an_unknown_operation_is_a_404(bank: SimBank) -> None:
    payload = bank.quoted()
    assert bank.call("BookQuotedDeal", {"header": {"userId": USER}, "trade": {
        "quoteID": payload["quoteId"], "dealTransactionID": str(uuid.uuid4()), "quoteRate": payload["quoteRate"],
        "dealRate": payload["quoteRate"]}})["result"]["resultCode"] == 0  # fmt: skip
    assert bank.call("gettxnstatus", {"header": {"userId": USER}, "transactionID": str(uuid.uuid4())})["result"]["resultCode"] > 0  # fmt: skip
    answer = bank.post(wire.API + "bookeverything", json={}, headers={"Authorization": f"Bearer {bank.token}"})
    assert answer.status_code == 404 and answer.json()["result"]["resultCode"] == 404


def test_a_body_over_64_kib_is_refused_unread(bank: SimBank) -> None:
    answer = bank.post(wire.API + wire.CREATE_QUOTE, content=b" " * (65 * 1024), headers={"Authorization": f"Bearer {bank.token}"})  # fmt: skip
    assert answer.status_code == 413


def test_the_docs_show_the_api_with_the_wire_models(bank: SimBank) -> None:
    assert bank.run(bank.client.get("/docs")).status_code == 200
    schema = bank.run(bank.client.get("/openapi.json")).json()
    for op, model in [(wire.CREATE_QUOTE, "CreateQuoteRequest"), (wire.BOOK_DEAL, "BookDealRequest"),
                      (wire.CANCEL_QUOTE, "QuoteRequest"), (wire.TXN_STATUS, "TxnStatusRequest")]:  # fmt: skip
        post = schema["paths"][wire.API + op]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/" + model)
        assert model in schema["components"]["schemas"]
    assert "dealCurrencyAmount" in schema["components"]["schemas"]["QuoteTrade"]["properties"]
    assert wire.TOKEN_PATH in schema["paths"]
    assert bank.run(bank.client.get("/health")).json() == {"status": "ok"}


def test_the_settlement_calendars_are_built_before_the_first_request(
    make: Callable[..., SimBank], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Building the first one imports every country's holiday rules (~0.1 s): inside the first
    # request it held the server's event loop, and every call in flight, that long.
    built: list[tuple[str, int]] = []
    year = calendars._year

    def recorded(ccy: str, y: int) -> dict[Any, str]:
        built.append((ccy, y))
        return year(ccy, y)

    monkeypatch.setattr(calendars, "_year", recorded)
    sim = make()
    pairs = {c for pair in RATES.mids for c in pair.split("/")}
    assert {(c, y) for c in pairs for y in (TODAY.year, TODAY.year + 1)} <= set(built)
    built.clear()
    assert sim.quote()["result"]["resultCode"] == 0
    assert all(y in (TODAY.year, TODAY.year + 1) for _, y in built)  # only the cached ones asked for
