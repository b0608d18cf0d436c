"""An httpx async transport: a pool of kept-alive HTTP/1.1 connections on ``asyncio.Protocol``.

Why not httpx's own ``AsyncHTTPTransport``: its httpcore pool and anyio streams cost ~1 ms of
Python a call here (measured: 1,024 calls at 32 in flight and 10 ms latency took 9.5-17 s with
``httpx.AsyncClient``); this one writes the request in one send and parses the answer in the
protocol callback, a few tens of microseconds. Through ``handle_async_request`` requests and
responses stay ``httpx.Request`` and ``httpx.Response`` and the timeouts are httpx's
(``request.extensions["timeout"]``); the bank's caller uses ``exchange`` directly, with request
bytes it builds itself (a whole createquote call, JSON included, costs ~0.1 ms of client CPU).

HTTP/1.1 only: answers framed by Content-Length, chunked transfer coding or the connection's end;
no pipelining (one request at a time on a connection; the pool opens one per concurrent call).

Errors are httpx's: ConnectError / ConnectTimeout when nothing was sent (safe to send again),
RemoteProtocolError / ReadTimeout when the request may have reached the bank.
"""

from __future__ import annotations

import asyncio
import ssl
from types import TracebackType
from typing import cast

import httpx

_Key = tuple[str, str, int]
_Answer = tuple[int, list[tuple[bytes, bytes]], bytes, bool]  # status, headers, body, keep-alive


class _Lost(Exception):
    """The connection ended before a whole answer came back."""


def _parse(buf: bytearray, head_only: bool, eof: bool = False) -> _Answer | None:
    """A whole response at the start of ``buf`` (consumed), or None while incomplete.

    Raises ValueError for a malformed one. A response framed by the connection's end (no length,
    not chunked) is whole only once ``eof``.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise ValueError("response head too large")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
    status = int(rest[:3])
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    close = version == b"HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError("malformed header line")
        value = value.strip()
        headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding":
            chunked = value.lower().endswith(b"chunked")
        elif lname == b"connection":
            close = b"close" in value.lower() or (close and b"keep-alive" not in value.lower())
    start = end + 4
    if 100 <= status < 200:  # an interim answer (100 Continue): skip it, the real one follows
        del buf[:start]
        return _parse(buf, head_only, eof)
    if head_only or status in (204, 304):
        del buf[:start]
        return status, headers, b"", not close
    if chunked:
        body = _dechunk(buf, start)
        if body is None:
            return None
        data, stop = body
        del buf[:stop]
        return status, headers, data, not close
    if length is None:  # framed by the connection's end
        if not eof:
            return None
        length = len(buf) - start
        close = True
    if len(buf) < start + length:
        return None
    data = bytes(buf[start : start + length])
    del buf[: start + length]
    return status, headers, data, not close


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """The body of a chunked message starting at ``pos`` and where it ends, or None if incomplete."""
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            while True:  # trailer lines, up to an empty one
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return b"".join(parts), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


class _Connection(asyncio.Protocol):
    """One connection; ``exchange`` sends a request and waits for its whole answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[_Answer] | None = None
        self.head_only = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (not isinstance of asyncio.Transport under uvloop, which has its own).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.close()  # nothing was asked: a server that talks out of turn is not reused
            return
        self.buf += data
        try:
            answer = _parse(self.buf, self.head_only)
        except ValueError as exc:
            self.close()
            waiter.set_exception(_Lost(f"malformed response: {exc}"))
            return
        if answer is not None:
            waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if exc is None and self.buf:  # perhaps an answer framed by the connection's end
            try:
                answer = _parse(self.buf, self.head_only, eof=True)
            except ValueError:
                answer = None
            if answer is not None:
                waiter.set_result(answer)
                return
        waiter.set_exception(_Lost(f"connection closed before an answer ({exc or 'EOF'})"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, data: bytes, timeout: float | None, head_only: bool, deadlines: _Deadlines) -> _Answer:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Answer] = loop.create_future()
        self.waiter = waiter
        self.head_only = head_only
        self.transport.write(data)
        if timeout is not None:
            deadlines.add(loop, waiter, timeout)
        try:
            return await waiter
        finally:
            deadlines.waiting.pop(waiter, None)
            self.waiter = None


