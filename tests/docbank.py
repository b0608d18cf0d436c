"""A fake of the bank's trading channel written from DOMAIN.md section 3 alone.

It is an independent reading of the bank's documentation, not a copy of ``fxbatch.banksim``: a client
that passes against it agrees with the documentation, not merely with the project's own simulator.

``DocBank`` is a plain ASGI application; ``serve_docbank()`` serves one with uvicorn on 127.0.0.1 (a
free port) in a background thread and yields it with ``.url`` set. Tests steer it through a few
public knobs (``refuse_cifs``, ``lose_booking_answers``, ``pending_ids``, ``break_contract``, ...)
and assert on what it recorded (``token_requests``, ``api_requests``, ``ledger``, ``quotes``,
``cancelled_quotes``). While the server may still be writing, read them through the copying
helpers (``requests()``, ``tokens()``, ``ledger_copy()``) or under ``bank.lock``.

Where the documentation is silent the choices are marked **assumed** below.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import uvicorn

TOKEN_PATH = "/identity/oauth2/v2.0/token"
API_PREFIX = "/trading-channel-service/api/v1/"
OPERATIONS = ("createquote", "bookquoteddeal", "cancelquote", "getlatestquote", "GetTxnStatus")
FIRST_QUOTE_ID = 9_007_199_254_740_993  # 2**53 + 1: not representable as a float
DEFAULT_RATES: dict[str, float] = {"USD/ZAR": 18.0, "EUR/ZAR": 19.5, "GBP/ZAR": 22.8}
SECRET_FORM_FIELDS = frozenset({"password", "client_secret", "refresh_token"})
VALIDATION_ERROR = "VALIDATION_ERROR"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# ---------------------------------------------------------------- recorded things


@dataclass(frozen=True)
class TokenRequest:
    """One request to the token endpoint. Secrets are masked: ``form`` never holds them in clear."""

    form: dict[str, str]  # the form as sent, password / client_secret / refresh_token replaced by "***"
    status: int  # HTTP status answered
    error: str | None  # the OAuth2 ``error`` answered, None on success

    @property
    def grant_type(self) -> str | None:
        return self.form.get("grant_type")

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class ApiRequest:
    """One request to ``/trading-channel-service/api/v1/<operation>`` and what was answered."""

    operation: str  # the path's last segment, e.g. "createquote" (as sent, even if unknown)
    body: Any  # the parsed JSON body, or None when the body was not JSON
    raw: bytes  # the body as sent
    headers: dict[str, str]  # request headers, names lower-cased
    status: int = 0  # HTTP status answered (200 also for result-block failures by default)
    response: bytes = b""  # the body answered (also when the answer was lost: what would have been sent)
    answered: bool = True  # False when the answer was deliberately lost (lose_booking_answers)
    broken: bool = False  # True when break_contract replaced the answer

    @property
    def json_response(self) -> Any:
        try:
            return json.loads(self.response)
        except ValueError:
            return None

    @property
    def result_code(self) -> int | None:
        answer = self.json_response
        if isinstance(answer, dict) and isinstance(answer.get("result"), dict):
            return answer["result"].get("resultCode")
        return None


class Booking(NamedTuple):
    """The ledger's value for one dealTransactionID (a tuple: ``(quote_id, quote_rate, deal_rate)``)."""

    quote_id: int
    quote_rate: float
    deal_rate: float


@dataclass
class Quote:
    quote_id: int
    rate: float
    expires_at: datetime
    cif: str
    user_id: str
    request: dict[str, Any]
    state: str = "open"  # open | cancelled | booked
    deal_transaction_id: str | None = None


@dataclass
class _Txn:
    """What GetTxnStatus reports for a booked dealTransactionID."""

    user_id: str
    correlation_id: str  # header.transactionId the bank answered to the booking call
    date_time: str
    third_party_deal_id: str


class _Held(Exception):
    """A booking held on its way (``hold_bookings``): no answer reaches the client."""


