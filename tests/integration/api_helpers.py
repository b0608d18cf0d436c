"""Shared helpers of the API tests: the API served over real HTTP, events, a bank held on a gate."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from fxbatch import Workbench
from fxbatch.api import create_api
from fxbatch.models import RunConfig

ARROW = "application/vnd.apache.arrow.stream"
PROBLEM = "application/problem+json"
WAIT = 60.0  # seconds: a generous upper bound; a hang fails instead of blocking


def mounted(wb: Workbench) -> ASGIApp:
    """The API as the server mounts it: under /api."""
    return Starlette(routes=[Mount("/api", app=create_api(lambda: wb))])


@contextmanager
def serve_api(wb: Workbench) -> Iterator[str]:
    """Serve the mounted API on 127.0.0.1 at a free port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        mounted(wb), lifespan="off", http="h11", ws="none", loop="asyncio", log_config=None, log_level=None,
        access_log=False, timeout_graceful_shutdown=5,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"api-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not server.started:
            assert thread.is_alive(), "the API server thread died during startup"
            assert time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def api_client(wb: Workbench) -> Iterator[httpx.Client]:
    with serve_api(wb) as url, httpx.Client(base_url=f"{url}/api/v1", timeout=WAIT) as client:
        yield client


def assert_problem(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The answer is an RFC 9457 problem with this status (and fxbatch code); returns its body."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers["content-type"]
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["detail"] and body["title"] and body["type"]
    if code is not None:
        assert body["code"] == code, body
    return body


def events(resp: httpx.Response) -> Iterator[dict[str, Any]]:
    """The run objects of a server-sent events answer, as they arrive."""
    for line in resp.iter_lines():
        if line.startswith("data:"):
            yield json.loads(line[5:])


class Gate:
    """Holds every run's first quote request until ``release()``: a run that is surely still
    executing, however fast the machine (``entered`` is set once a run is held)."""

    def __init__(self, wb: Workbench) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        make_bank: Callable[[RunConfig], Any] = wb.engine.bank_factory

        def factory(config: RunConfig) -> Any:
            bank = make_bank(config)
            quote = bank.create_quotes

            def held(batch: Any, max_in_flight: int) -> Any:
                self.entered.set()
                assert self.released.wait(WAIT), "the gate was never released"
                return quote(batch, max_in_flight)

            bank.create_quotes = held
            return bank

        wb.engine.bank_factory = factory

    def wait_held(self) -> None:
        assert self.entered.wait(WAIT), "no run reached the bank"

    def release(self) -> None:
        self.released.set()
