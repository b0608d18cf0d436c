"""The documentation-shaped fake bank itself answers as DOMAIN.md section 3 documents."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.docbank import FIRST_QUOTE_ID, TOKEN_PATH, Booking, DocBank, serve_docbank

CREDENTIALS = {
    "client_id": "cid-1",
    "client_secret": "csecret-1",
    "scope": "api://bank/.default",
    "username": "dealer@desk.example",
    "password": "hunter2-not-in-logs",
}

QUOTE_REQUEST: dict[str, Any] = {
    "header": {"userId": "dealer@desk.example"},
    "customer": {
        "cifNo": "0123456789",
        "fromSettlementAccount": {"currency": "ZAR", "accountNumber": "0012345678"},
        "toSettlementAccount": {"currency": "USD", "accountNumber": "0012345679"},
    },
    "trade": {
        "tradeType": "Buy",
        "deliveryType": "Spot",
        "currencyPair": "USD/ZAR",
        "dealCurrency": "ZAR",
        "dealCurrencyAmount": 1000.0,
        "settlementDate": "20261202",
        "dealDateTime": "2026-11-30T10:00:00+02:00",
    },
}


@pytest.fixture(scope="module")
def served() -> Iterator[DocBank]:
    with serve_docbank(**CREDENTIALS) as bank:
        yield bank


@pytest.fixture
def bank(served: DocBank) -> DocBank:
    served.reset()  # one server for the module (stopping uvicorn takes ~0.2 s), fresh state per test
    return served


@pytest.fixture
def client(bank: DocBank) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bank.url or "", timeout=10) as http:
        yield http


def password_form(**overrides: str) -> dict[str, str]:
    return {"grant_type": "password", **CREDENTIALS, **overrides}


def token(client: httpx.Client) -> str:
    answer = client.post(TOKEN_PATH, data=password_form())
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


class Api:
    """Posts JSON bodies to the bank's operations with a bearer token."""

    def __init__(self, client: httpx.Client, bank: DocBank) -> None:
        self.client = client
        self.prefix = bank.api_url
        self.headers = {"Authorization": f"Bearer {token(client)}"}

    def post(self, operation: str, body: Any) -> httpx.Response:
        return self.client.post(f"{self.prefix}/{operation}", json=body, headers=self.headers)

    def call(self, operation: str, body: Any) -> dict[str, Any]:
        answer = self.post(operation, body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def quote(self, **trade: Any) -> dict[str, Any]:
        body = copy.deepcopy(QUOTE_REQUEST)
        body["trade"].update(trade)
        return self.call("createquote", body)

    def book(self, quote_id: Any, deal_id: str, quote_rate: float = 18.0, deal_rate: float = 18.0358) -> dict[str, Any]:
        trade = {"quoteID": quote_id, "dealTransactionID": deal_id, "quoteRate": quote_rate, "dealRate": deal_rate}
        return self.call("bookquoteddeal", {"header": {"userId": "dealer@desk.example"}, "trade": trade})

    def status(self, transaction_id: str) -> dict[str, Any]:
        return self.call("GetTxnStatus", {"header": {"userId": "dealer@desk.example"}, "transactionID": transaction_id})


@pytest.fixture
def api(client: httpx.Client, bank: DocBank) -> Api:
    return Api(client, bank)


def assert_header(answer: dict[str, Any]) -> None:
    uuid.UUID(answer["header"]["transactionId"])


# ---------------------------------------------------------------- token


def test_password_grant_answers_the_documented_success(bank: DocBank, client: httpx.Client) -> None:
    answer = client.post(TOKEN_PATH, data=password_form())
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"token_type", "scope", "expires_in", "ext_expires_in", "access_token", "refresh_token"}
    assert (body["token_type"], body["scope"], body["expires_in"], body["ext_expires_in"]) == (
        "Bearer",
        CREDENTIALS["scope"],
        3600,
        7200,
    )
    (request,) = bank.tokens()
    assert request.grant_type == "password" and request.ok
    assert request.form["username"] == CREDENTIALS["username"]
    assert "hunter2" not in repr(request) and "hunter2" not in repr(bank.token_requests)
    assert "csecret" not in repr(request)


