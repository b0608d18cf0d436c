"""HTTP API benchmark (issue 13), against references measured in the same run:

1. events-stream latency: from a run's progress changing in the engine to the client holding
   the event (target <= the engine's progress interval + 100 ms);
2. ``GET /runs/{id}/trades`` first page of a 1M-trade run against the same query through the
   library (target <= 2x);
3. a notebook reading a batch's 1M trades over Arrow (``fxbatch.connect``) against reading them in
   process (target <= 3x).

The API is served by uvicorn on loopback, in this process (one process owns the database, as
in the server), so its work and the client's share the machine: a pessimistic set-up.
Ratios, not seconds, are the figures to compare.
"""

from __future__ import annotations

import itertools
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from bench_engine import _batch_file  # bench/ is the script's folder: on sys.path
from starlette.applications import Starlette
from starlette.routing import Mount

from fxbatch import Workbench
from fxbatch.api import create_api
from fxbatch.client import connect
from fxbatch.engine import jobs

N = 1_000_000
REPEAT = 15


@contextmanager
def serve(wb: Workbench) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = Starlette(routes=[Mount("/api", app=create_api(lambda: wb))])
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def best_of(fn: Callable[[], Any], repeat: int = REPEAT) -> float:
    """The median wall time of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def events_latency(wb: Workbench, url: str, batch_id: int) -> tuple[list[float], list[float]]:
    """(latencies of events after a progress change, gaps between the engine's progress changes)."""
    changes: list[tuple[float, int]] = []  # (monotonic time, done after the change)
    original_chunk, original_finished = jobs.Progress.chunk_state, jobs.Progress.finished

    def note(progress: jobs.Progress) -> None:
        changes.append((time.monotonic(), progress.snapshot().done))

    def chunk_state(self: jobs.Progress, states: Any) -> None:
        original_chunk(self, states)
        note(self)

    def finished(self: jobs.Progress, statuses: dict[str, int]) -> None:
        original_finished(self, statuses)
        note(self)

    jobs.Progress.chunk_state = chunk_state  # type: ignore[method-assign]
    jobs.Progress.finished = finished  # type: ignore[method-assign]
    arrivals: list[tuple[float, int]] = []
    try:
        with connect(url) as client:
            job = client.start_run(batch_id, latency_ms=20.0, concurrency=64)
            for view in client.events(job.run_id):
                if view.progress is not None:
                    arrivals.append((time.monotonic(), view.progress.done))
                if view.finished:
                    break
    finally:
        jobs.Progress.chunk_state, jobs.Progress.finished = original_chunk, original_finished
    latencies = []
    firsts: dict[int, float] = {}
    for arrived, done in arrivals:  # the first event showing each `done` (later ones are heartbeats)
        firsts.setdefault(done, arrived)
    for done, arrived in firsts.items():
        # The first moment the engine's progress showed this event's `done`.
        first = next((t for t, d in changes if d >= done), None)
        if first is not None and done > 0 and arrived >= first:
            latencies.append(arrived - first)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(changes) if b[1] != a[1]]
    return latencies, gaps


def main() -> None:
    path = _batch_file(N, f"engine_{N}.csv")  # the engine benchmark's file: made once for both
    with tempfile.TemporaryDirectory() as tmp, Workbench.open_local(Path(tmp) / "bench.duckdb") as wb:
        big = wb.load(path).batch_id
        big_run = wb.run(big, seed=1).run_id
        small = wb.load(_batch_file(5_000, "api_5000.csv")).batch_id

        lib_page = best_of(lambda: wb.run_trades_page(big_run, limit=50))
        lib_read = best_of(lambda: wb.trades(big), repeat=3)
        with serve(wb) as url, httpx.Client(base_url=f"{url}/api/v1") as http, connect(url) as client:
            json_page = best_of(lambda: http.get(f"/runs/{big_run}/trades", params={"limit": 50}).raise_for_status())
            arrow_page = best_of(lambda: client.run_trades_page(big_run, limit=50))
            arrow_read = best_of(lambda: client.trades(big), repeat=3)
            latencies, gaps = events_latency(wb, url, small)
            rows = len(client.trades(big))
    assert rows == N, rows
    interval = statistics.median(gaps) if gaps else float("nan")
    lat = sorted(latencies)
    p95 = lat[int(0.95 * (len(lat) - 1))] if lat else float("nan")
    print(
        f"api events: {len(lat)} events, latency median {statistics.median(lat) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {lat[-1] * 1000:.0f} ms; engine progress interval {interval * 1000:.0f} ms; "
        f"target p95 <= interval + 100 ms = {(interval + 0.1) * 1000:.0f} ms"
    )
    print(
        f"api trades first page of a 1M-trade run: JSON {json_page * 1000:.1f} ms, Arrow (client) "
        f"{arrow_page * 1000:.1f} ms, library {lib_page * 1000:.1f} ms: ratio {json_page / lib_page:.2f}x JSON, "
        f"{arrow_page / lib_page:.2f}x Arrow (target <= 2x)"
    )
    print(
        f"api notebook read of 1M trades over Arrow: {arrow_read:.2f} s, in process {lib_read:.2f} s: "
        f"ratio {arrow_read / lib_read:.2f}x (target <= 3x)"
    )


if __name__ == "__main__":
    main()
