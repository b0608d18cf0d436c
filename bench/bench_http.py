"""HTTP bank benchmark: 2,000 trades against the bank simulator service with 10 ms latency at
concurrency 32, against the ideal wall time (trades x 2 calls x latency / concurrency).

The service runs as its own process on loopback; the run goes through the engine and the HTTP
bank exactly as ``fxbatch run --bank URL`` does. Ratios, not seconds, are the figure to compare.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx

from fxbatch import Settings, Workbench
from fxbatch.samples import make_trades, write_csv

N = 2_000
LATENCY_MS = 10.0
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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = _free_port()
        proc = _start(port, root / "bank.duckdb")
        try:
            with Workbench.open(settings=Settings(db=root / "bench.duckdb")) as wb:
                path = write_csv(make_trades(N, seed=5), root / "trades.csv")
                batch = wb.load(path, today=date(2026, 11, 30)).batch_id
                start = time.perf_counter()
                summary = wb.run(batch, bank_url=f"http://127.0.0.1:{port}", concurrency=CONCURRENCY)
                elapsed = time.perf_counter() - start
                # Same-run reference: the in-process simulated bank with the same latency, i.e.
                # the engine's own waves, retries and backoff without any HTTP.
                start = time.perf_counter()
                wb.run(batch, concurrency=CONCURRENCY, latency_ms=LATENCY_MS)
                in_process = time.perf_counter() - start
        finally:
            proc.kill()
            proc.wait(10)
    assert summary.counts["PENDING"] == 0, summary.counts
    ideal = N * 2 * LATENCY_MS / 1000 / CONCURRENCY
    print(
        f"http bank: {N:,} trades, {LATENCY_MS:g} ms latency, concurrency {CONCURRENCY}: "
        f"ours {elapsed:.2f} s, ideal {ideal:.2f} s, ratio {elapsed / ideal:.2f}x (target <= 1.5x); "
        f"{summary.status.value} {summary.counts['SUCCESS']:,} SUCCESS / {summary.counts['FAILED']:,} FAILED"
    )
    print(
        f"  reference: in-process simulated bank at the same latency {in_process:.2f} s "
        f"({in_process / ideal:.2f}x ideal); HTTP / in-process {elapsed / in_process:.2f}x"
    )


if __name__ == "__main__":
    main()