@pytest.mark.parametrize("wrong", ["password", "username"])
def test_wrong_credentials_answer_the_documented_invalid_grant(bank: DocBank, client: httpx.Client, wrong: str) -> None:
    answer = client.post(TOKEN_PATH, data=password_form(**{wrong: "nope"}))
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid_grant"
    assert body["error_description"] == "AADSTS50126: Error validating credentials due to invalid username or password."
    assert body["error_codes"] == [50126]
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)
    assert bank.tokens()[0].error == "invalid_grant"


def test_refresh_grant_accepts_only_refresh_tokens_it_issued(bank: DocBank, client: httpx.Client) -> None:
    first = client.post(TOKEN_PATH, data=password_form()).json()
    refresh = {k: CREDENTIALS[k] for k in ("client_id", "client_secret")}
    again = client.post(
        TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"], **refresh}
    )
    assert again.status_code == 200
    assert again.json()["access_token"] != first["access_token"]
    bogus = client.post(TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": "made-up", **refresh})
    assert bogus.status_code == 400 and bogus.json()["error"] == "invalid_grant"
    assert [t.grant_type for t in bank.tokens()] == ["password", "refresh_token", "refresh_token"]
    assert first["refresh_token"] not in repr(bank.tokens())


def test_client_credentials_is_refused_unless_allowed(bank: DocBank, client: httpx.Client) -> None:
    form = {"grant_type": "client_credentials", **{k: CREDENTIALS[k] for k in ("client_id", "client_secret", "scope")}}
    refused = client.post(TOKEN_PATH, data=form)
    assert refused.status_code == 400 and refused.json()["error"] == "unsupported_grant_type"
    bank.allow_client_credentials = True
    allowed = client.post(TOKEN_PATH, data=form)
    assert allowed.status_code == 200 and "refresh_token" not in allowed.json()


def test_api_needs_a_valid_bearer_token(bank: DocBank, client: httpx.Client, api: Api) -> None:
    assert client.post(f"{bank.api_url}/createquote", json=QUOTE_REQUEST).status_code == 401
    assert api.post("createquote", QUOTE_REQUEST).status_code == 200
    bank.revoke_access_tokens()
    assert api.post("createquote", QUOTE_REQUEST).status_code == 401
    assert [r.status for r in bank.requests("createquote")] == [401, 200, 401]


# ---------------------------------------------------------------- quote and book


def test_quote_and_booking_round_trip_keeps_the_integer_quote_id(bank: DocBank, api: Api) -> None:
    answer = api.post("createquote", QUOTE_REQUEST)
    assert str(FIRST_QUOTE_ID) in answer.text  # written as a JSON integer, beyond float precision
    quote = answer.json()
    assert_header(quote)
    assert quote["result"] == {"resultCode": 0, "resultMsg": "Success"}
    payload = quote["payload"]
    assert payload["quoteId"] == FIRST_QUOTE_ID and type(payload["quoteId"]) is int
    assert float(payload["quoteId"]) != FIRST_QUOTE_ID
    assert payload["quoteRate"] == 18.0
    assert payload["quoteExpiryDateTime"].endswith("Z")

    deal_id = str(uuid.uuid4())
    booked = api.book(payload["quoteId"], deal_id)
    assert set(booked) == {"header", "result"} and booked["result"]["resultCode"] == 0
    assert bank.ledger_copy() == {deal_id: Booking(FIRST_QUOTE_ID, 18.0, 18.0358)}
    assert bank.ledger[deal_id] == (FIRST_QUOTE_ID, 18.0, 18.0358)
    assert all(r.body["header"]["userId"] for r in bank.requests())
    assert not any(h.startswith("x-fxbatch-") for r in bank.requests() for h in r.headers)


def test_a_float_quote_id_is_refused(bank: DocBank, api: Api) -> None:
    quote_id = api.quote()["payload"]["quoteId"]
    trade = {"quoteID": float(quote_id), "dealTransactionID": str(uuid.uuid4()), "quoteRate": 18.0, "dealRate": 18.1}
    answer = api.call("bookquoteddeal", {"header": {"userId": "d@x"}, "trade": trade})
    assert answer["result"]["resultCode"] == 1
    assert answer["result"]["validationErrors"][0]["validation"] == "quoteID"
    assert bank.ledger_copy() == {}


def test_refused_cif_answers_the_documented_validation_failure(bank: DocBank, api: Api) -> None:
    bank.refuse_cifs.add("0123456789")
    answer = api.quote()
    assert_header(answer)
    assert answer["result"] == {
        "resultCode": 1,
        "resultReasonCode": "VALIDATION_ERROR",
        "resultMsg": "Validation failed",
        "validationErrors": [{"validation": "cifNo", "error": "INVALID CIF NUMBER"}],
    }
    assert "payload" not in answer
    bank.validation_reason_code = None
    assert "resultReasonCode" not in api.quote()["result"]


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("trade", "settlementDate"), None, "settlementDate"),
        (("trade", "settlementDate"), "2026-12-02", "settlementDate"),
        (("trade", "dealCurrencyAmount"), "1000.00", "dealCurrencyAmount"),
        (("trade", "tradeType"), "BUY", "tradeType"),
        (("trade", "deliveryType"), "SPOT", "deliveryType"),
        (("trade", "dealDateTime"), "yesterday", "dealDateTime"),
        (("customer", "cifNo"), None, "cifNo"),
        (("header", "userId"), None, "userId"),
    ],
)
def test_badly_formed_quote_requests_name_the_field(api: Api, path: tuple[str, str], value: Any, named: str) -> None:
    body = copy.deepcopy(QUOTE_REQUEST)
    if value is None:
        del body[path[0]][path[1]]
    else:
        body[path[0]][path[1]] = value
    result = api.call("createquote", body)["result"]
    assert result["resultCode"] == 1
    assert named in [e["validation"] for e in result["validationErrors"]]


