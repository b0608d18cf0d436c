"""A minimal HTTP/1.1 server protocol on ``asyncio.Protocol``: just what the simulator needs.

Requests with ``Content-Length`` bodies (or none), kept alive, answered in the order they came
(so pipelined requests are safe); anything malformed gets a 400 and the connection is closed.
No chunked request bodies, no ``Expect: 100-continue``, no upgrades: the bank's API needs none.

Why not h11: profiled under the 32-in-flight benchmark, h11's event machinery cost the service
~0.5 ms a request, more than everything else it does; this parser costs a few microseconds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    drop: bool = False  # close the connection without answering


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# handler(request, reply): answers once, now or later, by calling reply(response).
Handler = Callable[[Request, Callable[[Response], None]], None]


def parse(buf: bytearray) -> tuple[Request, bool] | None:
    """The first complete request in ``buf`` and whether to keep the connection open after it;
    consumes it from ``buf``. None until a whole request is there; BadRequest when malformed."""
    while buf[:2] == b"\r\n":  # RFC 9112 2.2: ignore empty lines before a request line
        del buf[:2]
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise BadRequest(431, "request head too large")
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1] or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t" or name[0] in " \t":
            raise BadRequest(400, "malformed header line")
        key = name.lower()
        if key in headers and key in ("content-length", "host", "authorization"):
            raise BadRequest(400, f"repeated {name} header")
        headers[key] = value.strip(" \t")
    if "transfer-encoding" in headers:
        raise BadRequest(501, "chunked request bodies are not supported; send Content-Length")
    length = headers.get("content-length", "0")
    if not length.isdigit() or not length.isascii():
        raise BadRequest(400, "bad Content-Length")
    size = int(length)
    if size > MAX_BODY:
        raise BadRequest(413, "request body too large")
    start = end + 4
    if len(buf) < start + size:
        return None
    body = bytes(buf[start : start + size])
    del buf[: start + size]
    connection = headers.get("connection", "").lower()
    keep = connection != "close" if parts[2] == "HTTP/1.1" else connection == "keep-alive"
    return Request(parts[0], parts[1], headers, body), keep


_PHRASES = {s.value: s.phrase for s in HTTPStatus}


def _head(status: int, content_type: str, length: int, close: bool) -> bytes:
    phrase = _PHRASES.get(status, "")
    extra = "Connection: close\r\n" if close else ""
    return (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode("latin-1")


class Connection(asyncio.Protocol):
    """One client connection: parses requests, hands each to ``handler`` in turn, writes answers."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.queue: deque[tuple[Request | Response, bool]] = deque()  # a Response: a refusal
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (not isinstance of asyncio.Transport under uvloop, which has its own).
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            while self.buf and (found := parse(self.buf)) is not None:
                self.queue.append(found)
        except BadRequest as exc:  # answered in turn, after the requests before it; then close
            self.queue.append((Response(exc.status, str(exc).encode(), "text/plain"), False))
            self.buf.clear()
            if self.transport is not None:
                self.transport.pause_reading()
        self._next()

    def _next(self) -> None:
        if self.busy or not self.queue or self.closed:
            return
        request, keep = self.queue.popleft()
        self.busy = True
        if isinstance(request, Response):
            self._write(request, keep=False)
            return
        self.handler(request, lambda response: self._write(response, keep))

    def _write(self, response: Response, keep: bool) -> None:
        transport = self.transport
        if self.closed or transport is None:
            return
        if response.drop:
            self.closed = True
            transport.close()  # the caller hears nothing: the connection just ends
            return
        transport.write(_head(response.status, response.content_type, len(response.body), not keep) + response.body)
        self.busy = False
        if not keep:
            self.closed = True
            transport.close()
            return
        self._next()
