"""The HTTP bank against httpx.MockTransport: token, envelopes, retries, unanswered bookings."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from pydantic import SecretStr

from fxbatch.bank.http import API, HttpBank, HttpBankConfig, KeepAliveTransport, map_envelope
from fxbatch.bank.model import NONE, REASON_INDEX, TIMEOUT
from fxbatch.bank.port import BankUnavailable, BookBatch, QuoteBatch
from fxbatch.errors import SettingsError

SECRET = "s3cr3t-do-not-show"
BASE = "http://bank.test"
OK = {"resultCode": 0, "resultMsg": "Success"}


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
        self.api = api or (lambda op, body, req: httpx.Response(200, json={"result": OK}))
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls[path] = self.calls.get(path, 0) + 1
        if path == "/oauth2/token":
            auth = request.headers.get("authorization", "")
            if auth != httpx.BasicAuth("fx", SECRET)._auth_header:
                return httpx.Response(401, json={"error": "invalid_client"})
            self.tokens_issued += 1
            token = f"t{self.tokens_issued}"
            self.valid.add(token)
            return httpx.Response(200, json={"access_token": token, "expires_in": self.expires_in})
        if request.headers.get("authorization", "")[7:] not in self.valid:
            return httpx.Response(401, json={"result": {"resultCode": 401, "resultMsg": "expired"}})
        body = json.loads(request.content)
        op = path[len(API) :]
        self.bodies.append((op, body))
        return self.api(op, body, request)


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


def quote_batch(n: int = 2) -> QuoteBatch:
    text = {
        f: pa.array([v] * n)
        for f, v in [("trade_id", "T1"), ("client_cif", "0123456789"), ("account_number", "0012345678"),
                     ("currency_pair", "USD/ZAR"), ("side", "BUY"), ("amount_currency", "ZAR"),
                     ("delivery", "SPOT"), ("value_date", "2026-12-02")]
    }  # fmt: skip
    return QuoteBatch(
        trade_key=np.arange(1, n + 1, dtype=np.uint64), step=np.arange(n), attempt=np.ones(n, np.int64),
        amount=np.full(n, 1000.0), amount_zar=np.full(n, 1000.0),
        is_buy=np.ones(n, bool), pair_code=np.zeros(n, np.int32), pair_names=np.array(["USD/ZAR"], dtype=object),
        trades=pa.table(text),
    )  # fmt: skip


def book_batch(n: int = 1) -> BookBatch:
    return BookBatch(
        quote_id=np.arange(1, n + 1, dtype=np.int64), deal_txn_id=pa.array([f"D{i}" for i in range(n)]),
        quote_rate=np.full(n, 18.0), deal_rate=np.full(n, 18.0), trade_key=np.arange(1, n + 1, dtype=np.uint64),
        attempt=np.ones(n, np.int64), trade_id=pa.array(["T"] * n), run_id=1, batch_id=1, src_row=np.arange(n),
    )  # fmt: skip


def quote_answer(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json={"header": {"transactionId": "x"}, "result": OK, "quoteId": 7, "quoteRate": 18.5,
              "quoteExpiryDateTime": "2026-11-30T10:00:30Z"},
    )  # fmt: skip


def test_the_token_is_fetched_once_and_reused_across_calls() -> None:
    fake = FakeBank(quote_answer)
    bank = make_bank(fake)
    bank.create_quotes(quote_batch(3), 2)
    bank.create_quotes(quote_batch(3), 2)
    assert fake.tokens_issued == 1
    assert fake.calls[API + "createquote"] == 6


def test_the_token_is_refreshed_before_it_expires() -> None:
    fake = FakeBank(quote_answer)
    fake.expires_in = 100
    clock = Clock()
    bank = make_bank(fake, clock)
    clock.now += 79  # 100 s token, refreshed 20 s early
    bank.create_quotes(quote_batch(1), 1)
    assert fake.tokens_issued == 1
    clock.now += 2
    bank.create_quotes(quote_batch(1), 1)
    assert fake.tokens_issued == 2


def test_a_401_gets_one_fresh_token_and_one_more_try() -> None:
    fake = FakeBank(quote_answer)
    bank = make_bank(fake)
    fake.valid.clear()  # the bank forgot every token (e.g. it restarted)
    q = bank.create_quotes(quote_batch(1), 1)
    assert q.ok.all() and fake.tokens_issued == 2


def test_bad_credentials_name_the_token_endpoint_and_never_the_secret() -> None:
    with pytest.raises(SettingsError) as info:
        make_bank(FakeBank(), secret="wrong-secret")
    assert f"{BASE}/oauth2/token" in info.value.message
    assert "wrong-secret" not in str(info.value) and SECRET not in str(info.value)


def test_quotes_map_the_success_payload() -> None:
    q = make_bank(FakeBank(quote_answer)).create_quotes(quote_batch(2), 2)
    assert q.ok.all() and list(q.quote_id) == [7, 7] and list(q.quote_rate) == [18.5, 18.5]
    assert q.expires_at[0] == pytest.approx(1796032830.0)


def test_the_request_carries_the_api_shape_and_the_simulator_headers() -> None:
    seen: list[httpx.Request] = []

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return quote_answer(op, body, req)

    fake = FakeBank(api)
    make_bank(fake, user_id="dealer@bank.test").create_quotes(quote_batch(1), 1)
    op, body = fake.bodies[0]
    assert op == "createquote" and body["header"] == {"userId": "dealer@bank.test"}
    assert body["customer"]["cifNo"] == "0123456789"
    assert body["trade"]["tradeType"] == "Buy" and body["trade"]["settlementDate"] == "20261202"
    assert seen[0].headers["x-fxbatch-trade-key"] == "1" and seen[0].headers["x-fxbatch-attempt"] == "1"


def test_envelopes_map_to_the_engines_failure_codes() -> None:
    refused = {"result": {"resultCode": 402, "resultMsg": "no funds", "resultReasonCode": "INSUFFICIENT_FUNDS"}}
    assert map_envelope(200, refused) == (402, REASON_INDEX["INSUFFICIENT_FUNDS"], "no funds")
    # an unknown reason falls back on the result code of fxbatch's table
    assert map_envelope(200, {"result": {"resultCode": 410, "resultMsg": "late", "resultReasonCode": "X_LATE"}}) == (
        410, REASON_INDEX["QUOTE_EXPIRED"], "late",
    )  # fmt: skip
    assert map_envelope(403, {})[1] == REASON_INDEX["NOT_AUTHORISED"]
    assert map_envelope(502, {})[1] == REASON_INDEX["SERVICE_UNAVAILABLE"]
    assert map_envelope(200, {"result": OK}) == (0, NONE, None)


def test_the_documented_validation_refusal_is_bank_validation_with_its_fields_and_never_retried() -> None:
    from fxbatch.models import FAILURES, FailureCode

    documented = {"result": {"resultCode": 1, "resultmsg": "Validation failed",
                             "validationErrors": [{"validation": "cifNo", "error": "INVALID CIF NUMBER"}]}}  # fmt: skip
    code, reason, message = map_envelope(400, documented)
    assert (code, reason) == (1, REASON_INDEX["BANK_VALIDATION"])
    assert message == "Validation failed (cifNo: INVALID CIF NUMBER)"
    assert not FAILURES[FailureCode.BANK_VALIDATION].auto_retry


def test_a_refusal_fxbatch_does_not_know_is_bank_rejected_with_the_banks_code() -> None:
    from fxbatch.models import FAILURES, FailureCode

    unknown = {"result": {"resultCode": 77, "resultMsg": "Dealer desk closed", "resultReasonCode": "DESK_CLOSED"}}
    assert map_envelope(200, unknown) == (
        77,
        REASON_INDEX["BANK_REJECTED"],
        "Dealer desk closed (bank code DESK_CLOSED)",
    )
    assert map_envelope(409, {"result": {"resultCode": 9}})[1] == REASON_INDEX["BANK_REJECTED"]
    assert not FAILURES[FailureCode.BANK_REJECTED].auto_retry


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
        txn = {"status": "COMPLETED", "context": {"quoteID": 1, "dealRate": 18.25}}
        return httpx.Response(200, json={"result": OK, "transaction": txn})

    fake = FakeBank(api)
    b = make_bank(fake).book_deals(book_batch(1), 1)
    assert b.ok.all() and b.deal_rate[0] == 18.25
    assert fake.calls[API + "bookquoteddeal"] == 1 and fake.calls[API + "GetTxnStatus"] == 1


def test_an_unanswered_booking_the_bank_has_not_got_is_booked_again_with_the_same_id() -> None:
    booked: list[str] = []

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            booked.append(body["trade"]["dealTransactionID"])
            if len(booked) == 1:
                raise httpx.ReadTimeout("timed out", request=req)
            return httpx.Response(200, json={"result": OK, "deal": {"dealRate": 18.0}})
        return httpx.Response(200, json={"result": OK, "transaction": {"status": "NOT_FOUND"}})

    b = make_bank(FakeBank(api)).book_deals(book_batch(1), 1)
    assert b.ok.all() and booked == ["D0", "D0"]


def test_a_booking_that_never_resolves_is_reported_timeout_unknown() -> None:
    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            return httpx.Response(500, text="oops")
        return httpx.Response(200, json={"result": OK, "transaction": {"status": "NOT_FOUND"}})

    b = make_bank(FakeBank(api)).book_deals(book_batch(2), 2)
    assert list(b.reason_idx) == [TIMEOUT, TIMEOUT] and not b.ok.any()
    # The last try had no answer either: the caller must still ask the bank once the call is over.
    assert b.resolved is not None and not b.resolved.any()


def test_an_unanswered_booking_the_bank_has_pending_is_not_booked_again_and_left_for_the_caller() -> None:
    booked: list[str] = []

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            booked.append(body["trade"]["dealTransactionID"])
            raise httpx.ReadTimeout("timed out", request=req)
        return httpx.Response(200, json={"result": OK, "transaction": {"status": "PENDING"}})

    b = make_bank(FakeBank(api)).book_deals(book_batch(1), 1)
    assert booked == ["D0"]  # the bank has it in hand: not sent again
    assert b.reason_idx[0] == TIMEOUT and b.resolved is not None and not b.resolved[0]


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


def test_the_keep_alive_transport_reports_a_closed_port_as_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        transport = KeepAliveTransport(1.0, 1.0)
        request = httpx.Request("POST", f"http://127.0.0.1:{port}/x", content=b"{}")
        with pytest.raises(httpx.ConnectError):
            asyncio.run(transport.handle_async_request(request))


def test_a_throttled_booking_is_sent_again_without_asking_status_first() -> None:
    answers = iter([429, 200])

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if next(answers) == 429:
            return httpx.Response(429, text="slow down")
        return httpx.Response(200, json={"result": OK, "deal": {"dealRate": 18.0}})

    fake = FakeBank(api)
    b = make_bank(fake).book_deals(book_batch(1), 1)
    assert b.ok.all() and fake.calls[API + "bookquoteddeal"] == 2 and API + "GetTxnStatus" not in fake.calls


def test_the_keep_alive_transport_keeps_only_live_connections() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        transport = KeepAliveTransport(1.0, 1.0)

        async def five() -> None:
            for _ in range(5):
                with pytest.raises(httpx.ConnectError):
                    await transport.handle_async_request(httpx.Request("POST", f"http://127.0.0.1:{port}/x"))

        asyncio.run(five())
        assert transport.idle == 0


class CountingBank:
    """An HttpBank over a mock API that answers quotes after 2 ms and records the most calls in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        config = HttpBankConfig(BASE, client_id="fx", client_secret=SecretStr(SECRET))
        self.bank = HttpBank(config, transport=httpx.MockTransport(self.handler))
        OPEN.append(self.bank)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
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


