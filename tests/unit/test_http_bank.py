"""The HTTP bank against httpx.MockTransport: token grants, documented shapes, refusals,
contract breaks, retries and unanswered bookings."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

import httpx
import numpy as np
import pyarrow as pa
import pytest
from pydantic import SecretStr

from fxbatch.bank.http import HttpBank, HttpBankConfig
from fxbatch.bank.http.wire import API, TXN_NOT_FOUND, ContractError, map_envelope
from fxbatch.bank.model import NONE, REASON_INDEX, TIMEOUT
from fxbatch.bank.port import BankUnavailable, BookBatch, QuoteBatch
from fxbatch.errors import SettingsError
from fxbatch.models import FAILURES, FailureCode

SECRET = "s3cr3t-do-not-show"
PASSWORD = "dealer-pa55word"
BASE = "http://bank.test"
OK = {"resultCode": 0, "resultMsg": "Success"}
HEADER = {"transactionId": "5d1c4f7e-0a52-4c36-9d7e-1f2a3b4c5d6e"}
BIG_QUOTE_ID = 2**53 + 1  # not representable as a float
D = [f"3f1c9a7e-2b4d-4c8e-9a1b-{i:012d}" for i in range(8)]  # deal transaction ids


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeBank:
    """A scripted bank: counts calls per path; ``api`` answers API calls."""

    def __init__(self, api: Callable[[str, dict[str, Any], httpx.Request], httpx.Response] | None = None) -> None:
        self.calls: dict[str, int] = {}
        self.tokens_issued = 0
        self.valid: set[str] = set()
        self.expires_in = 300
        self.refresh = False  # hand out refresh tokens
        self.forms: list[dict[str, str]] = []
        self.api = api or (lambda op, body, req: ok())
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls[path] = self.calls.get(path, 0) + 1
        if path == "/oauth2/token":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            self.forms.append(form)
            grant = form.get("grant_type")
            good = form.get("client_id") == "fx" and form.get("client_secret") == SECRET
            if grant == "password":
                good = good and form.get("username") == "dealer" and form.get("password") == PASSWORD
            elif grant == "refresh_token":
                good = good and form.get("refresh_token") == f"r{self.tokens_issued}"
            if not good:
                return httpx.Response(400, json={"error": "invalid_grant", "error_description":
                                                 "AADSTS50126: Error validating credentials.", "error_codes": [50126]})  # fmt: skip
            self.tokens_issued += 1
            token = f"t{self.tokens_issued}"
            self.valid.add(token)
            answer: dict[str, Any] = {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
            if self.refresh:
                answer["refresh_token"] = f"r{self.tokens_issued}"
            return httpx.Response(200, json=answer)
        if request.headers.get("authorization", "")[7:] not in self.valid:
            return httpx.Response(401, json={"header": HEADER, "result": {"resultCode": 401, "resultMsg": "expired"}})
        body = json.loads(request.content)
        op = path[len(API) :]
        self.bodies.append((op, body))
        self.requests.append(request)
        return self.api(op, body, request)


def ok(**payload: Any) -> httpx.Response:
    return httpx.Response(200, json={"header": HEADER, "result": OK, **payload})


def refused(result: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"header": HEADER, "result": result})


def txn(status: str) -> httpx.Response:
    if status == "NOT_FOUND":
        return refused({"resultCode": 404, "resultMsg": "no such transaction", "resultReasonCode": TXN_NOT_FOUND})
    return ok(transaction={"transactionId": HEADER["transactionId"], "status": status, "operation": "bookquoteddeal",
                           "context": {"transactionId": "x", "thirdPartyDealID": "y"}})  # fmt: skip


async def no_sleep(seconds: float) -> None:
    return None


OPEN: list[HttpBank] = []


@pytest.fixture(autouse=True)
def _close_banks() -> Iterator[None]:
    """Each HttpBank runs an event loop thread: stop the ones a test made."""
    yield
    while OPEN:
        OPEN.pop().close()


def make_bank(fake: FakeBank, clock: Clock | None = None, secret: str = SECRET, **cfg: Any) -> HttpBank:
    config = HttpBankConfig(BASE, client_id="fx", client_secret=SecretStr(secret), backoff_s=0.0, **cfg)
    bank = HttpBank(config, transport=httpx.MockTransport(fake), sleep=no_sleep, clock=clock or Clock())
    OPEN.append(bank)
    return bank


def quote_batch(n: int = 2, value_date: str = "2026-12-02") -> QuoteBatch:
    text = {
        f: pa.array([v] * n)
        for f, v in [("trade_id", "T1"), ("client_cif", "0123456789"), ("account_number", "0012345678"),
                     ("currency_pair", "USD/ZAR"), ("side", "BUY"), ("amount_currency", "ZAR"),
                     ("delivery", "SPOT"), ("value_date", value_date)]
    }  # fmt: skip
    return QuoteBatch(
        trade_key=np.arange(1, n + 1, dtype=np.uint64), step=np.arange(n), attempt=np.ones(n, np.int64),
        amount=np.full(n, 1000.0), amount_zar=np.full(n, 1000.0),
        is_buy=np.ones(n, bool), pair_code=np.zeros(n, np.int32), pair_names=np.array(["USD/ZAR"], dtype=object),
        trades=pa.table(text),
    )  # fmt: skip


def book_batch(n: int = 1) -> BookBatch:
    return BookBatch(
        quote_id=np.arange(1, n + 1, dtype=np.int64), deal_txn_id=pa.array(D[:n]),
        quote_rate=np.full(n, 18.0), deal_rate=np.full(n, 18.0358), trade_key=np.arange(1, n + 1, dtype=np.uint64),
        attempt=np.ones(n, np.int64), trade_id=pa.array(["T"] * n), run_id=1, batch_id=1, src_row=np.arange(n),
    )  # fmt: skip


def quote_answer(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
    return ok(payload={"quoteId": BIG_QUOTE_ID, "quoteRate": 18.5, "quoteExpiryDateTime": "2026-11-30T10:00:30Z"})


# -- the token ------------------------------------------------------------------------------------
def test_the_token_is_fetched_once_and_reused_across_calls() -> None:
    fake = FakeBank(quote_answer)
    bank = make_bank(fake)
    bank.create_quotes(quote_batch(3), 2)
    bank.create_quotes(quote_batch(3), 2)
    assert fake.tokens_issued == 1
    assert fake.calls[API + "createquote"] == 6


def test_the_documented_password_grant_sends_the_form_the_bank_documents() -> None:
    fake = FakeBank(quote_answer)
    bank = make_bank(fake, grant="password", username="dealer", password=SecretStr(PASSWORD), scope="api://fx/.default")
    assert bank.create_quotes(quote_batch(1), 1).ok.all()
    assert fake.forms[0] == {"grant_type": "password", "client_id": "fx", "client_secret": SECRET,
                             "username": "dealer", "password": PASSWORD, "scope": "api://fx/.default"}  # fmt: skip


def test_the_token_is_renewed_with_its_refresh_token_before_it_expires() -> None:
    fake = FakeBank(quote_answer)
    fake.expires_in, fake.refresh = 100, True
    clock = Clock()
    bank = make_bank(fake, clock, grant="password", username="dealer", password=SecretStr(PASSWORD))
    clock.now += 79  # 100 s token, renewed 20 s early
    bank.create_quotes(quote_batch(1), 1)
    assert fake.tokens_issued == 1
    clock.now += 2
    bank.create_quotes(quote_batch(1), 1)
    assert fake.tokens_issued == 2
    assert fake.forms[-1]["grant_type"] == "refresh_token" and fake.forms[-1]["refresh_token"] == "r1"
    assert "password" not in fake.forms[-1]


def test_a_refused_refresh_token_falls_back_on_the_grant() -> None:
    fake = FakeBank(quote_answer)
    fake.expires_in, fake.refresh = 100, True
    clock = Clock()
    bank = make_bank(fake, clock, grant="password", username="dealer", password=SecretStr(PASSWORD))
    fake.tokens_issued += 1  # the provider forgot r1
    clock.now += 90
    assert bank.create_quotes(quote_batch(1), 1).ok.all()
    assert [f["grant_type"] for f in fake.forms] == ["password", "refresh_token", "password"]


def test_a_401_gets_one_fresh_token_and_one_more_try() -> None:
    fake = FakeBank(quote_answer)
    bank = make_bank(fake)
    fake.valid.clear()  # the bank forgot every token (e.g. it restarted)
    q = bank.create_quotes(quote_batch(1), 1)
    assert q.ok.all() and fake.tokens_issued == 2


def test_bad_credentials_show_the_providers_error_and_never_a_secret() -> None:
    with pytest.raises(SettingsError) as info:
        make_bank(FakeBank(), grant="password", username="dealer", password=SecretStr("wrong-password"))
    message = info.value.message
    assert f"{BASE}/oauth2/token" in message and "invalid_grant" in message and "AADSTS50126" in message
    assert "FXBATCH_BANK_PASSWORD" in message
    assert "wrong-password" not in str(info.value) and SECRET not in str(info.value)


def test_a_user_id_that_is_not_an_email_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match="FXBATCH_BANK_USER_ID"):
        make_bank(FakeBank(), user_id="dealer")


# -- documented shapes ----------------------------------------------------------------------------
def test_quotes_read_the_documented_payload_and_keep_a_64_bit_quote_id_exact() -> None:
    q = make_bank(FakeBank(quote_answer)).create_quotes(quote_batch(2), 2)
    assert q.ok.all() and q.quote_id.tolist() == [BIG_QUOTE_ID, BIG_QUOTE_ID]
    assert list(q.quote_rate) == [18.5, 18.5]
    assert q.expires_at[0] == pytest.approx(1796032830.0)
    assert q.transaction_id is not None and q.transaction_id[0] == HEADER["transactionId"]


def test_a_quote_expiry_without_an_offset_is_the_banks_local_time_whatever_the_machines() -> None:
    from datetime import UTC, datetime

    from fxbatch.bank.http.wire import QuotePayload

    naive = QuotePayload.model_validate({"quoteId": 7, "quoteExpiryDateTime": "2026-11-30T10:00:30", "quoteRate": 18.0})
    given = QuotePayload.model_validate({"quoteId": 7, "quoteExpiryDateTime": "2026-11-30T10:00:30+00:00",
                                         "quoteRate": 18.0})  # fmt: skip
    assert naive.quoteExpiryDateTime == datetime(2026, 11, 30, 8, 0, 30, tzinfo=UTC)  # SAST is UTC+2
    assert given.quoteExpiryDateTime == datetime(2026, 11, 30, 10, 0, 30, tzinfo=UTC)  # an offset given is kept


def test_the_request_has_the_documented_shape_and_no_fxbatch_headers() -> None:
    fake = FakeBank(quote_answer)
    make_bank(fake, user_id="dealer@bank.test").create_quotes(quote_batch(1), 1)
    op, body = fake.bodies[0]
    assert op == "createquote" and body["header"] == {"userId": "dealer@bank.test"}
    assert body["customer"] == {
        "cifNo": "0123456789",
        "fromSettlementAccount": {"currency": "ZAR", "accountNumber": "0012345678"},  # the client buys USD with ZAR
        "toSettlementAccount": {"currency": "USD", "accountNumber": "0012345678"},
    }
    trade = body["trade"]
    assert trade["tradeType"] == "Buy" and trade["deliveryType"] == "Spot" and trade["currencyPair"] == "USD/ZAR"
    assert trade["dealCurrency"] == "ZAR" and trade["dealCurrencyAmount"] == 1000.0
    assert trade["settlementDate"] == "20261202" and "T" in trade["dealDateTime"]
    assert not [h for h in fake.requests[0].headers if h.lower().startswith("x-fxbatch")]


def test_a_booking_sends_quote_rate_and_deal_rate_and_a_uuid_deal_id() -> None:
    fake = FakeBank(lambda op, body, req: ok())
    b = make_bank(fake).book_deals(book_batch(1), 1)
    assert b.ok.all() and b.deal_rate[0] == 18.0358
    assert fake.bodies[0][1]["trade"] == {"quoteID": 1, "dealTransactionID": D[0], "quoteRate": 18.0,
                                          "dealRate": 18.0358}  # fmt: skip


def test_unbooked_quotes_are_cancelled_with_the_documented_request() -> None:
    fake = FakeBank(lambda op, body, req: httpx.Response(200, json={"header": HEADER, "result": {"resultCode": 0,
                                                                    "resultmsg": "Success"}}))  # fmt: skip
    r = make_bank(fake).cancel_quotes(np.array([BIG_QUOTE_ID, 5], dtype=np.int64), 2)
    assert r.ok.all()
    assert sorted(body["quoteID"] for op, body in fake.bodies if op == "cancelquote") == [5, BIG_QUOTE_ID]


# -- refusals -------------------------------------------------------------------------------------
def test_envelopes_map_to_the_engines_failure_codes() -> None:
    no_funds = {"result": {"resultCode": 402, "resultMsg": "no funds", "resultReasonCode": "INSUFFICIENT_FUNDS"}}
    assert map_envelope(200, no_funds) == (402, REASON_INDEX["INSUFFICIENT_FUNDS"], "no funds")
    assert map_envelope(403, {})[1] == REASON_INDEX["NOT_AUTHORISED"]
    assert map_envelope(502, {})[1] == REASON_INDEX["SERVICE_UNAVAILABLE"]
    assert map_envelope(200, {"result": OK}) == (0, NONE, None)


def test_the_documented_validation_refusal_is_shown_on_the_trade_and_never_retried() -> None:
    documented = {"resultCode": 1, "resultmsg": "Validation failed",
                  "validationErrors": [{"validation": "cifNo", "error": "INVALID CIF NUMBER"}]}  # fmt: skip
    fake = FakeBank(lambda op, body, req: refused(documented))
    q = make_bank(fake).create_quotes(quote_batch(1), 1)
    assert (q.result_code[0], q.reason_idx[0]) == (1, REASON_INDEX["BANK_VALIDATION"])
    assert q.message[0] == "Validation failed: cifNo: INVALID CIF NUMBER"
    assert fake.calls[API + "createquote"] == 1
    assert not FAILURES[FailureCode.BANK_VALIDATION].auto_retry


def test_a_refusal_fxbatch_does_not_know_is_bank_rejected_with_the_banks_code() -> None:
    unknown = {"result": {"resultCode": 77, "resultMsg": "Dealer desk closed", "resultReasonCode": "DESK_CLOSED"}}
    assert map_envelope(200, unknown) == (
        77,
        REASON_INDEX["BANK_REJECTED"],
        "Dealer desk closed (bank code DESK_CLOSED)",
    )
    # an unknown reason is never guessed from the result code
    late = {"result": {"resultCode": 410, "resultMsg": "late", "resultReasonCode": "X_LATE"}}
    assert map_envelope(200, late)[1] == REASON_INDEX["BANK_REJECTED"]
    assert map_envelope(409, {"result": {"resultCode": 9}})[1] == REASON_INDEX["BANK_REJECTED"]
    # nor from fxbatch's own simulator's numbers: a bare code is the bank's, shown as it is
    closed = FAILURES[FailureCode.MARKET_CLOSED].result_code
    assert map_envelope(200, {"result": {"resultCode": closed, "resultMsg": "no"}}) == (
        closed,
        REASON_INDEX["BANK_REJECTED"],
        f"no (bank code {closed})",
    )
    assert not FAILURES[FailureCode.BANK_REJECTED].auto_retry


def test_a_booking_whose_client_rate_is_not_above_zero_is_refused_unsent_and_the_others_go() -> None:
    fake = FakeBank(lambda op, body, req: ok())
    batch = book_batch(3)
    batch.quote_rate[:] = 0.1151  # JPY/ZAR; 1,500 pips sold down takes the client's rate below zero
    batch.deal_rate[:] = [0.1151 - 0.15, 0.1161, float("nan")]
    b = make_bank(fake).book_deals(batch, 3)
    assert b.ok.tolist() == [False, True, False]
    assert b.reason_idx[0] == b.reason_idx[2] == REASON_INDEX["BANK_VALIDATION"]
    assert "the client's rate would be -0.0349 (the quote 0.1151" in b.message[0]
    assert [body["trade"]["dealTransactionID"] for op, body in fake.bodies if op == "bookquoteddeal"] == [D[1]]


def test_a_trade_the_bank_would_refuse_is_not_sent() -> None:
    fake = FakeBank(quote_answer)
    q = make_bank(fake).create_quotes(quote_batch(1, value_date="2026-13-45"), 1)
    assert q.reason_idx[0] == REASON_INDEX["BANK_VALIDATION"] and "settlementDate" in q.message[0]
    assert API + "createquote" not in fake.calls


# -- contract breaks ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ({"header": HEADER, "result": OK, "quoteId": 7, "quoteRate": 18.5}, "payload"),  # the old flat shape
        ({"header": HEADER, "result": OK, "payload": {"quoteId": 7.5, "quoteRate": 18.5,
                                                      "quoteExpiryDateTime": "2026-11-30T10:00:30Z"}}, "payload.quoteId"),
        ({"header": HEADER, "result": OK, "payload": {"quoteId": "7", "quoteRate": 18.5,
                                                      "quoteExpiryDateTime": "2026-11-30T10:00:30Z"}}, "payload.quoteId"),
        ({"header": HEADER, "result": OK, "payload": {"quoteId": 7, "quoteRate": 18.5}}, "payload.quoteExpiryDateTime"),
        ({"result": OK, "payload": {"quoteId": 7, "quoteRate": 1.0, "quoteExpiryDateTime": "2026-11-30T10:00:30Z"}},
         "header"),
        ({"header": HEADER, "result": {"resultCode": "zero"}}, "result.resultCode"),
    ],
)  # fmt: skip
def test_an_answer_that_breaks_the_contract_raises_naming_the_call_and_the_field(
    answer: dict[str, Any], named: str
) -> None:
    fake = FakeBank(lambda op, body, req: httpx.Response(200, json=answer))
    with pytest.raises(ContractError) as info:
        make_bank(fake).create_quotes(quote_batch(3), 2)
    assert "createquote" in str(info.value) and f"field {named}" in str(info.value)


def test_an_answer_that_is_not_json_breaks_the_contract() -> None:
    fake = FakeBank(lambda op, body, req: httpx.Response(200, text="<html>gateway</html>"))
    with pytest.raises(ContractError, match=r"bookquoteddeal.*not JSON"):
        make_bank(fake).book_deals(book_batch(1), 1)


@pytest.mark.parametrize("status", [400, 404, 405, 413])
def test_an_error_status_whose_body_is_not_the_apis_answer_breaks_the_contract(status: int) -> None:
    # A proxy's page for a wrong path is not the bank refusing each trade: the run stops, resumable.
    fake = FakeBank(lambda op, body, req: httpx.Response(status, text="<html>Not Found</html>"))
    with pytest.raises(ContractError, match=rf"createquote answer \(HTTP {status}\).*not the API's answer"):
        make_bank(fake).create_quotes(quote_batch(2), 2)


def test_an_error_status_with_the_apis_result_block_is_the_trades_refusal() -> None:
    answer = {"result": {"resultCode": 1, "resultMsg": "Validation failed",
                         "validationErrors": [{"validation": "cifNo", "error": "INVALID CIF NUMBER"}]}}  # fmt: skip
    fake = FakeBank(lambda op, body, req: httpx.Response(422, json=answer))  # no header: the block is enough
    q = make_bank(fake).create_quotes(quote_batch(1), 1)
    assert q.reason_idx[0] == REASON_INDEX[FailureCode.BANK_VALIDATION.value]
    assert q.message[0] == "Validation failed: cifNo: INVALID CIF NUMBER"


def test_a_broken_cancel_answer_fails_that_cancel_only_and_stops_no_booking() -> None:
    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "cancelquote" and body["quoteID"] == 5:
            return httpx.Response(200, text="OK")
        return ok()

    bank = make_bank(FakeBank(api))
    r = bank.cancel_quotes(np.array([4, 5, 6], dtype=np.int64), 3)
    assert r.result_code.tolist() == [0, 1, 0] and "cancelquote" in str(r.message[1])
    assert bank.book_deals(book_batch(2), 2).ok.all()  # the bank is not taken for unreachable


# -- retries and unanswered bookings --------------------------------------------------------------
def test_a_5xx_on_createquote_is_retried_until_it_answers() -> None:
    answers = iter([503, 502, 200])

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        code = next(answers)
        return quote_answer(op, body, req) if code == 200 else httpx.Response(code, text="busy")

    fake = FakeBank(api)
    q = make_bank(fake).create_quotes(quote_batch(1), 1)
    assert q.ok.all() and fake.calls[API + "createquote"] == 3


def test_an_unanswered_booking_found_booked_is_not_sent_again() -> None:
    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=req)
        assert body["transactionID"] == D[0]  # asked about by the deal's own id
        return txn("COMPLETED")

    fake = FakeBank(api)
    b = make_bank(fake).book_deals(book_batch(1), 1)
    assert b.ok.all() and b.deal_rate[0] == 18.0358  # the rate it sent
    assert fake.calls[API + "bookquoteddeal"] == 1 and fake.calls[API + "GetTxnStatus"] == 1


# The bank's "no such transaction" read from its result block, as a 200 or as a 404.
@pytest.mark.parametrize("status", [200, 404])
def test_an_unanswered_booking_the_bank_has_not_got_is_booked_again_with_the_same_id(status: int) -> None:
    booked: list[str] = []

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            booked.append(body["trade"]["dealTransactionID"])
            if len(booked) == 1:
                raise httpx.ReadTimeout("timed out", request=req)
            return ok()
        return refused(
            {"resultCode": 404, "resultMsg": "no such transaction", "resultReasonCode": TXN_NOT_FOUND}, status
        )

    b = make_bank(FakeBank(api)).book_deals(book_batch(1), 1)
    assert b.ok.all() and booked == [D[0], D[0]]


def test_a_status_lookup_the_bank_refuses_otherwise_is_never_taken_for_no_such_deal() -> None:
    booked: list[str] = []

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            booked.append(body["trade"]["dealTransactionID"])
            raise httpx.ReadTimeout("timed out", request=req)
        return refused({"resultCode": 3, "resultMsg": "try later", "resultReasonCode": "BUSY"})

    b = make_bank(FakeBank(api)).book_deals(book_batch(1), 1)
    assert booked == [D[0]]  # not booked again
    assert b.reason_idx[0] == TIMEOUT and b.resolved is not None and not b.resolved[0]


def test_a_booking_that_never_resolves_is_reported_timeout_unknown() -> None:
    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            return httpx.Response(500, text="oops")
        return txn("NOT_FOUND")

    b = make_bank(FakeBank(api)).book_deals(book_batch(2), 2)
    assert list(b.reason_idx) == [TIMEOUT, TIMEOUT] and not b.ok.any()
    # The last try had no answer either: the caller must still ask the bank once the call is over.
    assert b.resolved is not None and not b.resolved.any()


def test_a_pending_booking_is_asked_about_again_after_a_backoff_and_then_left_for_the_caller() -> None:
    booked: list[str] = []

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            booked.append(body["trade"]["dealTransactionID"])
            raise httpx.ReadTimeout("timed out", request=req)
        return txn("PENDING")

    fake = FakeBank(api)
    b = make_bank(fake).book_deals(book_batch(1), 1)
    assert booked == [D[0]]  # the bank has it in hand: not sent again
    assert fake.calls[API + "GetTxnStatus"] > 1
    assert b.reason_idx[0] == TIMEOUT and b.resolved is not None and not b.resolved[0]


def test_a_pending_booking_that_completes_is_booked() -> None:
    answers = iter(["PENDING", "PENDING", "COMPLETED"])

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            raise httpx.ReadTimeout("timed out", request=req)
        return txn(next(answers))

    b = make_bank(FakeBank(api)).book_deals(book_batch(1), 1)
    assert b.ok.all()


def test_a_duplicate_transaction_for_a_deal_already_ours_is_a_success() -> None:
    # An earlier try booked it and its answer was lost; the retry came with a new quote.
    dup = {"resultCode": 4093, "resultMsg": "duplicate", "resultReasonCode": "DUPLICATE_TRANSACTION"}
    fake = FakeBank(lambda op, body, req: refused(dup) if op == "bookquoteddeal" else txn("COMPLETED"))
    assert make_bank(fake).book_deals(book_batch(1), 1).ok.all()
    fake = FakeBank(lambda op, body, req: refused(dup) if op == "bookquoteddeal" else txn("NOT_FOUND"))
    b = make_bank(fake).book_deals(book_batch(1), 1)
    assert b.reason_idx[0] == REASON_INDEX["DUPLICATE_TRANSACTION"]


def test_a_bank_unreachable_past_the_window_raises_bank_unavailable() -> None:
    clock = Clock()
    fake = FakeBank()

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        clock.now += 1.0
        raise httpx.ConnectError("refused", request=req)

    fake.api = api
    bank = make_bank(fake, clock, unreachable_window_s=5.0)
    with pytest.raises(BankUnavailable):
        bank.create_quotes(quote_batch(3), 2)
    assert fake.calls[API + "createquote"] < 30  # gave up, did not loop


def test_calls_per_second_are_capped() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    config = HttpBankConfig(BASE, client_id="fx", client_secret=SecretStr(SECRET), max_calls_per_s=10.0)
    bank = HttpBank(config, transport=httpx.MockTransport(FakeBank(quote_answer)), sleep=sleep)
    OPEN.append(bank)
    bank.create_quotes(quote_batch(5), 1)
    assert sum(waits) >= 0.3  # 5 calls at 10/s: the last waits ~0.4 s after the first


def test_a_throttled_booking_is_sent_again_without_asking_status_first() -> None:
    answers = iter([429, 200])

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        return httpx.Response(429, text="slow down") if next(answers) == 429 else ok()

    fake = FakeBank(api)
    b = make_bank(fake).book_deals(book_batch(1), 1)
    assert b.ok.all() and fake.calls[API + "bookquoteddeal"] == 2 and API + "GetTxnStatus" not in fake.calls


def test_a_throttled_call_waits_as_long_as_its_retry_after_header_asks() -> None:
    answers = iter([429, 429, 200])
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        code = next(answers)
        if code == 200:
            return txn("COMPLETED")
        return httpx.Response(429, headers={"Retry-After": "7" if len(slept) == 0 else "3600"}, text="slow down")

    config = HttpBankConfig(BASE, client_id="fx", client_secret=SecretStr(SECRET), backoff_s=0.0)
    bank = HttpBank(config, transport=httpx.MockTransport(FakeBank(api)), sleep=sleep, clock=Clock())
    OPEN.append(bank)
    found = bank.transaction_status(pa.array([D[0]]), 1)
    assert found.status.tolist() == ["COMPLETED"]
    assert slept == [7.0, 60.0]  # as asked, and never over a minute


def mock_bank(api: Callable[[httpx.Request], Awaitable[httpx.Response]]) -> HttpBank:
    """An HttpBank (real clock and sleeps) over the async mock API ``api``; the token is granted."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        return await api(request)

    bank = HttpBank(HttpBankConfig(BASE, client_id="fx", client_secret=SecretStr(SECRET)),
                    transport=httpx.MockTransport(handler))  # fmt: skip
    OPEN.append(bank)
    return bank


