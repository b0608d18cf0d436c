"""KeepAliveTransport against a scripted server on loopback: framing, keep-alive, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from fxbatch.bank.http.transport import KeepAliveTransport, _parse


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def run(answer: Callable[[bytes], bytes | None], calls: int, *, timeout: float = 2.0) -> tuple[list[object], int]:
    """Serve ``answer`` (None: close without answering) and make ``calls`` requests one after another;
    returns the responses (or exceptions) and how many connections the server saw."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                data = answer(await read_request(reader))
                if data is None:
                    break
                writer.write(data)
                await writer.drain()
                if b"Connection: close" in data:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> list[object]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = KeepAliveTransport(timeout, timeout)
        out: list[object] = []
        try:
            for i in range(calls):
                request = httpx.Request("POST", f"http://127.0.0.1:{port}/x", content=b'{"n": %d}' % i)
                try:
                    out.append(await transport.handle_async_request(request))
                except httpx.TransportError as exc:
                    out.append(exc)
        finally:
            await transport.aclose()
            server.close()
            await server.wait_closed()
        return out

    return asyncio.run(main()), connections


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_answers_reuse_one_kept_alive_connection() -> None:
    out, connections = run(lambda req: OK, 3)
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 and r.json() == {} for r in out)
    assert connections == 1


def test_connection_close_makes_the_next_call_open_a_new_connection() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    out, connections = run(lambda req: closing, 2)
    assert [r.status_code for r in out if isinstance(r, httpx.Response)] == [200, 200]
    assert connections == 2


def test_a_chunked_answer_is_joined() -> None:
    chunked = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n5;x=y\r\n": 1}\r\n0\r\n\r\n'
    out, _ = run(lambda req: chunked, 2)
    assert [r.json() for r in out if isinstance(r, httpx.Response)] == [{"a": 1}, {"a": 1}]


def test_no_answer_before_the_connection_ends_is_a_remote_protocol_error() -> None:
    out, _ = run(lambda req: None, 1)
    assert isinstance(out[0], httpx.RemoteProtocolError)


def test_no_answer_in_time_is_a_read_timeout() -> None:
    out, _ = run(lambda req: b"", 1, timeout=0.2)  # the server reads the request and says nothing
    assert isinstance(out[0], httpx.ReadTimeout)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (OK, (200, b"{}", True)),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, (200, b"{}", True)),
        (b"HTTP/1.0 204 No Content\r\n\r\n", (204, b"", False)),
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy", (503, b"busy", False)),
    ],
)
def test_responses_are_framed_by_length_interim_answers_are_skipped(
    data: bytes, expected: tuple[int, bytes, bool]
) -> None:
    answer = _parse(bytearray(data), head_only=False)
    assert answer is not None
    assert (answer[0], answer[2], answer[3]) == expected


def test_an_answer_without_length_ends_with_the_connection() -> None:
    data = bytearray(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
    assert _parse(data, head_only=False) is None
    answer = _parse(data, head_only=False, eof=True)
    assert answer is not None and answer[2] == b"until the end" and answer[3] is False