class _Deadlines:
    """Read timeouts of the calls waiting for an answer, checked by one timer every ``SWEEP_S``
    rather than one timer per call (a call's timer cost ~5% of its client CPU)."""

    SWEEP_S = 0.05

    def __init__(self) -> None:
        self.waiting: dict[asyncio.Future[_Answer], float] = {}
        self.timer: asyncio.TimerHandle | None = None

    def add(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[_Answer], timeout: float) -> None:
        self.waiting[waiter] = loop.time() + timeout
        if self.timer is None:
            self.timer = loop.call_later(self.SWEEP_S, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for waiter, deadline in list(self.waiting.items()):
            if deadline <= now:
                del self.waiting[waiter]
                if not waiter.done():
                    waiter.set_exception(TimeoutError())
        self.timer = loop.call_later(self.SWEEP_S, self._sweep, loop) if self.waiting else None

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """Pooled kept-alive connections per (scheme, host, port); call it from one event loop.

    A connection is taken from the pool for one request and put back when its answer was whole
    and the server keeps it open, so the pool grows to the number of calls in flight.
    """

    def __init__(self, timeout_s: float = 10.0, connect_timeout_s: float = 5.0, max_idle: int = 1024) -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle
        self._idle: dict[_Key, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._deadlines = _Deadlines()

    @property
    def idle(self) -> int:
        """Open connections waiting in the pool."""
        return sum(len(c) for c in self._idle.values())

    async def _connect(self, key: _Key, timeout: float | None, request: httpx.Request | None) -> _Connection:
        scheme, host, port = key
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(_Connection, host, port, ssl=tls)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        return conn

    def _take(self, key: _Key) -> _Connection | None:
        pool = self._idle.get(key)
        while pool:
            conn = pool.pop()
            if not conn.closed:
                return conn
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        timeouts = request.extensions.get("timeout") or {}
        stream = request.stream  # a ByteStream holds the whole body: no need for aread's copy
        content = b"".join(stream) if isinstance(stream, httpx.ByteStream) else await request.aread()
        head = [request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        status, headers, body = await self.exchange(
            (url.scheme, url.host, port), b"".join(head) + content,
            timeouts.get("connect", self.connect_timeout_s), timeouts.get("read", self.timeout_s),
            head_only=request.method == "HEAD", request=request,
        )  # fmt: skip
        if any(name.lower() == b"content-encoding" for name, _ in headers):
            return httpx.Response(status, headers=headers, content=body, request=request)  # httpx decodes it
        response = httpx.Response(status, headers=headers, stream=httpx.ByteStream(body), request=request)
        # The body is all here and not encoded: mark it read, as Response(content=...) does, without
        # the ~20 us a call of httpx's decoder machinery.
        response._content = body
        return response

    async def exchange(
        self,
        key: _Key,
        data: bytes,
        connect_timeout: float | None,
        read_timeout: float | None,
        *,
        head_only: bool = False,
        request: httpx.Request | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send ``data`` (a whole HTTP/1.1 request) to ``key`` = (scheme, host, port) on a pooled
        connection and return the answer's (status, headers, body). A timeout of None waits for
        ever, as in httpx.

        ``handle_async_request`` goes through here; so does the bank's caller directly, with the
        request bytes it built itself (no httpx Request and Response objects: a third of a call's
        client CPU). Errors are httpx's, as above.
        """
        conn = self._take(key)
        if conn is None:
            conn = await self._connect(key, connect_timeout, request)
        try:
            status, headers, body, keep = await conn.exchange(data, read_timeout, head_only, self._deadlines)
        except TimeoutError as exc:
            conn.close()
            raise httpx.ReadTimeout("no answer in time", request=request) from exc
        except _Lost as exc:
            conn.close()  # sent (perhaps), no answer: the caller decides whether to ask first
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        if keep and not conn.closed and self.idle < self.max_idle:
            self._idle.setdefault(key, []).append(conn)
        else:
            conn.close()
        return status, headers, body

    async def aclose(self) -> None:
        self._deadlines.cancel()
        pools, self._idle = self._idle, {}
        for pool in pools.values():
            for conn in pool:
                conn.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()