def test_a_booking_answered_timeout_unknown_is_looked_up_in_the_same_call_and_marked_resolved() -> None:
    timeout = {"resultCode": 504, "resultMsg": "no answer", "resultReasonCode": "TIMEOUT_UNKNOWN"}

    def api(op: str, body: dict[str, Any], req: httpx.Request) -> httpx.Response:
        if op == "bookquoteddeal":
            deal = body["trade"]["dealTransactionID"]
            if deal == "D2":
                return httpx.Response(200, json={"result": OK, "deal": {"dealRate": 18.0}})
            return httpx.Response(200, json={"result": timeout})
        # The bank made D0 before timing out, never D1, and still has D3 in hand.
        status = {"D0": "COMPLETED", "D3": "PENDING"}.get(body["transactionID"], "NOT_FOUND")
        txn = {"status": status, "context": {"quoteID": 1, "dealRate": 18.25}}
        return httpx.Response(200, json={"result": OK, "transaction": txn})

    fake = FakeBank(api)
    b = make_bank(fake).book_deals(book_batch(4), 4)
    assert b.ok.tolist() == [True, False, True, False]
    assert b.deal_rate[0] == 18.25  # the rate the bank's status gave
    assert b.reason_idx[1] == TIMEOUT and b.reason_idx[3] == TIMEOUT
    # Resolved: found booked, or the bank has no such deal; D3 (PENDING) is left for the caller.
    assert b.resolved is not None and b.resolved.tolist() == [True, True, False, False]
    assert fake.calls[API + "GetTxnStatus"] == 3  # once each, none for the answered booking
    assert fake.calls[API + "bookquoteddeal"] == 4  # and nothing booked again
