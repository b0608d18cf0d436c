"""The bank simulator's HTTP service: token endpoint, the four API paths, /health.

Stdlib ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive, on 127.0.0.1 only. Business answers
(refusals included) are HTTP 200 with the API's result envelope; the injected faults are what a
real network does: slow answers, bare 5xx, and a booking made whose answer never comes back.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One segment per answer: headers and body buffered together (flushed after each request),
    # and no Nagle delay, which otherwise adds ~40 ms per keep-alive call against delayed ACKs.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: BankServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per call is noise
        return

    _due = 0.0

    def _wait_due(self) -> None:
        left = self._due - time.monotonic()
        if left > 0:
            time.sleep(left)

    def _send(self, status: int, body: dict[str, Any] | str) -> None:
        self._wait_due()
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"result": {"resultCode": 404, "resultMsg": "no such path"}})

    def do_POST(self) -> None:
        raw = self._body()
        if self.path == api.TOKEN_PATH:
            self._token(raw)
            return
        if not self.path.startswith(api.API):
            self._send(404, {"result": {"resultCode": 404, "resultMsg": "no such path"}})
            return
        if not self.server.tokens.valid(self.headers.get("Authorization")):
            self._send(401, {"result": {"resultCode": 401, "resultMsg": "token missing, unknown or expired"}})
            return
        faults = self.server.faults
        # The answer takes at least latency_ms from arrival, the bank's own work included.
        self._due = time.monotonic() + faults.latency_ms / 1000
        if faults.roll(faults.error_rate):
            self._wait_due()
            self._send(503, "injected fault: service unavailable")
            return
        try:
            body = json.loads(raw or b"{}")
            op = self.path[len(api.API) :]
            handler = {api.CREATE_QUOTE: self._quote, api.BOOK_DEAL: self._book, api.CANCEL_QUOTE: self._cancel}.get(op)
            if handler is None and op.lower() == api.TXN_STATUS.lower():
                handler = self._status
            if handler is None:
                self._send(404, {"result": {"resultCode": 404, "resultMsg": f"no operation {op}"}})
                return
            handler(body)
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"bad request: {type(exc).__name__}: {exc}"
            self._send(400, {"result": {"resultCode": 400, "resultMsg": msg, "validationErrors": []}})

    def _token(self, raw: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        token = self.server.tokens.issue(client_id, secret)
        if token is None or form.get("grant_type") != "client_credentials":
            self._send(401, {"error": "invalid_client"})
            return
        self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.server.tokens.ttl_s})

    def _ids(self) -> dict[str, Any]:
        h = self.headers
        key = h.get(api.H_TRADE_KEY)
        return {
            # A caller without the simulator headers still gets a stable answer per request body.
            "trade_key": int(key) if key else random.getrandbits(64),
            "step": int(h.get(api.H_STEP) or 0),
            "attempt": int(h.get(api.H_ATTEMPT) or 1),
            "spread_bps": float(h.get(api.H_SPREAD) or 0.0),
            "run_id": int(h.get(api.H_RUN) or 0),
        }

    def _envelope(self, a: Answer, **payload: Any) -> dict[str, Any]:
        return {"header": {"transactionId": str(uuid.uuid4())}, "result": _result(a), **payload}

    def _quote(self, body: dict[str, Any]) -> None:
        trade, customer = body["trade"], body.get("customer") or {}
        account = (customer.get("fromSettlementAccount") or {}).get("accountNumber", "")
        date = str(trade.get("settlementDate") or "")
        row = {
            **self._ids(),
            "amount": float(trade["dealCurrencyAmount"]),
            "amount_currency": trade["dealCurrency"],
            "currency_pair": trade["currencyPair"],
            "side": "BUY" if str(trade["tradeType"]).lower() == "buy" else "SELL",
            "client_cif": str(customer.get("cifNo", "")),
            "account_number": str(account),
            "delivery": str(trade.get("deliveryType", "")).upper(),
            "value_date": f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else "",
        }
        a = self.server.desk.ask("quote", row)
        extra = (
            {"quoteId": a.quote_id, "quoteRate": a.rate, "quoteExpiryDateTime": _iso(a.expires_at)}
            if not a.code
            else {}
        )
        self._send(200, self._envelope(a, **extra))

    def _book(self, body: dict[str, Any]) -> None:
        trade = body["trade"]
        row = {
            **self._ids(),
            "quote_id": int(trade["quoteID"]),
            "deal_id": str(trade["dealTransactionID"]),
            "quote_rate": float(trade["quoteRate"]),
            "deal_rate": float(trade["dealRate"]),
        }
        a = self.server.desk.ask("book", row)
        if a.lost or (a.code == 0 and self.server.faults.roll(self.server.faults.drop_after_book_rate)):
            self._wait_due()
            self.close_connection = True  # booked, and the caller never hears of it
            return
        deal = {"dealTransactionID": row["deal_id"], "quoteID": row["quote_id"], "dealRate": a.rate}
        self._send(200, self._envelope(a, **({"deal": deal} if not a.code else {})))

    def _cancel(self, body: dict[str, Any]) -> None:
        int(body["quoteID"])
        self._send(200, self._envelope(Answer(0, None, None)))

    def _status(self, body: dict[str, Any]) -> None:
        deal_id = str(body["transactionID"])
        a = self.server.desk.ask("status", {"deal_id": deal_id})
        txn: dict[str, Any] = {
            "transactionID": deal_id,
            "status": a.status,
            "operation": api.BOOK_DEAL,
            "correlationID": deal_id,
        }
        if a.status == "COMPLETED":
            txn["context"] = {"thirdPartyDealID": f"SIM{a.quote_id}", "quoteID": a.quote_id, "dealRate": a.rate}
        self._send(200, self._envelope(a, transaction=txn))


class BankServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, port: int, desk: Desk, tokens: Tokens, faults: Faults) -> None:
        self.desk = desk
        self.tokens = tokens
        self.faults = faults
        super().__init__(("127.0.0.1", port), Handler)