def test_unknown_pair_is_refused(api: Api) -> None:
    result = api.quote(currencyPair="XAU/ZAR")["result"]
    assert result["resultCode"] == 1 and result["validationErrors"][0]["validation"] == "currencyPair"


def test_a_resent_booking_books_once(bank: DocBank, api: Api) -> None:
    quote_id = api.quote()["payload"]["quoteId"]
    deal_id = str(uuid.uuid4())
    assert api.book(quote_id, deal_id)["result"]["resultCode"] == 0
    assert api.book(quote_id, deal_id.upper())["result"]["resultCode"] == 0  # same UUID, other spelling
    assert len(bank.ledger_copy()) == 1
    other = api.book(quote_id, str(uuid.uuid4()))["result"]
    assert other["resultReasonCode"] == "QUOTE_ALREADY_BOOKED"
    second_quote = api.quote()["payload"]["quoteId"]
    reused = api.book(second_quote, deal_id)["result"]
    assert reused["resultReasonCode"] == "DUPLICATE_TRANSACTION"
    assert len(bank.ledger_copy()) == 1


def test_booking_an_expired_or_cancelled_quote_fails(bank: DocBank, api: Api) -> None:
    quote_id = api.quote()["payload"]["quoteId"]
    cancelled = api.call("cancelquote", {"header": {"userId": "d@x"}, "quoteID": quote_id})
    assert cancelled["result"] == {"resultCode": 0, "resultmsg": "Success"}
    assert bank.cancelled_quotes == [quote_id]
    assert api.book(quote_id, str(uuid.uuid4()))["result"]["resultReasonCode"] == "QUOTE_CANCELLED"
    bank.quote_ttl_seconds = -1
    stale = api.quote()["payload"]["quoteId"]
    assert api.book(stale, str(uuid.uuid4()))["result"]["resultReasonCode"] == "QUOTE_EXPIRED"
    assert bank.ledger_copy() == {}


def test_getlatestquote_answers_the_documented_payload(api: Api) -> None:
    quote = api.quote()["payload"]
    latest = api.call("getlatestquote", {"header": {"userId": "d@x"}, "quoteID": quote["quoteId"]})
    assert latest["payload"] == {"quoteId": quote["quoteId"], "quoteExpiryDateTime": quote["quoteExpiryDateTime"]}
    unknown = api.call("getlatestquote", {"header": {"userId": "d@x"}, "quoteID": 42})
    assert unknown["result"]["resultReasonCode"] == "QUOTE_NOT_FOUND"


