"""Serving the simulator with uvicorn (httptools parser, uvloop), with every limit set on purpose.

The limits, and who enforces each:

- request head: 16 KiB, else 431 (``GuardedProtocol``; uvicorn's ``h11_max_incomplete_event_size``
  is h11's only, its httptools protocol has no such limit);
- request body: 64 KiB, else 413 (``app.Gate``, an ASGI middleware);
- idle keep-alive connection: closed after ``keep_alive_s`` (uvicorn's ``timeout_keep_alive``);
- connections: ``max_connections`` (uvicorn's ``limit_concurrency``: beyond it a request gets a
  503), within the open-files limit, which is raised towards it; listen queue ``backlog``;
- request read time: ``read_timeout_s`` (``GuardedProtocol``). uvicorn 0.54 has none: its
  keep-alive timer runs only between requests, so a client that sends half a head, or a head
  with a Content-Length and half the body, and stalls, would hold its connection for ever. Here a
  request must arrive whole within ``read_timeout_s`` of its first byte (of the connection's
  opening, for its first request), or the connection is closed; one timer per connection, armed
  while a request is being read, cancelled once it is complete.

A held-open connection costs a protocol object and a timer, no task and no thread, so thousands
of them do not slow the others down, and the read timeout clears them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fxbatch.banksim.app import LostAnswerFilter, create_app
from fxbatch.banksim.service import Simulator

MAX_HEAD = 16 * 1024


@dataclass(frozen=True)
class Limits:
    read_timeout_s: float = 10.0
    keep_alive_s: int = 5
    max_connections: int = 16_384
    backlog: int = 1024
    max_head: int = MAX_HEAD


def _head_too_large() -> bytes:
    body = b"request head too large"
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request whose head is too large."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request read deadline and a request head limit."""

    read_timeout_s = 10.0
    max_head = MAX_HEAD

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True  # reading a request head (or waiting for one)
        self._raw = 0  # bytes received while reading this head (a head that never ends)
        self._head = 0  # size of this head's request line and headers (a head that ends)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._arm()  # no-op while armed: the deadline runs from a request's first byte
        if self._in_head:
            self._raw += len(data)
        super().data_received(data)
        if self._in_head and self._raw > self.max_head:
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()
        self._head = 0

    def on_url(self, url: bytes) -> None:
        self._head += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._raw = False, 0
        if self._head > self.max_head:
            self._refuse_head()
            raise HeadTooLarge  # the parser stops: the request never reaches the app
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():  # else it has been answered (431) already
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(_head_too_large())
            self.transport.close()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _read_timed_out(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()  # the app, if it waits for the body, hears http.disconnect


def guarded_protocol(limits: Limits) -> type[GuardedProtocol]:
    return type("BanksimProtocol", (GuardedProtocol,), {"read_timeout_s": limits.read_timeout_s,
                                                        "max_head": limits.max_head})  # fmt: skip


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's open-files limit towards ``wanted`` (within the hard limit); the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else wanted


def uvicorn_config(sim: Simulator, limits: Limits, port: int) -> uvicorn.Config:
    files = raise_open_files_limit(limits.max_connections + 256)
    return uvicorn.Config(
        create_app(sim),
        host="127.0.0.1",
        port=port,
        loop="auto",  # uvloop where it is installed (not on Windows), asyncio otherwise
        http=guarded_protocol(limits),
        ws="none",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,  # nobody stands in front of it
        # Limits, each on purpose: uvicorn's defaults leave some unbounded.
        timeout_keep_alive=limits.keep_alive_s,
        limit_concurrency=min(limits.max_connections, max(files - 128, 16)),
        backlog=limits.backlog,
        h11_max_incomplete_event_size=limits.max_head,  # the same limit, should h11 ever be used
        timeout_graceful_shutdown=5,
    )


class _Stopped(Exception):
    """SIGTERM, re-raised by uvicorn once it has shut down gracefully."""


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def serve(sim: Simulator, limits: Limits, port: int, on_ready: Callable[[int], None]) -> None:
    """Serve on 127.0.0.1:``port`` (0: any free port) until SIGTERM or SIGINT; ``on_ready(port)``
    once it accepts connections. Closes the simulator on the way out (pending writes written)."""
    # The loop gives up the GIL on every socket call and the ledger thread takes it; with the
    # default 5 ms switch interval the loop then waits that long per group. 0.5 ms keeps it lively.
    sys.setswitchinterval(0.0005)
    logging.getLogger("uvicorn.error").addFilter(LostAnswerFilter())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # uvicorn handles SIGINT and SIGTERM while it serves, then raises them again: return instead.
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        sock.bind(("127.0.0.1", port))
        bound = int(sock.getsockname()[1])
        server = uvicorn.Server(uvicorn_config(sim, limits, bound))

        async def main() -> None:
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not serving.done():
                await asyncio.sleep(0.01)
            if server.started:
                # The start-up heap (FastAPI, pydantic, the calendars) lives as long as the process:
                # frozen, the collector never walks it again. Otherwise the first full collection,
                # about half a second into the first run, stopped the loop for ~38 ms, holding up
                # every call in flight (make bench, 2,000 trades at 50 ms, 32 in flight).
                gc.collect()
                gc.freeze()
                on_ready(bound)
            await serving

        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(main())
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        gc.unfreeze()  # a caller serving in its own process gets its heap back
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        sim.close()
