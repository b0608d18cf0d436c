"""The bank simulator as a service: ``python -m fxbatch.banksim serve`` in a subprocess.

Each test starts its own service on a port the service picks (``--port 0``, read from its
first line) with its own ledger, and kills it in the fixture's finally. Nothing waits on a
fixed sleep: every wait polls with a generous deadline.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from fxbatch.bank.http import wire
from tests.integration.banksim_helpers import CLIENT, DEADLINE_S, SECRET, Service

USER = "dealer@example.com"


class Dealer:
    """A caller of the service's API with its own token."""

    def __init__(self, svc: Service) -> None:
        self.http = httpx.Client(base_url=svc.url, timeout=10)
        form = {"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET}
        token = self.http.post(wire.TOKEN_PATH, data=form)
        assert token.status_code == 200, token.text
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.post(wire.API + op, json=body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def quote(self, amount: float = 50_000.0) -> dict[str, Any]:
        body = {
            "header": {"userId": USER},
            "customer": {"cifNo": "0123456789", "fromSettlementAccount": {"currency": "ZAR", "accountNumber": "12"},
                         "toSettlementAccount": {"currency": "USD", "accountNumber": "12"}},
            "trade": {"tradeType": "Buy", "deliveryType": "Spot", "currencyPair": "USD/ZAR", "dealCurrency": "ZAR",
                      "dealCurrencyAmount": amount, "settlementDate": "20261202",
                      "dealDateTime": "2026-11-30T09:15:00Z"},
        }  # fmt: skip
        answer = self.call(wire.CREATE_QUOTE, body)
        assert answer["result"]["resultCode"] == 0, answer
        payload: dict[str, Any] = answer["payload"]
        return payload

    def book_body(self, payload: dict[str, Any], deal_id: str) -> dict[str, Any]:
        return {"header": {"userId": USER}, "trade": {"quoteID": payload["quoteId"], "dealTransactionID": deal_id,
                "quoteRate": payload["quoteRate"], "dealRate": payload["quoteRate"] + 0.0358}}  # fmt: skip

    def book(self, payload: dict[str, Any], deal_id: str) -> dict[str, Any]:
        return self.call(wire.BOOK_DEAL, self.book_body(payload, deal_id))

    def status(self, deal_id: str) -> dict[str, Any]:
        return self.call(wire.TXN_STATUS, {"header": {"userId": USER}, "transactionID": deal_id})

    def close(self) -> None:
        self.http.close()


RELIABLE = ("--success-rate", "1", "--quote-ttl-s", "3600")


@pytest.mark.parametrize("service", [RELIABLE], indirect=True)
def test_two_runs_never_share_a_quote_id(service: Service) -> None:
    dealer = Dealer(service)
    try:
        runs = [[dealer.quote(1000.0 + i)["quoteId"] for i in range(25)] for _ in range(2)]  # the same trades twice
    finally:
        dealer.close()
    first, second = set(runs[0]), set(runs[1])
    assert len(first) == len(second) == 25
    assert not first & second
    assert all(isinstance(q, int) and 1 << 53 < q < 1 << 63 for q in first | second)


@pytest.mark.parametrize("service", [RELIABLE], indirect=True)
def test_after_kill_9_the_restarted_service_keeps_its_book(service: Service) -> None:
    dealer = Dealer(service)
    booked, cancelled, idle = dealer.quote(1.0), dealer.quote(2.0), dealer.quote(3.0)
    deal = str(uuid.uuid4())
    assert dealer.book(booked, deal)["result"]["resultCode"] == 0
    assert dealer.call(wire.CANCEL_QUOTE, {"header": {"userId": USER}, "quoteID": cancelled["quoteId"]})["result"]["resultCode"] == 0  # fmt: skip
    issued = {booked["quoteId"], cancelled["quoteId"], idle["quoteId"]}
    dealer.close()
    service.kill()
    service.start()
    dealer = Dealer(service)  # tokens do not survive a restart
    try:
        assert dealer.book(booked, str(uuid.uuid4()))["result"]["resultReasonCode"] == "QUOTE_ALREADY_BOOKED"
        assert dealer.book(booked, deal)["result"]["resultCode"] == 0  # the same booking: its answer again
        assert dealer.book(cancelled, str(uuid.uuid4()))["result"]["resultReasonCode"] == "QUOTE_CANCELLED"
        assert dealer.status(deal)["transaction"]["status"] == wire.COMPLETED
        fresh = [dealer.quote(10.0 + i)["quoteId"] for i in range(10)]
        assert not issued & set(fresh) and min(fresh) > max(issued)
        assert dealer.book(idle, str(uuid.uuid4()))["result"]["resultCode"] == 0
    finally:
        dealer.close()


@pytest.mark.parametrize("service", [("--drop-after-book-rate", "1", *RELIABLE)], indirect=True)
def test_a_lost_booking_answer_is_a_transport_error_and_the_deal_stays_booked(service: Service, tmp_path: Path) -> None:
    dealer = Dealer(service)
    deal = str(uuid.uuid4())
    try:
        with pytest.raises(httpx.TransportError):
            dealer.http.post(wire.API + wire.BOOK_DEAL, json=dealer.book_body(dealer.quote(), deal))
        assert dealer.status(deal)["transaction"]["status"] == wire.COMPLETED
    finally:
        dealer.close()
    assert service.stop() == 0  # SIGTERM: a clean stop
    ledger = service.ledger(tmp_path)
    assert [row["deal_transaction_id"] for row in ledger] == [deal]
    assert {"quote_id", "booked_at", "deal_rate"} <= set(ledger[0])


def raw_answer(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as sock:
        sock.sendall(data)
        return sock.recv(4096)


def test_a_request_head_or_body_over_the_limits_is_refused(service: Service) -> None:
    huge_head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-padding: " + b"a" * 20_000 + b"\r\n\r\n"
    assert raw_answer(service.port, huge_head).startswith(b"HTTP/1.1 431 ")
    endless_head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-padding: " + b"a" * 20_000  # never ends
    assert raw_answer(service.port, endless_head).startswith(b"HTTP/1.1 431 ")
    big_body = f"POST {wire.API}{wire.CREATE_QUOTE} HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n".encode()
    assert raw_answer(service.port, big_body).startswith(b"HTTP/1.1 413 ")


def closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes ``sock`` before ``deadline`` (reading anything it sends)."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


@pytest.mark.parametrize("service", [("--read-timeout-s", "1")], indirect=True)
def test_stalled_partial_requests_are_closed_after_the_read_timeout_without_starving_others(
    service: Service,
) -> None:
    dealer = Dealer(service)
    token = dealer.http.headers["Authorization"].encode()
    path = f"{wire.API}{wire.CREATE_QUOTE}".encode()
    partials = [
        b"POST " + path + b" HTTP/1.1\r\nhost: x\r\ncontent-le",  # half a head
        b"POST " + path + b" HTTP/1.1\r\nhost: x\r\nauthorization: " + token
        + b"\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"header\": {",  # half a body
        b"",  # connected, silent
    ]  # fmt: skip
    socks = []
    try:
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=DEADLINE_S)
            socks.append(sock)
            if partials[i % 3]:
                sock.sendall(partials[i % 3])
        assert httpx.get(f"{service.url}/health", timeout=DEADLINE_S).json() == {"status": "ok"}
        assert dealer.quote()["quoteId"] > 0  # others are served meanwhile
        deadline = time.monotonic() + 20.0
        assert all(closed_by_server(sock, deadline) for sock in socks)
    finally:
        dealer.close()
        for sock in socks:
            sock.close()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--error-rate", "2"), ("--quote-ttl-s", "0"), ("--today", "30/11/2026"), ("--failure-mix", "NOPE=1"),
     ("--read-timeout-s", "-1"), ("--max-amount", "0"), ("--hang-after-bookings", "-1")],
)  # fmt: skip
def test_a_bad_flag_exits_2_naming_it(tmp_path: Path, flag: str, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fxbatch.banksim", "serve", "--port", "0", "--db", str(tmp_path / "b.duckdb"), flag, value],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert flag in done.stderr
    assert not (tmp_path / "b.duckdb").exists()


_FROZEN_WHEN_READY = """
import gc, os, signal, sys
from fxbatch.banksim.__main__ import build_config, build_parser
from fxbatch.banksim.server import Limits, serve
from fxbatch.banksim.service import Simulator

args = build_parser().parse_args(["serve", "--port", "0", "--db", sys.argv[1]])
def ready(port):
    print("frozen", gc.get_freeze_count(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # a clean stop, as the service's own
serve(Simulator(build_config(args)), Limits(), 0, ready)
"""


def test_the_start_up_heap_is_frozen_before_the_service_says_it_is_ready(tmp_path: Path) -> None:
    # Left to the collector, the start-up heap (FastAPI, pydantic, calendars) made the first full
    # collection of a run stop the service for ~38 ms, with every call in flight held up.
    done = subprocess.run(
        [sys.executable, "-c", _FROZEN_WHEN_READY, str(tmp_path / "b.duckdb")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    frozen = int(re.findall(r"^frozen (\d+)$", done.stdout, re.M)[0])
    assert frozen > 50_000  # the whole start-up heap, not a handful of objects