# ---------------------------------------------------------------- lost answers and status


def test_a_lost_booking_answer_is_booked_and_completed(bank: DocBank, api: Api) -> None:
    quote_id = api.quote()["payload"]["quoteId"]
    deal_id = str(uuid.uuid4())
    bank.lose_booking_answers = 1
    with pytest.raises(httpx.TransportError):
        api.book(quote_id, deal_id)
    assert bank.lose_booking_answers == 0
    assert deal_id in bank.ledger_copy()
    assert bank.requests("bookquoteddeal")[-1].answered is False

    answer = api.status(deal_id)
    assert_header(answer)
    assert answer["result"]["resultCode"] == 0
    txn = answer["transaction"]
    assert set(txn) == {
        "transactionId",
        "userID",
        "organisation",
        "operation",
        "correlationID",
        "dateTime",
        "status",
        "systemID",
        "context",
    }
    assert txn["status"] == "COMPLETED" and txn["transactionId"] == deal_id
    assert set(txn["context"]) == {"transactionId", "thirdPartyDealID"}
    assert api.book(quote_id, deal_id)["result"]["resultCode"] == 0  # the resend is answered again
    assert len(bank.ledger_copy()) == 1


def test_status_of_unknown_and_pending_ids(bank: DocBank, api: Api) -> None:
    unknown = api.status(str(uuid.uuid4()))
    assert unknown["result"]["resultCode"] > 0
    assert unknown["result"]["resultReasonCode"] == "TRANSACTION_NOT_FOUND"
    assert "transaction" not in unknown
    pending = str(uuid.uuid4())
    bank.pending_ids.add(pending)
    assert api.status(pending)["transaction"]["status"] == "PENDING"


# ---------------------------------------------------------------- broken contract


def test_break_contract_is_used_once(bank: DocBank, api: Api) -> None:
    broken = b'{"header":{"transactionId":"x"},"result":{"resultCode":0},"payload":{"quoteExpiryDateTime":"2026-12-01T10:00:00Z"}}'
    bank.break_contract["createquote"] = broken
    bank.break_contract["getlatestquote"] = b"<html>gateway</html>"
    first = api.post("createquote", QUOTE_REQUEST)
    assert first.status_code == 200 and first.content == broken
    assert "quoteId" in api.quote()["payload"]
    html = api.post("getlatestquote", {"header": {"userId": "d@x"}, "quoteID": FIRST_QUOTE_ID})
    assert html.status_code == 200 and html.content == b"<html>gateway</html>"
    assert html.headers["content-type"].startswith("text/html")
    assert bank.break_contract == {}
    assert [r.broken for r in bank.requests("createquote")] == [True, False]


def test_requests_are_recorded_with_their_headers(bank: DocBank, api: Api) -> None:
    api.client.post(f"{bank.api_url}/createquote", json=QUOTE_REQUEST, headers={**api.headers, "X-Fxbatch-Run": "7"})
    (request,) = bank.requests("createquote")
    assert request.headers["x-fxbatch-run"] == "7"
    assert request.body == json.loads(request.raw) == QUOTE_REQUEST
    assert request.result_code == 0


def test_two_banks_serve_at_once_on_their_own_ports() -> None:
    with serve_docbank() as one, serve_docbank() as two:
        assert one.url != two.url
        for served in (one, two):
            assert httpx.post(served.token_url, data={"grant_type": "nope"}).status_code == 400
    assert one.url is None


def test_reset_forgets_everything_but_the_configuration(bank: DocBank, api: Api) -> None:
    api.quote()
    bank.refuse_cifs.add("1")
    bank.lose_booking_answers = 3
    bank.reset()
    assert (bank.requests(), bank.tokens(), bank.quotes, bank.refuse_cifs, bank.lose_booking_answers) == (
        [],
        [],
        {},
        set(),
        0,
    )
    assert bank.client_id == CREDENTIALS["client_id"] and bank.url is not None
    assert api.post("createquote", QUOTE_REQUEST).status_code == 401  # tokens were forgotten too
