"""Engine benchmark: a 1M-trade run at zero latency against a naive per-trade UPDATE engine
(measured on 10k trades) and against a minimal bulk numpy simulation writing the same rows
(the floor), all in the same process and run; plus a latency-bound run against its ideal,
with where its latency rounds went (requests made, the rounds they need at least, the wall
time in rounds, and how long no call was in flight at all).

Ratios, not seconds, are the figures to compare (the machine is noisy).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fxbatch import Workbench, money
from fxbatch.bank.model import CODE_OBJ, BankModel, RateWalk, trade_keys
from fxbatch.bank.port import Bank, BookBatch, QuoteBatch
from fxbatch.bank.simulated import SimulatedBank
from fxbatch.engine import records
from fxbatch.models import RunConfig
from fxbatch.samples import make_trades, write_csv

OUT = Path(__file__).resolve().parent / "out"
N = 1_000_000
NAIVE_N = 10_000


def _batch_file(n: int, name: str) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / name
    if not path.exists():
        write_csv(make_trades(n, seed=5), path)
    return path


def ours(wb: Workbench, batch_id: int, **kw: object) -> tuple[float, int]:
    start = time.perf_counter()
    summary = wb.run(batch_id, seed=1, **kw)
    elapsed = time.perf_counter() - start
    assert summary.counts["PENDING"] == 0, summary.counts
    return elapsed, summary.trades


def floor(wb: Workbench, batch_id: int) -> tuple[float, int]:
    """The least any engine must do: read the trades, decide outcomes in bulk, write the rows."""
    cur = wb.store.cursor()
    cur.execute("CREATE OR REPLACE TABLE floor_trades AS SELECT * FROM run_trades LIMIT 0")
    start = time.perf_counter()
    todo = cur.sql(
        "SELECT src_row, trade_id, currency_pair, side, CAST(amount AS DOUBLE) AS amount, spread_pips, value_date, "
        "amount_currency = left(currency_pair, 3) AS amount_is_base FROM trades WHERE batch_id = $b ORDER BY src_row",
        params={"b": batch_id},
    ).to_arrow_table()
    fp = records.batch_fingerprint(cur, batch_id)
    src = todo.column("src_row").to_numpy().astype(np.int64)
    n = len(src)
    keys = trade_keys(fp, src)
    fates = BankModel(1, RunConfig().bank).fates(keys)
    walk = RateWalk(1, wb.rates.mids, 0.1)
    pairs = pc.dictionary_encode(todo.column("currency_pair")).combine_chunks()
    names = pairs.dictionary.to_numpy(zero_copy_only=False)
    idx = np.append(walk.pair_index(np.asarray(names, dtype=object)), -1)[pairs.indices.to_numpy()]
    mid = walk.mid(names, src, idx)
    is_buy = pc.equal(todo.column("side"), "BUY").to_numpy(zero_copy_only=False)
    spread = todo.column("spread_pips").to_numpy().astype(np.float64)
    deal = money.deal_rates(mid, is_buy, spread, money.pip_sizes(names)[pairs.indices.to_numpy()])
    quote_zar = money.quote_zar_factors(names, wb.rates.zar_factors())[pairs.indices.to_numpy()]
    amount = todo.column("amount").to_numpy()
    is_base = todo.column("amount_is_base").to_numpy(zero_copy_only=False)
    income = money.spread_income_zar(amount, is_base, mid, deal, quote_zar)
    now = time.time()
    ts = pa.array(np.full(n, int(now * 1e6)), type=pa.timestamp("us"))
    ok = fates.success
    table = pa.table(
        {
            "run_id": pa.array(np.zeros(n, np.int32)),
            "src_row": pa.array(src.astype(np.int32)),
            "status": pa.array(np.where(ok, "SUCCESS", "FAILED")),
            "failure_code": pa.array(CODE_OBJ[fates.reason.astype(np.int64) + 1], type=pa.string()),
            "failure_message": pa.array(np.full(n, None, dtype=object), type=pa.string()),
            "retryable": pa.array(np.full(n, None, dtype=object), type=pa.bool_()),
            "attempts": pa.array(np.ones(n, np.int32)),
            "quote_id": pa.array(BankModel(1, RunConfig().bank).quote_ids(keys, np.ones(n, np.int64))),
            "quote_rate": pa.array(mid),
            "quote_expiry": ts,
            "deal_transaction_id": pc.binary_join_element_wise(
                "FXB-floor-", pc.cast(todo.column("src_row"), pa.string()), ""
            ),
            "deal_rate": pa.array(np.where(ok, deal, np.nan)),
            "amount_zar": pa.array(amount),
            "executing_at": ts,
            "quoted_at": ts,
            "finished_at": ts,
            "spread_pips": todo.column("spread_pips"),
            "value_date": todo.column("value_date"),
            "spread_income_zar": pa.array(np.where(ok, income, np.nan)),
        }
    )
    cur.register("_floor", table)
    cur.execute("INSERT INTO floor_trades BY NAME SELECT * FROM _floor")
    cur.unregister("_floor")
    return time.perf_counter() - start, n


def naive(wb: Workbench, batch_id: int, limit: int) -> tuple[float, int]:
    """One trade at a time: an UPDATE per status change and a bank call per trade."""
    cur = wb.store.cursor()
    cur.execute("CREATE OR REPLACE TABLE naive_trades AS SELECT * FROM run_trades LIMIT 0")
    rows = cur.execute(
        "SELECT src_row, trade_id, currency_pair, side, CAST(amount AS DOUBLE), spread_pips FROM trades "
        "WHERE batch_id = ? ORDER BY src_row LIMIT ?",
        [batch_id, limit],
    ).fetchall()
    fp = records.batch_fingerprint(cur, batch_id)
    config = RunConfig(seed=1)
    bank = SimulatedBank(wb.store, config.bank, config.seed, wb.rates.mids)
    cur.execute(
        "INSERT INTO naive_trades (run_id, src_row, status, attempts, finished_at) "
        "SELECT -1, src_row, 'PENDING', 0, now() FROM trades WHERE batch_id = ? ORDER BY src_row LIMIT ?",
        [batch_id, limit],
    )
    start = time.perf_counter()
    for src_row, trade_id, pair, side, amount, spread in rows:
        cur.execute("UPDATE naive_trades SET status = 'EXECUTING', executing_at = now() WHERE src_row = ?", [src_row])
        key = trade_keys(fp, np.array([src_row]))
        one = np.array([1])
        q = bank.create_quotes(
            QuoteBatch(key, np.array([src_row]), one, np.array([amount]), np.array([amount]),
                       np.array([side == "BUY"]), np.array([0]), np.array([pair], dtype=object),
                       pa.table({"trade_id": [trade_id]})),
            1,
        )  # fmt: skip
        if not q.ok[0]:
            cur.execute("UPDATE naive_trades SET status = 'FAILED', finished_at = now() WHERE src_row = ?", [src_row])
            continue
        cur.execute(
            "UPDATE naive_trades SET status = 'QUOTED', quote_id = ?, quote_rate = ?, quoted_at = now() WHERE src_row = ?",
            [int(q.quote_id[0]), float(q.quote_rate[0]), src_row],
        )
        deal = money.deal_rates(
            q.quote_rate, np.array([side == "BUY"]), np.array([spread]), np.array([money.pip_size(pair)])
        )
        b = bank.book_deals(
            BookBatch(q.quote_id, pa.array([f"FXB-naive-{src_row}"]), q.quote_rate, deal, key, one,
                      pa.array([trade_id]), -1, batch_id, np.array([src_row])),
            1,
        )  # fmt: skip
        status = "SUCCESS" if b.ok[0] else "FAILED"
        cur.execute("UPDATE naive_trades SET status = ?, finished_at = now() WHERE src_row = ?", [status, src_row])
    return time.perf_counter() - start, len(rows)


class CallLog:
    """Wraps a bank and records each port call: (requests, max_in_flight, start, end)."""

    def __init__(self, bank: Bank) -> None:
        self.bank = bank
        self.calls: list[tuple[int, int, float, float]] = []
        self._lock = threading.Lock()

    def _timed(self, fn: Any, n: int, max_in_flight: int, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.calls.append((n, max_in_flight, start, time.perf_counter()))

    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> Any:
        return self._timed(self.bank.create_quotes, len(batch), max_in_flight, batch, max_in_flight)

    def book_deals(self, batch: BookBatch, max_in_flight: int) -> Any:
        return self._timed(self.bank.book_deals, len(batch), max_in_flight, batch, max_in_flight)

    def cancel_quotes(self, quote_ids: np.ndarray, max_in_flight: int) -> Any:
        return self._timed(self.bank.cancel_quotes, len(quote_ids), max_in_flight, quote_ids, max_in_flight)

    def transaction_status(self, ids: pa.Array, max_in_flight: int, run_id: int | None = None) -> Any:
        return self._timed(self.bank.transaction_status, len(ids), max_in_flight, ids, max_in_flight, run_id)

    def stop_sending(self) -> None:
        self.bank.stop_sending()

    def close(self) -> None:
        self.bank.close()

    def idle_s(self, start: float, end: float) -> float:
        """Time between ``start`` and ``end`` with no port call in progress."""
        busy, reach = 0.0, start
        for _, _, a, b in sorted(self.calls, key=lambda c: c[2]):
            a, b = max(a, reach), min(b, end)
            if b > a:
                busy += b - a
                reach = b
        return (end - start) - busy


def latency_run(wb: Workbench, batch_id: int) -> tuple[float, float, str]:
    trades, latency, concurrency = 2000, 0.020, 32
    logs: list[CallLog] = []
    default = wb.engine.bank_factory

    def logged(config: RunConfig) -> Bank:
        logs.append(CallLog(default(config)))
        return logs[-1]

    wb.engine.bank_factory = logged
    try:
        start = time.perf_counter()
        summary = wb.run(batch_id, seed=2, latency_ms=latency * 1000, concurrency=concurrency)
        end = time.perf_counter()
    finally:
        wb.engine.bank_factory = default
    assert summary.trades == trades
    (log,) = logs
    elapsed = end - start
    requests = sum(c[0] for c in log.calls)
    least = -(-requests // concurrency)
    rounds = elapsed / latency
    detail = (
        f"  rounds: {requests:,} requests in {len(log.calls)} port calls need >= {least} rounds of {concurrency} "
        f"(the ideal counts {trades * 2 // concurrency}); wall time is {rounds:.0f} rounds, slots busy "
        f"{requests / (rounds * concurrency):.0%}; no call in flight for {log.idle_s(start, end) * 1000:.0f} ms"
    )
    return elapsed, trades * 2 * latency / concurrency, detail


def cancel_run(wb: Workbench, batch_id: int) -> tuple[float, float, dict[str, int]]:
    """Cancel a latency-bound run half a second into its first wave's bookings: seconds from the
    cancel to the run stored CANCELLED, the target (one round trip plus a second), final counts."""
    latency = 0.050
    default = wb.engine.bank_factory
    booking = threading.Event()

    def signalling(config: RunConfig) -> Bank:
        log = CallLog(default(config))
        book = log.book_deals

        def book_deals(batch: BookBatch, max_in_flight: int) -> Any:
            booking.set()
            return book(batch, max_in_flight)

        log.book_deals = book_deals  # type: ignore[method-assign]
        return log

    wb.engine.bank_factory = signalling
    try:
        job = wb.start_run(batch_id, seed=3, latency_ms=latency * 1000, concurrency=8)
        booking.wait(60)
        time.sleep(0.5)  # well into the wave's bookings (512 trades, 64 rounds of 50 ms)
        start = time.perf_counter()
        wb.cancel(job.run_id)
        while wb.run_summary(job.run_id).status.value != "CANCELLED":
            time.sleep(0.002)
        took = time.perf_counter() - start
        job.wait(60)
    finally:
        wb.engine.bank_factory = default
    return took, latency + 1.0, wb.run_summary(job.run_id).counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive per-trade engine (it takes minutes)")
    args = parser.parse_args(argv)
    big = _batch_file(N, f"engine_{N}.csv")
    small = _batch_file(2000, "engine_2000.csv")
    with tempfile.TemporaryDirectory() as tmp, Workbench.open(Path(tmp) / "bench.duckdb") as wb:
        batch = wb.load(big).batch_id
        latency_batch = wb.load(small).batch_id
        print(f"== engine benchmark ({N:,} trades, zero latency)")
        t_ours, n = ours(wb, batch)
        t_floor, _ = floor(wb, batch)
        ours_rate, floor_rate = n / t_ours, n / t_floor
        print(f"  ours : {t_ours:6.2f}s  {ours_rate:>10,.0f} trades/s (end to end, persisted)")
        print(
            f"  floor: {t_floor:6.2f}s  {floor_rate:>10,.0f} trades/s (bulk numpy, same rows)  ours/floor time ratio {t_ours / t_floor:.2f}x (target <= 3)"
        )
        if not args.skip_naive:
            t_naive, n_naive = naive(wb, batch, NAIVE_N)
            naive_rate = n_naive / t_naive
            print(
                f"  naive: {t_naive:6.2f}s  {naive_rate:>10,.0f} trades/s on {n_naive:,} trades  ours/naive speed {ours_rate / naive_rate:,.0f}x (target >= 1000)"
            )
        elapsed, ideal, detail = latency_run(wb, latency_batch)
        print(
            f"== latency-bound: 2,000 trades, 20 ms per call, concurrency 32: {elapsed:.2f}s vs ideal {ideal:.2f}s, ratio {elapsed / ideal:.2f}x (target <= 1.25)"
        )
        print(detail)
        took, target, counts = cancel_run(wb, wb.load(small).batch_id)
        print(
            f"== cancel half a second into a wave's bookings (50 ms per call, concurrency 8): CANCELLED {took:.3f}s "
            f"after the cancel vs target {target:.2f}s (one round trip + 1 s), ratio {took / target:.2f}x "
            f"(target <= 1); {counts['SUCCESS']:,} booked, {counts['FAILED']:,} failed, "
            f"{counts['CANCELLED']:,} cancelled of 2,000"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
