"""The bank simulator's HTTP service: token endpoint, the four API paths, /health.

One asyncio event loop on 127.0.0.1 speaking HTTP/1.1 keep-alive (``fxbatch.banksim.http11``, a
small ``asyncio.Protocol``); each request is answered by callbacks, not a task of its own, and
the requests that wait together are decided in one SimulatedBank call (``batcher.Batcher``).

Business answers (refusals included) are HTTP 200 with the API's result envelope; the injected
faults are what a real network does: slow answers, bare 5xx, and a booking made whose answer
never comes back.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import orjson

from fxbatch.bank.http import wire as api
from fxbatch.banksim.batcher import Batcher
from fxbatch.banksim.desk import Answer, Desk
from fxbatch.banksim.http11 import Connection, Request, Response


@dataclass
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    drop_after_book_rate: float = 0.0
    seed: int = 0
    _rng: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def roll(self, p: float) -> bool:
        if p <= 0:
            return False
        with self._lock:
            return self._rng.random() < p


@dataclass
class Tokens:
    client_id: str | None
    client_secret: str | None
    ttl_s: float = 300.0
    _live: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, client_id: str, secret: str) -> str | None:
        if self.client_id is not None and (
            client_id != self.client_id or not secrets.compare_digest(secret, self.client_secret or "")
        ):
            return None
        token = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            self._live = {t: e for t, e in self._live.items() if e > now}
            self._live[token] = now + self.ttl_s
        return token

    def valid(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        with self._lock:
            return self._live.get(header[7:], 0.0) > time.monotonic()


@functools.lru_cache(maxsize=64)  # a quote batch shares one expiry
def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _transaction_ids() -> Iterator[str]:
    """The bank's transaction ids: UUID-shaped, a random prefix per service start and a counter
    (``uuid.uuid4()`` per answer cost more than the rest of building it)."""
    head = uuid.uuid4().hex  # on the first answer, not at import
    prefix = f"{head[:8]}-{head[8:12]}-4{head[13:16]}-8{head[17:20]}-"
    for n in itertools.count(1):
        yield f"{prefix}{n:012x}"


def _result(a: Answer) -> dict[str, Any]:
    if a.code == 0:
        return {"resultCode": 0, "resultMsg": "Success"}
    return {"resultCode": a.code, "resultMsg": a.message, "resultReasonCode": a.reason, "validationErrors": []}


_NOT_FOUND: dict[str, Any] = {"result": {"resultCode": 404, "resultMsg": "no such path"}}


class BankServer:
    """The service: ``serve_forever`` runs it until ``shutdown`` (thread-safe) is called."""

    def __init__(self, port: int, desk: Desk, tokens: Tokens, faults: Faults) -> None:
        self.port = port
        self.tokens = tokens
        self.faults = faults
        self.batcher = Batcher(desk, faults.latency_ms / 1000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.ready = threading.Event()

    def serve_forever(self, on_ready: Any = None) -> None:
        asyncio.run(self._main(on_ready))

    def shutdown(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _main(self, on_ready: Any) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.batcher.warm_up()  # before listening: /health is answered once it is warm
            server = await loop.create_server(lambda: Connection(self._handle), "127.0.0.1", self.port, backlog=512)
            self.port = int(server.sockets[0].getsockname()[1])
            self.ready.set()
            if on_ready is not None:
                on_ready(self.port)
            async with server:
                await self._stop.wait()
        finally:
            self.batcher.close()

    # -- routing -------------------------------------------------------------------------
    def _handle(self, req: Request, reply: Callable[[Response], None]) -> None:
        if req.method == "GET":
            reply(_json(200, {"status": "ok"}) if req.path == "/health" else _json(404, _NOT_FOUND))
        elif req.method != "POST":
            reply(_json(405, {"result": {"resultCode": 405, "resultMsg": f"{req.method} not allowed"}}))
        elif req.path == api.TOKEN_PATH:
            reply(self._token(req))
        elif not req.path.startswith(api.API):
            reply(_json(404, _NOT_FOUND))
        elif not self.tokens.valid(req.headers.get("authorization")):
            reply(_json(401, {"result": {"resultCode": 401, "resultMsg": "token missing, unknown or expired"}}))
        else:
            self._api(req, reply)

    def _api(self, req: Request, reply: Callable[[Response], None]) -> None:
        loop = asyncio.get_running_loop()
        # The answer takes at least latency_ms from arrival, the bank's own work included.
        due = loop.time() + self.faults.latency_ms / 1000

        def send(response: Response, asked: bool = False) -> None:
            left = due - loop.time()
            if left > 0:
                loop.call_later(left, deliver, response, asked)
            else:
                deliver(response, asked)

        def deliver(response: Response, asked: bool) -> None:
            if asked:
                self.batcher.answered()
            reply(response)

        out = self._operation(req)
        if isinstance(out, Response):
            send(out)
            return
        future, finish = out

        def done(f: asyncio.Future[Answer]) -> None:
            try:
                response = finish(f.result())
            except Exception as exc:  # the desk failed: the caller gets a bare 500, as from a real bank
                response = Response(500, f"internal error: {type(exc).__name__}".encode(), "text/plain")
            send(response, asked=True)

        future.add_done_callback(done)

    def _operation(self, req: Request) -> Response | tuple[asyncio.Future[Answer], Callable[[Answer], Response]]:
        """A reply now, or the desk's pending answer and how to turn it into the reply."""
        if self.faults.roll(self.faults.error_rate):
            return Response(503, b"injected fault: service unavailable", "text/plain")
        op = req.path[len(api.API) :]
        try:
            body = orjson.loads(req.body or b"{}")
            if op == api.CREATE_QUOTE:
                return self._quote(req, body)
            if op == api.BOOK_DEAL:
                return self._book(req, body)
            if op == api.CANCEL_QUOTE:
                int(body["quoteID"])
                return _json(200, _envelope(_OK))
            if op.lower() == api.TXN_STATUS.lower():
                return self._status(body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = f"bad request: {type(exc).__name__}: {exc}"
            return _json(400, {"result": {"resultCode": 400, "resultMsg": msg, "validationErrors": []}})
        return _json(404, {"result": {"resultCode": 404, "resultMsg": f"no operation {op}"}})

    # -- the API -------------------------------------------------------------------------
    def _token(self, req: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(req.body.decode("latin-1")).items()}
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = req.headers.get("authorization") or ""
        if auth.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return _json(401, {"error": "invalid_client"})
        token = self.tokens.issue(client_id, secret)
        if token is None or form.get("grant_type") != "client_credentials":
            return _json(401, {"error": "invalid_client"})
        return _json(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.tokens.ttl_s})

    def _quote(self, req: Request, body: dict[str, Any]) -> tuple[asyncio.Future[Answer], Callable[[Answer], Response]]:
        trade, customer = body["trade"], body.get("customer") or {}
        account = (customer.get("fromSettlementAccount") or {}).get("accountNumber", "")
        date = str(trade.get("settlementDate") or "")
        row = {
            **_ids(req.headers),
            "amount": float(trade["dealCurrencyAmount"]),
            "amount_currency": trade["dealCurrency"],
            "currency_pair": trade["currencyPair"],
            "side": "BUY" if str(trade["tradeType"]).lower() == "buy" else "SELL",
            "client_cif": str(customer.get("cifNo", "")),
            "account_number": str(account),
            "delivery": str(trade.get("deliveryType", "")).upper(),
            "value_date": f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else "",
        }

        def finish(a: Answer) -> Response:
            if a.code:
                return _json(200, _envelope(a))
            expiry = _iso(a.expires_at)
            return _json(200, _envelope(a, quoteId=a.quote_id, quoteRate=a.rate, quoteExpiryDateTime=expiry))

        return self.batcher.ask("quote", row), finish

    def _book(self, req: Request, body: dict[str, Any]) -> tuple[asyncio.Future[Answer], Callable[[Answer], Response]]:
        trade = body["trade"]
        row = {
            **_ids(req.headers),
            "quote_id": int(trade["quoteID"]),
            "deal_id": str(trade["dealTransactionID"]),
            "quote_rate": float(trade["quoteRate"]),
            "deal_rate": float(trade["dealRate"]),
        }

        def finish(a: Answer) -> Response:
            if a.lost or (a.code == 0 and self.faults.roll(self.faults.drop_after_book_rate)):
                return Response(0, b"", drop=True)  # booked, and the caller never hears of it
            if a.code:
                return _json(200, _envelope(a))
            deal = {"dealTransactionID": row["deal_id"], "quoteID": row["quote_id"], "dealRate": a.rate}
            return _json(200, _envelope(a, deal=deal))

        return self.batcher.ask("book", row), finish

    def _status(self, body: dict[str, Any]) -> tuple[asyncio.Future[Answer], Callable[[Answer], Response]]:
        deal_id = str(body["transactionID"])

        def finish(a: Answer) -> Response:
            txn: dict[str, Any] = {"transactionID": deal_id, "status": a.status, "operation": api.BOOK_DEAL}
            txn["correlationID"] = deal_id
            if a.status == "COMPLETED":
                txn["context"] = {"thirdPartyDealID": f"SIM{a.quote_id}", "quoteID": a.quote_id, "dealRate": a.rate}
            return _json(200, _envelope(a, transaction=txn))

        return self.batcher.ask("status", {"deal_id": deal_id}), finish


def _ids(h: dict[str, str]) -> dict[str, Any]:
    key = h.get(api.H_TRADE_KEY.lower())
    return {
        # A caller without the simulator headers gets a fresh fate per request.
        "trade_key": int(key) if key else random.getrandbits(64),
        "step": int(h.get(api.H_STEP.lower()) or 0),
        "attempt": int(h.get(api.H_ATTEMPT.lower()) or 1),
        "run_id": int(h.get(api.H_RUN.lower()) or 0),
    }


_TXN_IDS = _transaction_ids()


def _envelope(a: Answer, **payload: Any) -> dict[str, Any]:
    return {"header": {"transactionId": next(_TXN_IDS)}, "result": _result(a), **payload}


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, orjson.dumps(body))


_OK = Answer(0, None, None)