class CountingBank:
    """An HttpBank over a mock API that answers quotes after 2 ms and records the most calls in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.bank = mock_bank(self.handler)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.002)
        self.in_flight -= 1
        return quote_answer("createquote", {}, request)


def test_no_more_calls_than_max_in_flight_are_in_flight_at_once() -> None:
    counting = CountingBank()
    q = counting.bank.create_quotes(quote_batch(40), 8)
    assert q.ok.all() and counting.most == 8


def test_two_threads_sharing_a_bank_stay_within_max_in_flight_together() -> None:
    counting = CountingBank()
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(counting.bank.create_quotes, quote_batch(30), 6) for _ in range(2)]
        assert all(r.result().ok.all() for r in runs)
    assert counting.most == 6


def test_a_small_call_shares_the_slots_with_a_big_one_in_flight_instead_of_waiting_for_it() -> None:
    # The engine quotes a retry wave while the wave before books: the retries must not wait for
    # every booking to be answered first.
    counting = CountingBank()
    with ThreadPoolExecutor(2) as pool:
        ended: dict[str, float] = {}

        def call(name: str, n: int) -> None:
            assert counting.bank.create_quotes(quote_batch(n), 4).ok.all()
            ended[name] = time.monotonic()

        big = pool.submit(call, "big", 200)  # 50 rounds of 2 ms at 4 in flight
        time.sleep(0.02)
        small = pool.submit(call, "small", 4)
        big.result(), small.result()
    assert ended["small"] < ended["big"] - 0.03  # the big call has ~40 rounds to go when it starts
    assert counting.most == 4


def test_quote_cancels_take_only_the_slots_no_quote_or_booking_wants() -> None:
    # Releasing quotes is best effort: the cancels of a refused booking wait while a wave's
    # quotes (or bookings) have requests to send, and go as soon as slots fall idle.
    arrived: list[str] = []
    quoting = threading.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        op = request.url.path.rsplit("/", 1)[1]
        arrived.append(op)
        quoting.set()
        await asyncio.sleep(0.001)
        return quote_answer(op, {}, request) if op == "createquote" else ok()

    bank = mock_bank(handler)
    with ThreadPoolExecutor(2) as pool:
        quotes = pool.submit(bank.create_quotes, quote_batch(20), 2)
        assert quoting.wait(30)
        cancels = bank.cancel_quotes(np.array([7, 8, 9], dtype=np.int64), 2)
        assert quotes.result().ok.all()
    assert (cancels.result_code == 0).all()
    assert arrived == ["createquote"] * 20 + ["cancelquote"] * 3


def test_quote_cancels_leave_a_quarter_of_the_slots_for_quotes_and_bookings() -> None:
    # A request in flight cannot be taken back: had the cancels taken every idle slot, a quote
    # asked just after (a refused booking's retry) would wait for one of them to be answered.
    held = {"now": 0, "most": 0}
    quoted = threading.Event()
    deadline = time.monotonic() + 30

    async def handler(request: httpx.Request) -> httpx.Response:
        op = request.url.path.rsplit("/", 1)[1]
        if op == "createquote":
            quoted.set()
            return quote_answer(op, {}, request)
        held["now"] += 1
        held["most"] = max(held["most"], held["now"])
        while not quoted.is_set() and time.monotonic() < deadline:  # held until a quote came through
            await asyncio.sleep(0.001)
        held["now"] -= 1
        return ok()

    bank = mock_bank(handler)
    with ThreadPoolExecutor(1) as pool:
        cancels = pool.submit(bank.cancel_quotes, np.arange(1, 21, dtype=np.int64), 8)
        while held["now"] < 6 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert bank.create_quotes(quote_batch(1), 8).ok.all()
        assert (cancels.result().result_code == 0).all()
    assert quoted.is_set() and held["most"] == 6  # 8 slots: 6 for cancels, 2 kept free


def test_a_booking_answered_timeout_unknown_is_looked_up_in_the_same_call_and_marked_resolved() -> None:
    timeout = {"resultCode": 504, "resultMsg": "no answer", "resultReasonCode": "TIMEOUT_UNKNOWN"}

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            return ok() if body["trade"]["dealTransactionID"] == D[2] else refused(timeout)
        # The bank made D0 before timing out, never D1, and still has D3 in hand.
        return txn({D[0]: "COMPLETED", D[3]: "PENDING"}.get(body["transactionID"], "NOT_FOUND"))

    fake = FakeBank(api)
    b = make_bank(fake).book_deals(book_batch(4), 4)
    assert b.ok.tolist() == [True, False, True, False]
    assert b.reason_idx[1] == TIMEOUT and b.reason_idx[3] == TIMEOUT
    # Resolved: found booked, or the bank has no such deal; D3 (PENDING) is left for the caller.
    assert b.resolved is not None and b.resolved.tolist() == [True, True, False, False]
    assert fake.calls[API + "bookquoteddeal"] == 4  # nothing booked again


# -- stop sending (a cancelled run) -----------------------------------------------------------------
class Held:
    """An async transport: API calls wait at a gate (the token passes), counted as they arrive."""

    def __init__(self, fake: FakeBank) -> None:
        self.fake = fake
        self.gate = threading.Event()
        self.arrived = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith(API) and not request.url.path.endswith(("cancelquote", "GetTxnStatus")):
            self.arrived += 1
            while not self.gate.is_set():
                await asyncio.sleep(0.005)
        return self.fake(request)


def test_after_stop_sending_a_call_in_progress_sends_no_more_quotes_and_answers_the_rest_not_sent() -> None:
    fake = FakeBank(quote_answer)
    held = Held(fake)
    config = HttpBankConfig(BASE, client_id="fx", client_secret=SecretStr(SECRET), backoff_s=0.0)
    bank = HttpBank(config, transport=httpx.MockTransport(held), sleep=no_sleep, clock=Clock())
    OPEN.append(bank)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(bank.create_quotes, quote_batch(20), 2)
        while held.arrived < 2:  # the two requests in flight (max_in_flight) reached the bank
            time.sleep(0.005)
        bank.stop_sending()
        held.gate.set()
        replies = answer.result(30)
    assert fake.calls[API + "createquote"] == 2
    assert replies.sent is not None and replies.sent.tolist() == [True] * 2 + [False] * 18
    assert replies.ok[:2].all() and not replies.ok[2:].any()  # the two in flight end as the bank answered
    assert (replies.quote_id[2:] == 0).all() and (replies.reason_idx[2:] == NONE).all()
    # A booking is not sent either, not even one request; releasing the quotes still is.
    booked = bank.book_deals(book_batch(3), 2)
    assert booked.unsent.all() and API + "bookquoteddeal" not in fake.calls
    assert bank.cancel_quotes(np.array([1, 2], dtype=np.int64), 2).ok.all()
    assert fake.calls[API + "cancelquote"] == 2


def test_a_booking_whose_answer_was_lost_is_not_booked_again_after_stop_sending() -> None:
    sent: list[str] = []
    fake: FakeBank

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            sent.append(body["trade"]["dealTransactionID"])
            bank.stop_sending()  # the run is cancelled while this booking's answer is lost
            raise httpx.ReadTimeout("lost", request=req)
        return txn("NOT_FOUND")  # the bank has no such deal: it was never booked

    fake = FakeBank(api)
    bank = make_bank(fake)
    replies = bank.book_deals(book_batch(1), 1)
    assert sent == [D[0]], "booked once, never sent again once sending stopped"
    assert replies.unsent.tolist() == [True] and not replies.ok.any()


# -- bookings handed back part by part ------------------------------------------------------------
class GatedBookings:
    """An HttpBank whose bookings of deals D[gated:] wait until ``gate`` is set; ``broken`` deals
    are answered with a body that is not JSON (a contract break)."""

    def __init__(self, gated: int = len(D), broken: frozenset[str] = frozenset()) -> None:
        self.gate = threading.Event()
        self.gated = set(D[gated:])
        self.broken = broken
        self.sent: list[str] = []
        self.held: list[str] = []
        self.two_held = threading.Event()  # two gated bookings are waiting at the gate
        self.bank = mock_bank(self.handler)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        deal = json.loads(request.content)["trade"]["dealTransactionID"]
        self.sent.append(deal)
        if deal in self.gated:
            self.held.append(deal)
            if len(self.held) >= 2:
                self.two_held.set()
        deadline = time.monotonic() + 30  # a test that never opens the gate fails, not hangs
        while deal in self.gated and not self.gate.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        if deal in self.broken:
            return httpx.Response(200, text="<html>gateway</html>")
        return ok()


def test_booking_answers_are_handed_back_part_by_part_in_order_while_later_ones_are_in_flight() -> None:
    gated = GatedBookings(gated=4)
    parts = gated.bank.book_deals_in_parts(book_batch(8), 2, part_rows=2)
    with ThreadPoolExecutor(1) as pool:
        # Deals 4..7 are not answered until the gate opens: the first two parts come before.
        first = [pool.submit(next, parts).result(timeout=30) for _ in range(2)]
        assert gated.two_held.wait(30)  # deals 4 and 5 go out as parts 0 and 1 are answered
        assert not gated.gate.is_set() and set(gated.sent) >= {D[4], D[5]}  # asked, not answered
        gated.gate.set()
        rest = list(parts)
    got = [(lo, hi, replies.ok.tolist()) for lo, hi, replies in first + rest]
    assert got == [(0, 2, [True, True]), (2, 4, [True, True]), (4, 6, [True, True]), (6, 8, [True, True])]
    assert sorted(gated.sent) == sorted(D)  # each booked once


def test_a_caller_that_stops_taking_parts_sends_no_more_bookings(monkeypatch: pytest.MonkeyPatch) -> None:
    import fxbatch.bank.http.bank as bank_module

    closing = threading.Event()  # the stream is closing: it now waits for the requests in flight

    def wait(fs: Any, *args: Any, **kwargs: Any) -> Any:
        closing.set()
        return futures_wait(fs, *args, **kwargs)

    futures_wait = bank_module.futures.wait
    monkeypatch.setattr(bank_module, "futures", type("Futures", (), {"wait": staticmethod(wait)}))
    gated = GatedBookings(gated=2)  # deals 0 and 1 are answered; 2 and 3 then wait at the gate
    parts = gated.bank.book_deals_in_parts(book_batch(8), 2, part_rows=2)
    with ThreadPoolExecutor(1) as pool:
        lo, hi, replies = pool.submit(next, parts).result(timeout=30)
        assert (lo, hi, replies.ok.tolist()) == (0, 2, [True, True])
        assert gated.two_held.wait(30)  # deals 2 and 3 are in flight
        closed = pool.submit(parts.close)  # the caller stops after the first part
        assert closing.wait(30)
        assert not closed.done()  # the requests in flight end before the stream does
        gated.gate.set()
        closed.result(timeout=30)
    # Deals 2 and 3 were answered; 4 to 7, not sent when the caller stopped, are never sent.
    assert sorted(gated.sent) == sorted(D[:4])


def test_a_booking_call_that_breaks_hands_back_the_parts_answered_before_and_then_raises() -> None:
    # Two in flight, taken in order: deals 0..3 are answered before deal 5 is even asked for.
    gated = GatedBookings(broken=frozenset({D[5]}))
    gated.gate.set()
    got: list[tuple[int, int]] = []
    with pytest.raises(ContractError, match="bookquoteddeal"):
        for lo, hi, replies in gated.bank.book_deals_in_parts(book_batch(8), 2, part_rows=2):
            assert replies.ok.all() and replies.sent is None
            got.append((lo, hi))
    # The part holding the broken answer is never handed back as answered (nor "not sent").
    assert got == [(0, 2), (2, 4)]
