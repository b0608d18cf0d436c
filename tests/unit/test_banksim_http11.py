"""The simulator's HTTP/1.1 server protocol: parsing, keep-alive, pipelining order, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from fxbatch.banksim.http11 import BadRequest, Connection, Request, Response, parse


def post(path: str = "/x", body: bytes = b"{}", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True


def test_a_request_is_parsed_once_whole_and_consumed_from_the_buffer() -> None:
    data = post("/api", b'{"a": 1}', b"Authorization: Bearer t\r\n")
    buf = bytearray(data[:-3])
    assert parse(buf) is None  # the body is not all there yet
    buf += data[-3:]
    found = parse(buf)
    assert found is not None
    request, keep = found
    assert (request.method, request.path, request.body, keep) == ("POST", "/api", b'{"a": 1}', True)
    assert request.headers["authorization"] == "Bearer t"
    assert buf == bytearray()


def test_pipelined_requests_come_out_one_by_one_in_order() -> None:
    buf = bytearray(post("/one") + post("/two") + b"GET /health HTTP/1.0\r\n\r\n")
    paths = []
    while (found := parse(buf)) is not None:
        paths.append((found[0].path, found[1]))
    assert paths == [("/one", True), ("/two", True), ("/health", False)]  # HTTP/1.0 closes by default


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"POST /x HTTP/2.0\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: -4\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    ],
)
def test_malformed_requests_are_refused_with_a_status(data: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as info:
        parse(bytearray(data))
    assert info.value.status == status


def connection(handler: Callable[[Request, Callable[[Response], None]], None]) -> tuple[Connection, FakeTransport]:
    conn = Connection(handler)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


def test_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    waiting: list[tuple[Request, Callable[[Response], None]]] = []
    conn, transport = connection(lambda req, reply: waiting.append((req, reply)))
    conn.data_received(post("/one") + post("/two"))
    assert [r.path for r, _ in waiting] == ["/one"]  # the second waits for the first's answer
    waiting[0][1](Response(200, b"1"))
    assert [r.path for r, _ in waiting] == ["/one", "/two"]
    waiting[1][1](Response(200, b"2"))
    assert [w.endswith(b"\r\n\r\n1") for w in transport.written] == [True, False]
    assert transport.written[1].endswith(b"\r\n\r\n2") and not transport.closed


def test_a_malformed_request_gets_a_400_and_the_connection_closes() -> None:
    conn, transport = connection(lambda req, reply: reply(Response(200, b"ok")))
    conn.data_received(post("/fine") + b"GARBAGE\r\n\r\n")
    assert transport.written[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.written[1].startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert transport.closed


def test_a_dropped_answer_closes_the_connection_without_a_byte() -> None:
    conn, transport = connection(lambda req, reply: reply(Response(0, b"", drop=True)))
    conn.data_received(post())
    assert transport.written == [] and transport.closed
