"""The bank simulator's HTTP service: token endpoint, the four API paths, /health.

One asyncio event loop on 127.0.0.1 speaking HTTP/1.1 keep-alive through h11 (the protocol
library under httpx). Measured here, the stdlib ``ThreadingHTTPServer`` spent ~0.7 ms a call
(threads queueing for the GIL) and capped a 32-in-flight client at ~3x its ideal; the loop needs
a fraction of that and batches the requests that wait together into one SimulatedBank call.

Business answers (refusals included) are HTTP 200 with the API's result envelope; the injected
faults are what a real network does: slow answers, bare 5xx, and a booking made whose answer
never comes back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import h11

from fxbatch.bank import http as api
from fxbatch.banksim.desk import Answer, Desk


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


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _result(a: Answer) -> dict[str, Any]:
    if a.code == 0:
        return {"resultCode": 0, "resultMsg": "Success"}
    return {"resultCode": a.code, "resultMsg": a.message, "resultReasonCode": a.reason, "validationErrors": []}


_NOT_FOUND = {"result": {"resultCode": 404, "resultMsg": "no such path"}}


class _Batcher:
    """Requests of one kind that wait together are decided in one desk call.

    The desk works on its own thread (DuckDB and numpy release the GIL), so the loop keeps
    reading requests meanwhile; whatever arrived during one desk call makes the next batch.
    A booking costs the desk ~7 ms a call whatever the batch size, so batches must grow with load.
    """

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.pending: dict[str, list[tuple[dict[str, Any], asyncio.Future[Answer]]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="banksim-desk")
        self._task: asyncio.Task[None] | None = None

    def ask(self, kind: str, row: dict[str, Any]) -> asyncio.Future[Answer]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self.pending.setdefault(kind, []).append((row, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            pending, self.pending = self.pending, {}
            for kind, items in pending.items():
                rows = [row for row, _ in items]
                try:
                    answers = await loop.run_in_executor(self._pool, self.desk.decide, kind, rows)
                except Exception as exc:  # every waiting request gets an answer, whatever went wrong
                    for _, f in items:
                        f.set_exception(exc)
                    continue
                for (_, f), a in zip(items, answers, strict=True):
                    f.set_result(a)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass
class _Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _Reply:
    status: int
    body: dict[str, Any] | str
    drop: bool = False  # close the connection without answering


class BankServer:
    """The service: ``serve_forever`` runs it until ``shutdown`` (thread-safe) is called."""

    def __init__(self, port: int, desk: Desk, tokens: Tokens, faults: Faults) -> None:
        self.port = port
        self.tokens = tokens
        self.faults = faults
        self.batcher = _Batcher(desk)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.ready = threading.Event()

    def serve_forever(self, on_ready: Any = None) -> None:
        asyncio.run(self._main(on_ready))

    def shutdown(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _main(self, on_ready: Any) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port, backlog=512)
        self.port = int(server.sockets[0].getsockname()[1])
        self.ready.set()
        if on_ready is not None:
            on_ready(self.port)
        try:
            async with server:
                await self._stop.wait()
        finally:
            self.batcher.close()

    # -- HTTP/1.1 over h11 ---------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                call = await self._read(conn, reader)
                if call is None:
                    return
                reply = await self._route(call)
                if reply.drop:
                    return  # the finally closes the socket: the caller hears nothing
                text = json.dumps(reply.body) if isinstance(reply.body, dict) else reply.body
                data = text.encode()
                kind = "application/json" if isinstance(reply.body, dict) else "text/plain"
                head = [("Content-Type", kind), ("Content-Length", str(len(data)))]
                writer.write(
                    conn.send(h11.Response(status_code=reply.status, headers=head))
                    + conn.send(h11.Data(data=data))
                    + conn.send(h11.EndOfMessage())
                )
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _read(self, conn: h11.Connection, reader: asyncio.StreamReader) -> _Call | None:
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and conn.their_state is h11.IDLE:
                    return None
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                return _Call(request.method.decode(), request.target.decode(), headers, body)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    # -- the API -------------------------------------------------------------------------
    async def _route(self, call: _Call) -> _Reply:
        if call.method == "GET":
            return _Reply(200, {"status": "ok"}) if call.path == "/health" else _Reply(404, _NOT_FOUND)
        if call.path == api.TOKEN_PATH:
            return self._token(call)
        if not call.path.startswith(api.API):
            return _Reply(404, _NOT_FOUND)
        if not self.tokens.valid(call.headers.get("authorization")):
            return _Reply(401, {"result": {"resultCode": 401, "resultMsg": "token missing, unknown or expired"}})
        loop = asyncio.get_running_loop()
        # The answer takes at least latency_ms from arrival, the bank's own work included.
        due = loop.time() + self.faults.latency_ms / 1000
        reply = await self._operation(call)
        left = due - loop.time()
        if left > 0:
            await asyncio.sleep(left)
        return reply

    async def _operation(self, call: _Call) -> _Reply:
        if self.faults.roll(self.faults.error_rate):
            return _Reply(503, "injected fault: service unavailable")
        op = call.path[len(api.API) :]
        try:
            body = json.loads(call.body or b"{}")
            if op == api.CREATE_QUOTE:
                return await self._quote(call, body)
            if op == api.BOOK_DEAL:
                return await self._book(call, body)
            if op == api.CANCEL_QUOTE:
                int(body["quoteID"])
                return _Reply(200, _envelope(Answer(0, None, None)))
            if op.lower() == api.TXN_STATUS.lower():
                return await self._status(body)
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"bad request: {type(exc).__name__}: {exc}"
            return _Reply(400, {"result": {"resultCode": 400, "resultMsg": msg, "validationErrors": []}})
        return _Reply(404, {"result": {"resultCode": 404, "resultMsg": f"no operation {op}"}})

    def _token(self, call: _Call) -> _Reply:
        form = {k: v[0] for k, v in parse_qs(call.body.decode()).items()}
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = call.headers.get("authorization") or ""
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        token = self.tokens.issue(client_id, secret)
        if token is None or form.get("grant_type") != "client_credentials":
            return _Reply(401, {"error": "invalid_client"})
        return _Reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.tokens.ttl_s})

    async def _quote(self, call: _Call, body: dict[str, Any]) -> _Reply:
        trade, customer = body["trade"], body.get("customer") or {}
        account = (customer.get("fromSettlementAccount") or {}).get("accountNumber", "")
        date = str(trade.get("settlementDate") or "")
        row = {
            **_ids(call.headers),
            "amount": float(trade["dealCurrencyAmount"]),
            "amount_currency": trade["dealCurrency"],
            "currency_pair": trade["currencyPair"],
            "side": "BUY" if str(trade["tradeType"]).lower() == "buy" else "SELL",
            "client_cif": str(customer.get("cifNo", "")),
            "account_number": str(account),
            "delivery": str(trade.get("deliveryType", "")).upper(),
            "value_date": f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else "",
        }
        a = await self.batcher.ask("quote", row)
        extra = (
            {} if a.code else {"quoteId": a.quote_id, "quoteRate": a.rate, "quoteExpiryDateTime": _iso(a.expires_at)}
        )
        return _Reply(200, _envelope(a, **extra))

    async def _book(self, call: _Call, body: dict[str, Any]) -> _Reply:
        trade = body["trade"]
        row = {
            **_ids(call.headers),
            "quote_id": int(trade["quoteID"]),
            "deal_id": str(trade["dealTransactionID"]),
            "quote_rate": float(trade["quoteRate"]),
            "deal_rate": float(trade["dealRate"]),
        }
        a = await self.batcher.ask("book", row)
        if a.lost or (a.code == 0 and self.faults.roll(self.faults.drop_after_book_rate)):
            return _Reply(0, "", drop=True)  # booked, and the caller never hears of it
        deal = {"dealTransactionID": row["deal_id"], "quoteID": row["quote_id"], "dealRate": a.rate}
        return _Reply(200, _envelope(a, **({} if a.code else {"deal": deal})))

    async def _status(self, body: dict[str, Any]) -> _Reply:
        deal_id = str(body["transactionID"])
        a = await self.batcher.ask("status", {"deal_id": deal_id})
        txn: dict[str, Any] = {"transactionID": deal_id, "status": a.status, "operation": api.BOOK_DEAL}
        txn["correlationID"] = deal_id
        if a.status == "COMPLETED":
            txn["context"] = {"thirdPartyDealID": f"SIM{a.quote_id}", "quoteID": a.quote_id, "dealRate": a.rate}
        return _Reply(200, _envelope(a, transaction=txn))


def _ids(h: dict[str, str]) -> dict[str, Any]:
    key = h.get(api.H_TRADE_KEY.lower())
    return {
        # A caller without the simulator headers gets a fresh fate per request.
        "trade_key": int(key) if key else random.getrandbits(64),
        "step": int(h.get(api.H_STEP.lower()) or 0),
        "attempt": int(h.get(api.H_ATTEMPT.lower()) or 1),
        "spread_bps": float(h.get(api.H_SPREAD.lower()) or 0.0),
        "run_id": int(h.get(api.H_RUN.lower()) or 0),
    }


def _envelope(a: Answer, **payload: Any) -> dict[str, Any]:
    return {"header": {"transactionId": str(uuid.uuid4())}, "result": _result(a), **payload}
