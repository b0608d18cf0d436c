"""HTTP bank benchmark: 2,000 trades against the bank simulator service at a realistic 50 ms a
call with 32 in flight, against the ideal wall time (trades x 2 calls x latency / in flight).
The floor printed beside it counts the calls the run had to make (the retries the simulator's
refusals asked for, and the cancels of quotes not booked): no client can take less.

The service runs as its own process on loopback; the run goes through the engine and the HTTP
bank exactly as ``fxbatch run --bank URL`` does. Ratios, not seconds, are the figure to compare.
On a shared machine the wall ratio swings with the load (printed), so the CPU each side spent per
trade is printed too: the client's includes the engine's own work (the in-process run's CPU is
the reference for that), the service's is read from /proc (Linux).

Where the time over the floor goes is printed from a timeline of every request (when the client
sent it, when the answer was in): the time a request took as the client saw it, against the
simulated latency, and how long slots stood idle (fewer than the calls in flight allowed, from
the first request to the last answer).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fxbatch import Settings, Workbench
from fxbatch.bank.http import caller
from fxbatch.samples import make_trades, write_csv

# A fixed trading day (a Monday) for the client and the simulator alike, so that the figure does
# not depend on the weekday the benchmark runs on (CASH trades cannot settle on a Saturday).
os.environ["FXBATCH_TODAY"] = "2026-11-30"
N = 2_000
LATENCY_MS = 50.0
CONCURRENCY = 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(port: int, db: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "fxbatch.banksim", "serve", "--port", str(port), "--db", str(db),
           "--latency-ms", str(LATENCY_MS)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the bank simulator did not start")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (NaN where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@contextmanager
def timeline() -> Iterator[list[tuple[float, float]]]:
    """(sent, answered) of every request the HTTP bank makes in the block (monotonic seconds)."""
    spans: list[tuple[float, float]] = []
    send = caller.Caller._send

    async def timed(self: caller.Caller, op: str, content: bytes, token: str) -> Any:
        sent = time.monotonic()
        try:
            return await send(self, op, content, token)
        finally:
            spans.append((sent, time.monotonic()))

    caller.Caller._send = timed  # type: ignore[method-assign]
    try:
        yield spans
    finally:
        caller.Caller._send = send  # type: ignore[method-assign]


def idle_s(spans: list[tuple[float, float]], slots: int) -> float:
    """Seconds of ``slots`` calls in flight left unused between the first request and the last
    answer, over ``slots`` (the wall time they stand for)."""
    starts, ends = np.array(spans).T
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
    order = np.argsort(times, kind="stable")
    times, in_flight = times[order], np.cumsum(steps[order])
    free = np.clip(slots - in_flight[:-1], 0, None)
    return float((free * np.diff(times)).sum()) / slots


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = _free_port()
        proc = _start(port, root / "bank.duckdb")
        try:
            with Workbench.open(settings=Settings(db=root / "bench.duckdb")) as wb:
                path = write_csv(make_trades(N, seed=5), root / "trades.csv")
                batch = wb.load(path, today=date(2026, 11, 30)).batch_id
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                service_cpu, client_cpu = _cpu_s(proc.pid), _own_cpu_s()
                with timeline() as spans:
                    start = time.perf_counter()
                    summary = wb.run(batch, bank_url=f"http://127.0.0.1:{port}", concurrency=CONCURRENCY)
                    elapsed = time.perf_counter() - start
                service_cpu, client_cpu = _cpu_s(proc.pid) - service_cpu, _own_cpu_s() - client_cpu
                cur = wb.store.cursor()
                quotes, bookings = cur.execute(
                    "SELECT (SELECT sum(attempts) FROM run_trades WHERE run_id = $r), "
                    "(SELECT count(*) FROM run_inflight WHERE run_id = $r)",
                    {"r": summary.run_id},
                ).fetchall()[0]
                calls = int(quotes or 0) + int(bookings or 0) + summary.quotes_cancelled
                # Same-run reference: the in-process simulated bank with the same latency, i.e.
                # the engine's own waves, retries and backoff without any HTTP.
                engine_cpu = _own_cpu_s()
                start = time.perf_counter()
                wb.run(batch, concurrency=CONCURRENCY, latency_ms=LATENCY_MS)
                in_process = time.perf_counter() - start
                engine_cpu = _own_cpu_s() - engine_cpu
        finally:
            proc.kill()
            proc.wait(10)
    assert summary.counts["PENDING"] == 0, summary.counts
    ideal = N * 2 * LATENCY_MS / 1000 / CONCURRENCY
    print(
        f"http bank: {N:,} trades, {LATENCY_MS:g} ms latency, concurrency {CONCURRENCY}: "
        f"ours {elapsed:.2f} s, ideal {ideal:.2f} s, ratio {elapsed / ideal:.2f}x (target <= 1.15x); "
        f"{summary.status.value} {summary.counts['SUCCESS']:,} SUCCESS / {summary.counts['FAILED']:,} FAILED "
        f"({', '.join(f'{k} {v}' for k, v in summary.failure_reasons.items())})"
    )
    print(
        f"  reference: in-process simulated bank at the same latency {in_process:.2f} s "
        f"({in_process / ideal:.2f}x ideal); HTTP / in-process {elapsed / in_process:.2f}x"
    )
    floor = calls * LATENCY_MS / 1000 / CONCURRENCY
    print(
        f"  floor: the {calls:,} calls the bank's answers made this run need (retries and quote cancels "
        f"included) take {floor:.2f} s at {CONCURRENCY} in flight ({floor / ideal:.2f}x ideal); ours is "
        f"{elapsed / floor:.2f}x that (informative: the target is against the ideal)"
    )
    took = np.array([b - a for a, b in spans]) * 1000
    print(
        f"  where it goes: a request took {took.mean():.1f} ms on average as the client saw it (median "
        f"{np.median(took):.1f}, 90th percentile {np.percentile(took, 90):.1f}) against the simulated "
        f"{LATENCY_MS:g} ms: {len(spans):,} requests x {took.mean() - LATENCY_MS:.1f} ms / {CONCURRENCY} = "
        f"{len(spans) * (took.mean() - LATENCY_MS) / 1000 / CONCURRENCY:.2f} s; slots idle (start, a wave's "
        f"quotes to its bookings, the last retries) {idle_s(spans, CONCURRENCY):.2f} s"
    )
    per = 1000 / N
    print(
        f"  client CPU per call {client_cpu * 1000 / calls:.2f} ms ({calls:,} calls; engine included: the "
        f"in-process run's CPU is {engine_cpu * per:.2f} ms a trade), service CPU per call "
        f"{service_cpu * 1000 / calls:.2f} ms; load average at start {load:.1f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