class _Failure(Exception):
    """A result-block failure (resultCode > 0) to answer."""

    def __init__(self, reason: str | None, message: str, errors: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.errors = list(errors)


# ---------------------------------------------------------------- small helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _canonical_uuid(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# ---------------------------------------------------------------- the bank


class DocBank:
    """The bank as DOMAIN.md section 3 documents it, as an ASGI application.

    Constructor arguments are the configured identity (what the token endpoint accepts) and a few
    fixed behaviours; the knobs below are plain attributes a test may change at any time.
    """

    def __init__(
        self,
        *,
        client_id: str = "docbank-client",
        client_secret: str = "docbank-secret",
        scope: str = "api://bbfts-trading-channel/.default",
        username: str = "dealer@desk.example",
        password: str = "docbank-password",
        user_id: str | None = None,
        refuse_cifs: Iterable[str] = (),
        rates: Mapping[str, float] | None = None,
        quote_ttl_seconds: float = 30.0,
        token_expires_in: int = 3600,
        allow_client_credentials: bool = False,
        failure_http_status: int = 200,
        validation_reason_code: str | None = VALIDATION_ERROR,
    ) -> None:
        self._init_args: dict[str, Any] = {
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": scope,
            "username": username,
            "password": password,
            "user_id": user_id,
            "refuse_cifs": tuple(refuse_cifs),
            "rates": None if rates is None else dict(rates),
            "quote_ttl_seconds": quote_ttl_seconds,
            "token_expires_in": token_expires_in,
            "allow_client_credentials": allow_client_credentials,
            "failure_http_status": failure_http_status,
            "validation_reason_code": validation_reason_code,
        }
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self.username = username
        self._password = password
        # Knobs -------------------------------------------------------------------------------
        self.user_id = user_id  # None: any non-empty header.userId; else header.userId must equal it
        self.refuse_cifs: set[str] = set(refuse_cifs)  # createquote for these CIFs: "INVALID CIF NUMBER"
        self.rates: dict[str, float] = dict(DEFAULT_RATES if rates is None else rates)  # pair -> quoteRate
        self.quote_ttl_seconds = quote_ttl_seconds  # a quote books until this long after createquote
        self.token_expires_in = token_expires_in  # answered as expires_in, and enforced
        self.allow_client_credentials = allow_client_credentials  # False: unsupported_grant_type
        self.failure_http_status = failure_http_status  # HTTP status of result-block failures
        self.validation_reason_code = validation_reason_code  # None: omit resultReasonCode on validation errors
        self.lose_booking_answers = 0  # next N successful bookquoteddeal answers are lost (deal still booked)
        # Next N bookings that would book are held, as a request stuck on its way: the answer is lost
        # and nothing is booked yet (GetTxnStatus: not found; a resend of the same deal and quote is
        # held too). The held booking lands, booking its quote, just before a request for the same
        # deal id with another quote is handled (a booking that lands after the bank said it had none).
        self.hold_bookings = 0
        self.held: dict[str, tuple[Quote, Booking, str]] = {}  # dealTransactionID -> (quote, booking, userId)
        self.pending_ids: set[str] = set()  # dealTransactionIDs GetTxnStatus answers as "PENDING"
        self.pending_status = "PENDING"  # the status answered for them ("COMPLETED|PENDING|...": others exist)
        self.break_contract: dict[str, bytes] = {}  # operation -> raw body answered (HTTP 200) once
        self.break_after: dict[str, int] = {}  # operation -> answers left whole before break_contract applies
        # Called with each API request's record once it is handled, before its answer goes out (outside the lock).
        self.before_answer: Callable[[ApiRequest], None] | None = None
        # Recorded ----------------------------------------------------------------------------
        self.lock = threading.Lock()
        self.token_requests: list[TokenRequest] = []
        self.api_requests: list[ApiRequest] = []
        self.quotes: dict[int, Quote] = {}
        self.ledger: dict[str, Booking] = {}  # dealTransactionID (canonical UUID) -> Booking
        self.cancelled_quotes: list[int] = []
        self.url: str | None = None  # set by serve_docbank()
        self._txns: dict[str, _Txn] = {}
        self._access_tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self._refresh_tokens: set[str] = set()
        self._quote_ids = itertools.count(FIRST_QUOTE_ID)
        self._deal_numbers = itertools.count(1)

    def __repr__(self) -> str:
        return f"DocBank(url={self.url!r}, client_id={self.client_id!r}, username={self.username!r})"

    # ------------------------------------------------------------ convenience for tests

    @property
    def token_url(self) -> str:
        return self._base() + TOKEN_PATH

    @property
    def api_url(self) -> str:
        """The API base, without a trailing slash: ``<url>/trading-channel-service/api/v1``."""
        return self._base() + API_PREFIX.rstrip("/")

    def _base(self) -> str:
        if self.url is None:
            raise RuntimeError("DocBank is not being served: use serve_docbank()")
        return self.url

    def requests(self, operation: str | None = None) -> list[ApiRequest]:
        """A copy of the recorded API requests, optionally of one operation only."""
        with self.lock:
            return [r for r in self.api_requests if operation is None or r.operation == operation]

    def tokens(self) -> list[TokenRequest]:
        """A copy of the recorded token requests."""
        with self.lock:
            return list(self.token_requests)

    def ledger_copy(self) -> dict[str, Booking]:
        with self.lock:
            return dict(self.ledger)

    def reset(self) -> None:
        """Back to the state just after construction (knobs, records, quotes, ledger, tokens), still served."""
        with self.lock:
            lock, url = self.lock, self.url
            self.__init__(**self._init_args)  # type: ignore[misc]
            self.lock, self.url = lock, url

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far answers 401 from now on (refresh tokens stay valid)."""
        with self.lock:
            self._access_tokens.clear()

    def issue_token(self) -> str:
        """An access token for tests that call the API directly."""
        with self.lock:
            return self._issue()["access_token"]

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path: str = scope["path"]
        method: str = scope["method"]
        if path == TOKEN_PATH:
            if method != "POST":
                await _respond(send, 405, b"", allow=b"POST")
                return
            with self.lock:
                status, answer = self._token(headers, body)
            await _respond(send, status, answer)
            return
        if path.startswith(API_PREFIX):
            if method != "POST":
                await _respond(send, 405, b"", allow=b"POST")
                return
            with self.lock:
                status, answer, lose, extra = self._api(path[len(API_PREFIX) :], headers, body)
                hook, record = self.before_answer, self.api_requests[-1]
            if hook is not None:
                hook(record)
            if lose:
                # Send the status line and headers, then close without a body: the deal is booked
                # yet the client only sees the connection drop mid-answer (a transport error).
                await send({"type": "http.response.start", "status": status, "headers": _headers(answer)})
                return
            await _respond(send, status, answer, **extra)
            return
        await _respond(send, 404, _json({"error": "not_found", "path": path}))

    # ------------------------------------------------------------ token endpoint

    def _token(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        form: dict[str, str] = {}
        form_encoded = (
            headers.get("content-type", "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded"
        )
        if form_encoded:
            try:
                form = dict(parse_qsl(body.decode(), keep_blank_values=True))
            except UnicodeDecodeError:
                form_encoded = False
        status, answer, error = self._token_answer(form, form_encoded)
        masked = {k: ("***" if k in SECRET_FORM_FIELDS else v) for k, v in form.items()}
        self.token_requests.append(TokenRequest(form=masked, status=status, error=error))
        return status, answer

    def _token_answer(self, form: dict[str, str], form_encoded: bool) -> tuple[int, bytes, str | None]:
        if "token" in self.break_contract:
            return 200, self.break_contract.pop("token"), None
        if not form_encoded or not form:
            return _aad_error(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
            )
        grant = form.get("grant_type", "")
        required = {
            "password": ("client_id", "client_secret", "scope", "username", "password"),
            "refresh_token": ("client_id", "client_secret", "refresh_token"),
            "client_credentials": ("client_id", "client_secret", "scope"),
        }
        if grant not in required or (grant == "client_credentials" and not self.allow_client_credentials):
            return _aad_error(
                400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
            )
        for name in required[grant]:
            if not form.get(name):
                return _aad_error(
                    400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
                )
        if form["client_id"] != self.client_id:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form['client_id']}' was not found in the directory.",
            )
        if form["client_secret"] != self._client_secret:
            return _aad_error(400, "invalid_client", 7000215, "Invalid client secret provided.")
        if "scope" in form and not self._scope_ok(form["scope"]):
            return _aad_error(
                400,
                "invalid_scope",
                70011,
                f"The provided value for the input parameter 'scope' is not valid: '{form['scope']}'.",
            )
        if grant == "password":
            if form["username"] != self.username or form["password"] != self._password:
                return _aad_error(
                    400, "invalid_grant", 50126, "Error validating credentials due to invalid username or password."
                )
            return 200, _json(self._issue()), None
        if grant == "refresh_token":
            if form["refresh_token"] not in self._refresh_tokens:
                return _aad_error(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
            return 200, _json(self._issue()), None
        answer = self._issue()
        del answer["refresh_token"]  # client_credentials gets no refresh token
        return 200, _json(answer), None

    def _scope_ok(self, requested: str) -> bool:
        wanted = set(requested.split()) - {"offline_access", "openid", "profile"}
        return wanted == set(self.scope.split())

    def _issue(self) -> dict[str, Any]:
        access = "docbank-at-" + secrets.token_urlsafe(24)
        refresh = "docbank-rt-" + secrets.token_urlsafe(24)
        self._access_tokens[access] = time.time() + self.token_expires_in
        self._refresh_tokens.add(refresh)
        return {
            "token_type": "Bearer",
            "scope": self.scope,
            "expires_in": self.token_expires_in,
            "ext_expires_in": 2 * self.token_expires_in,
            "access_token": access,
            "refresh_token": refresh,
        }

    # ------------------------------------------------------------ API

    def _api(self, operation: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes, bool, dict[str, bytes]]:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = ApiRequest(operation=operation, body=body, raw=raw, headers=dict(headers))
        self.api_requests.append(record)
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        expiry = self._access_tokens.get(token)
        if expiry is None or expiry < time.time():
            record.status = 401
            record.response = _json(
                {"error": "invalid_token", "error_description": "The access token is missing, invalid or expired."}
            )
            return 401, record.response, False, {"www_authenticate": b'Bearer error="invalid_token"'}
        if operation not in OPERATIONS:
            record.status = 404
            record.response = _json({"error": "not_found", "operation": operation})
            return 404, record.response, False, {}
        transaction_id = str(uuid.uuid4())
        lose = False
        try:
            if not isinstance(body, dict):
                raise _Failure(self.validation_reason_code, "Validation failed", [("body", "MALFORMED REQUEST")])
            user_id = self._user_id(body)
            handler = getattr(self, f"_op_{operation.lower()}")
            extra = handler(body, user_id, transaction_id)
            status = 200
            answer: dict[str, Any] = {"header": {"transactionId": transaction_id}}
            answer["result"] = (
                {"resultCode": 0, "resultmsg": "Success"}
                if operation == "cancelquote"
                else {"resultCode": 0, "resultMsg": "Success"}
            )
            answer.update(extra)
            if operation == "bookquoteddeal" and self.lose_booking_answers > 0 and not self._breaks(operation):
                self.lose_booking_answers -= 1
                lose = True
        except _Held:
            status, answer, lose = 200, {"header": {"transactionId": transaction_id}}, True
        except _Failure as failure:
            status = self.failure_http_status
            result: dict[str, Any] = {"resultCode": 1}
            if failure.reason is not None:
                result["resultReasonCode"] = failure.reason
            result["resultMsg"] = failure.message
            result["validationErrors"] = [{"validation": v, "error": e} for v, e in failure.errors]
            answer = {"header": {"transactionId": transaction_id}, "result": result}
        record.status = status
        record.response = _json(answer)
        if self._breaks(operation):
            record.status, record.response, record.broken = 200, self.break_contract.pop(operation), True
            return 200, record.response, False, {}
        if operation in self.break_contract:
            self.break_after[operation] -= 1  # one more whole answer before the broken one
        record.answered = not lose
        return status, record.response, lose, {}

    def _breaks(self, operation: str) -> bool:
        """This answer of ``operation`` is the one ``break_contract`` replaces."""
        return operation in self.break_contract and self.break_after.get(operation, 0) <= 0

    def _invalid(self, *errors: tuple[str, str]) -> _Failure:
        return _Failure(self.validation_reason_code, "Validation failed", errors)

    def _user_id(self, body: dict[str, Any]) -> str:
        header = body.get("header")
        user_id = header.get("userId") if isinstance(header, dict) else None
        if not isinstance(user_id, str) or not user_id.strip():
            raise self._invalid(("userId", "MISSING FIELD"))
        if self.user_id is not None and user_id != self.user_id:
            raise self._invalid(("userId", "INVALID USER"))
        return user_id

    def _quote_id(self, value: Any, name: str) -> Quote:
        if value is None:
            raise self._invalid((name, "MISSING FIELD"))
        if not _is_int(value):
            raise self._invalid((name, "MUST BE AN INTEGER"))
        quote = self.quotes.get(value)
        if quote is None:
            raise _Failure("QUOTE_NOT_FOUND", "Quote not found", [(name, "QUOTE NOT FOUND")])
        return quote

    # createquote ----------------------------------------------------------------------------

    def _op_createquote(self, body: dict[str, Any], user_id: str, transaction_id: str) -> dict[str, Any]:
        errors: list[tuple[str, str]] = []
        customer = body.get("customer")
        trade = body.get("trade")
        if not isinstance(customer, dict):
            errors.append(("customer", "MISSING FIELD"))
            customer = {}
        if not isinstance(trade, dict):
            errors.append(("trade", "MISSING FIELD"))
            trade = {}
        cif = customer.get("cifNo")
        if "customer" in body and isinstance(body["customer"], dict):
            if cif is None:
                errors.append(("cifNo", "MISSING FIELD"))
            elif not isinstance(cif, str) or not cif.strip():
                errors.append(("cifNo", "INVALID VALUE"))
            for side in ("fromSettlementAccount", "toSettlementAccount"):
                account = customer.get(side)
                if not isinstance(account, dict):
                    errors.append((side, "MISSING FIELD"))
                    continue
                currency = account.get("currency")
                if currency is None:
                    errors.append((f"{side}.currency", "MISSING FIELD"))
                elif not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
                    errors.append((f"{side}.currency", "INVALID VALUE"))
                number = account.get("accountNumber")
                if number is None:
                    errors.append((f"{side}.accountNumber", "MISSING FIELD"))
                elif not isinstance(number, str) or not number.strip():
                    errors.append((f"{side}.accountNumber", "INVALID VALUE"))
        if "trade" in body and isinstance(body["trade"], dict):
            errors.extend(_trade_errors(trade))
        if errors:
            raise self._invalid(*errors)
        assert isinstance(cif, str)
        if cif in self.refuse_cifs:
            raise self._invalid(("cifNo", "INVALID CIF NUMBER"))
        pair = trade["currencyPair"]
        rate = self.rates.get(pair)
        if rate is None:
            raise self._invalid(("currencyPair", "CURRENCY PAIR NOT SUPPORTED"))
        quote = Quote(
            quote_id=next(self._quote_ids),
            rate=rate,
            expires_at=_now() + timedelta(seconds=self.quote_ttl_seconds),
            cif=cif,
            user_id=user_id,
            request=body,
        )
        self.quotes[quote.quote_id] = quote
        return {
            "payload": {
                "quoteId": quote.quote_id,
                "quoteExpiryDateTime": _iso(quote.expires_at),
                "quoteRate": quote.rate,
            }
        }

    # bookquoteddeal -------------------------------------------------------------------------

    def _op_bookquoteddeal(self, body: dict[str, Any], user_id: str, transaction_id: str) -> dict[str, Any]:
        trade = body.get("trade")
        if not isinstance(trade, dict):
            raise self._invalid(("trade", "MISSING FIELD"))
        errors: list[tuple[str, str]] = []
        quote_id = trade.get("quoteID")
        if quote_id is None:
            errors.append(("quoteID", "MISSING FIELD"))
        elif not _is_int(quote_id):
            errors.append(("quoteID", "MUST BE AN INTEGER"))
        deal_id = _canonical_uuid(trade.get("dealTransactionID"))
        if trade.get("dealTransactionID") is None:
            errors.append(("dealTransactionID", "MISSING FIELD"))
        elif deal_id is None:
            errors.append(("dealTransactionID", "MUST BE A UUID"))
        for name in ("quoteRate", "dealRate"):
            value = trade.get(name)
            if value is None:
                errors.append((name, "MISSING FIELD"))
            elif not _is_number(value) or value <= 0:
                errors.append((name, "MUST BE A POSITIVE NUMBER"))
        if errors:
            raise self._invalid(*errors)
        assert deal_id is not None
        held = self.held.get(deal_id)
        if held is not None and held[0].quote_id != quote_id:
            self.held.pop(deal_id)
            if held[0].state == "open":  # the held request lands first (a quote cancelled since refuses it)
                self._book(deal_id, *held, transaction_id)
        booked = self.ledger.get(deal_id)
        if booked is not None:
            if booked.quote_id != quote_id:
                raise _Failure(
                    "DUPLICATE_TRANSACTION",
                    "Duplicate transaction",
                    [("dealTransactionID", "DEAL TRANSACTION ID ALREADY USED FOR ANOTHER QUOTE")],
                )
            return {}  # a resend of a booked deal: success, nothing booked again
        quote = self._quote_id(quote_id, "quoteID")
        if quote.state == "cancelled":
            raise _Failure("QUOTE_CANCELLED", "Quote cancelled", [("quoteID", "QUOTE CANCELLED")])
        if quote.state == "booked":
            raise _Failure("QUOTE_ALREADY_BOOKED", "Quote already booked", [("quoteID", "QUOTE ALREADY BOOKED")])
        if _now() > quote.expires_at:
            raise _Failure("QUOTE_EXPIRED", "Quote expired", [("quoteID", "QUOTE EXPIRED")])
        if not math.isclose(trade["quoteRate"], quote.rate, rel_tol=0, abs_tol=1e-9):
            raise self._invalid(("quoteRate", "QUOTE RATE DOES NOT MATCH QUOTE"))
        booking = Booking(quote.quote_id, float(trade["quoteRate"]), float(trade["dealRate"]))
        if deal_id in self.held or self.hold_bookings > 0:
            if deal_id not in self.held:
                self.hold_bookings -= 1
                self.held[deal_id] = (quote, booking, user_id)
            raise _Held
        self._book(deal_id, quote, booking, user_id, transaction_id)
        return {}

    def _book(self, deal_id: str, quote: Quote, booking: Booking, user_id: str, transaction_id: str) -> None:
        quote.state = "booked"
        quote.deal_transaction_id = deal_id
        self.ledger[deal_id] = booking
        self._txns[deal_id] = _Txn(
            user_id=user_id,
            correlation_id=transaction_id,
            date_time=_iso(_now()),
            third_party_deal_id=f"FX{next(self._deal_numbers):010d}",
        )

    # cancelquote / getlatestquote -----------------------------------------------------------

    def _op_cancelquote(self, body: dict[str, Any], user_id: str, transaction_id: str) -> dict[str, Any]:
        quote = self._quote_id(body.get("quoteID"), "quoteID")
        if quote.state == "booked":
            raise _Failure("QUOTE_ALREADY_BOOKED", "Quote already booked", [("quoteID", "QUOTE ALREADY BOOKED")])
        if quote.state != "cancelled":
            quote.state = "cancelled"
            self.cancelled_quotes.append(quote.quote_id)
        return {}

    def _op_getlatestquote(self, body: dict[str, Any], user_id: str, transaction_id: str) -> dict[str, Any]:
        quote = self._quote_id(body.get("quoteID"), "quoteID")
        return {"payload": {"quoteId": quote.quote_id, "quoteExpiryDateTime": _iso(quote.expires_at)}}

    # GetTxnStatus ---------------------------------------------------------------------------

    def _op_gettxnstatus(self, body: dict[str, Any], user_id: str, transaction_id: str) -> dict[str, Any]:
        value = body.get("transactionID")
        if value is None:
            raise self._invalid(("transactionID", "MISSING FIELD"))
        deal_id = _canonical_uuid(value)
        if deal_id is None:
            raise self._invalid(("transactionID", "MUST BE A UUID"))
        pending = {_canonical_uuid(p) or p for p in self.pending_ids}
        txn = self._txns.get(deal_id)
        if deal_id in pending:
            status = self.pending_status
        elif txn is not None:
            status = "COMPLETED"
        else:
            raise _Failure(
                "TRANSACTION_NOT_FOUND", "Transaction not found", [("transactionID", "TRANSACTION NOT FOUND")]
            )
        return {
            "transaction": {
                "transactionId": deal_id,
                "userID": txn.user_id if txn else user_id,
                "organisation": "Capitec Business",
                "operation": "bookquoteddeal",
                "correlationID": txn.correlation_id if txn else str(uuid.uuid4()),
                "dateTime": txn.date_time if txn else _iso(_now()),
                "status": status,
                "systemID": "BBFTS",
                "context": {"transactionId": deal_id, "thirdPartyDealID": txn.third_party_deal_id if txn else ""},
            }
        }


def _trade_errors(trade: dict[str, Any]) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []

    def check(name: str, ok: Callable[[Any], bool], error: str = "INVALID VALUE") -> Any:
        value = trade.get(name)
        if value is None:
            errors.append((name, "MISSING FIELD"))
        elif not ok(value):
            errors.append((name, error))
        return value

    check("tradeType", lambda v: v in ("Buy", "Sell"))
    check("deliveryType", lambda v: v in ("Spot", "Tom", "Cash"))
    pair = check("currencyPair", lambda v: isinstance(v, str) and re.fullmatch(r"[A-Z]{3}/[A-Z]{3}", v) is not None)
    pair_ok = isinstance(pair, str) and re.fullmatch(r"[A-Z]{3}/[A-Z]{3}", pair) is not None
    check(
        "dealCurrency",
        lambda v: (
            isinstance(v, str) and re.fullmatch(r"[A-Z]{3}", v) is not None and (not pair_ok or v in pair.split("/"))
        ),
    )
    check("dealCurrencyAmount", lambda v: _is_number(v) and v > 0, "MUST BE A POSITIVE NUMBER")
    check("settlementDate", _yyyymmdd, "MUST BE YYYYMMDD")
    check("dealDateTime", _iso_datetime, "MUST BE ISO-8601")
    return errors


def _yyyymmdd(value: Any) -> bool:
    if not isinstance(value, str) or not re.fullmatch(r"\d{8}", value):
        return False
    try:
        date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return False
    return True


def _iso_datetime(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _aad_error(status: int, error: str, code: int, description: str) -> tuple[int, bytes, str]:
    now = _now()
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {description}",
        "error_codes": [code],
        "timestamp": f"{now:%Y-%m-%d %H:%M:%SZ}",
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
    return status, _json(body), error


def _headers(body: bytes, **extra: bytes) -> list[tuple[bytes, bytes]]:
    content_type = b"text/html" if body.lstrip()[:1] == b"<" else b"application/json"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers += [(name.replace("_", "-").encode(), value) for name, value in extra.items()]
    return headers


async def _respond(send: Send, status: int, body: bytes, **extra: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _headers(body, **extra)})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- serving


@contextmanager
def serve_docbank(bank: DocBank | None = None, *, startup_timeout: float = 20.0, **kwargs: Any) -> Iterator[DocBank]:
    """Serve ``bank`` (or ``DocBank(**kwargs)``) on 127.0.0.1, a free port, in a background thread.

    Yields the bank with ``.url`` set (``"http://127.0.0.1:PORT"``); stops the server on exit.
    """
    if bank is None:
        bank = DocBank(**kwargs)
    elif kwargs:
        raise TypeError("pass either a DocBank or its constructor arguments, not both")
    sock = socket.socket(
        socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )  # proto set: asyncio then sets TCP_NODELAY
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port, held until the server stops
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        bank,
        lifespan="off",
        http="h11",
        ws="none",
        loop="asyncio",
        log_config=None,
        log_level=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"docbank-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("DocBank server thread died during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"DocBank server did not start within {startup_timeout} s")
            time.sleep(0.005)
        bank.url = f"http://127.0.0.1:{port}"
        yield bank
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        bank.url = None
    if thread.is_alive():  # only reached when the with-block itself raised nothing
        raise RuntimeError("DocBank server did not stop within 30 s")
