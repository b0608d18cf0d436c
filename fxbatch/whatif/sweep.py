"""Sweeps: a batch under a grid of bank behaviours, scenarios in parallel, results stored.

A scenario is (success rate, seed, other bank settings); its result equals an ordinary run with
that configuration (see ``scenario``). Scenarios go through one executor seam: in-process, a
local process pool, or a Dask cluster (``dask_address``); the code path is the same.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import multiprocessing.context
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from datetime import date
from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from fxbatch.bank.model import check_settings
from fxbatch.engine import records
from fxbatch.errors import CancelledError, ConflictError, NotFoundError, SettingsError
from fxbatch.models import RunConfig
from fxbatch.rates import RateTable
from fxbatch.serving import hosting
from fxbatch.store import Store, insert_arrow
from fxbatch.whatif.models import ScenarioResult, Sweep, SweepBand, SweepInfo
from fxbatch.whatif.scenario import BatchArrays, outcomes

# 10,000 scenarios of a 100k-trade batch take minutes (a sweep can be cancelled: ``stop``).
MAX_SCENARIOS = 10_000
# How often a sweep's scenarios in other processes are checked for a cancel (its latency, not a pace).
_STOP_POLL_S = 0.1


class SweepCancel:
    """A sweep's cancel, asked for from any thread until the sweep starts storing its results
    (then it is too late: ``request`` says so), so a cancel never answers "requested" for a sweep
    that is then stored anyway."""

    def __init__(self) -> None:
        self.event = threading.Event()  # what the executors watch
        self._lock = threading.Lock()
        self._storing = False

    def request(self) -> bool:
        """Ask the sweep to stop; False when it is already being stored."""
        with self._lock:
            if self._storing:
                return False
            self.event.set()
            return True

    def requested(self) -> bool:
        return self.event.is_set()

    def store(self) -> bool:
        """Claim the results for storing; False when a cancel came first."""
        with self._lock:
            if self.event.is_set():
                return False
            self._storing = True
            return True


def check_size(rates: int, seeds: int, variants: dict[str, list[Any]] | None = None) -> None:
    """SettingsError when a sweep of this many success rates x seeds x variants is over
    MAX_SCENARIOS (checked before anything of that size is built)."""
    varied = [len(v) for v in (variants or {}).values()]
    count = rates * seeds * math.prod(varied)
    if count > MAX_SCENARIOS:
        raise SettingsError(
            f"A sweep of {count:,} scenarios ({rates:,} success rates x {seeds:,} seeds"
            f"{' x the variants' if varied else ''}) is more than {MAX_SCENARIOS:,}: take fewer seeds or success rates."
        )


class SweepGrid(BaseModel):
    """The scenarios of a sweep: every combination of the lists, times the seeds."""

    model_config = {"extra": "forbid"}

    success_rates: list[float] = Field(min_length=1, description="Success rates to try (0..1).")
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1, description="Replications per point.")
    base: RunConfig = Field(default_factory=RunConfig, description="Settings shared by every scenario.")
    variants: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Other bank settings to vary, e.g. {'transient_absorb_share': [0.2, 0.8]} or failure_mix.",
    )

    def scenarios(self) -> list[RunConfig]:
        check_base(self.base)
        names = sorted(self.variants)
        check_size(len(self.success_rates), len(self.seeds), self.variants)
        out = []
        for rate in self.success_rates:
            if not 0 <= rate <= 1:
                raise SettingsError(f"success rate {rate} is outside 0..1")
            for combo in itertools.product(*(self.variants[n] for n in names)):
                for seed in self.seeds:
                    data = self.base.model_dump()
                    data["seed"] = seed
                    data["bank"]["success_rate"] = rate
                    for name, value in zip(names, combo, strict=True):
                        if name not in data["bank"]:
                            raise SettingsError(f"{name!r} is not a bank setting; settings: {', '.join(data['bank'])}")
                        data["bank"][name] = value
                    config = RunConfig.model_validate(data)
                    check_settings(config.bank)
                    out.append(config)
        return out


def check_base(config: RunConfig) -> None:
    """A sweep simulates the whole batch against the simulated bank: settings that would make its
    scenarios another run (a retry of a run's failed trades, an HTTP bank) are refused, so that a
    promoted scenario is the run whose figures the sweep showed."""
    if config.retry_of_run is not None:
        raise SettingsError(
            f"retry_of_run={config.retry_of_run}: a sweep covers the whole batch, not the failed trades of a run. "
            "Retry the run itself (python -m fxbatch run BATCH --retry-failed-of RUN), or sweep the batch without it."
        )
    if config.bank_url is not None:
        raise SettingsError(
            f"bank_url={config.bank_url}: a sweep's scenarios are simulated, and a promoted scenario runs as "
            "simulated; run the batch against an HTTP bank as a run of its own."
        )


def scenario_result(batch: BatchArrays, config: RunConfig) -> dict[str, Any]:
    """One scenario's figures (what the sweep stores and prints)."""
    o = outcomes(batch, config)
    succeeded = int(o.success.sum())
    quote = o.quote  # each trade's last booking's
    income = batch.income_zar(quote)
    return {
        "success_rate": config.bank.success_rate,
        "seed": config.seed,
        "trades": len(batch),
        "succeeded": succeeded,
        "failed": len(batch) - succeeded,
        "failure_reasons": o.reasons(),
        "notional_zar_succeeded": float(np.nansum(batch.amount_zar[o.success])),
        "spread_income_zar": round(float(np.nansum(income[o.success])), 2),
        "income_lost_zar": round(float(np.nansum(batch.income_lost_zar(quote, o))), 2),
        "config": config.model_dump(mode="json"),
    }


# -- the executor seam --------------------------------------------------------------------------


class Executor(Protocol):
    def run(
        self, batch: BatchArrays, configs: Sequence[RunConfig], stop: threading.Event | None = None
    ) -> list[dict[str, Any]]:
        """Every scenario's result, in order; once ``stop`` is set, whatever it has (it gives up)."""
        ...


class InProcess:
    def run(
        self, batch: BatchArrays, configs: Sequence[RunConfig], stop: threading.Event | None = None
    ) -> list[dict[str, Any]]:
        out = []
        for config in configs:
            if stop is not None and stop.is_set():
                break
            out.append(scenario_result(batch, config))
        return out


_WORKER_BATCH: BatchArrays | None = None


def _init_worker(batch: BatchArrays) -> None:
    global _WORKER_BATCH
    _WORKER_BATCH = batch


def _run_in_worker(configs: Sequence[RunConfig]) -> list[dict[str, Any]]:
    assert _WORKER_BATCH is not None
    return [scenario_result(_WORKER_BATCH, c) for c in configs]


def _mp_context(serving: bool) -> multiprocessing.context.BaseContext:
    """How workers start. In a server process, never forked from it: a fork would inherit its
    listening socket, its open database file and its signal handlers, and outlive it holding them
    (a restarted server then finds its port taken); ``forkserver`` where there is one (the fork
    server imports this module once, so each worker starts in milliseconds), else ``spawn``.
    Anywhere else the platform's default: a script without an ``if __name__ == "__main__"`` guard
    is not run again by each worker (as ``forkserver`` and ``spawn`` would)."""
    if not serving:
        return multiprocessing.get_context()
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


class LocalProcesses:
    """Scenarios across processes on this machine; the batch is sent to each worker once."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(
        self, batch: BatchArrays, configs: Sequence[RunConfig], stop: threading.Event | None = None
    ) -> list[dict[str, Any]]:
        context = _mp_context(serving=hosting())
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker, initargs=(batch,))
        size = max(1, len(configs) // (4 * self.workers))
        with pool:
            chunks = [pool.submit(_run_in_worker, configs[i : i + size]) for i in range(0, len(configs), size)]
            pending = set(chunks)
            while pending:
                _, pending = wait(pending, timeout=_STOP_POLL_S, return_when=FIRST_COMPLETED)
                if stop is not None and stop.is_set():
                    # Cancelled here and now (not later by the pool's own thread): no chunk not yet
                    # handed to a worker starts; leaving ``with`` waits for the ones handed out.
                    for chunk in chunks:
                        chunk.cancel()
                    return []
            return [result for chunk in chunks for result in chunk.result()]


class DaskCluster:
    """Scenarios on a Dask distributed cluster: the batch is scattered once to every worker."""

    def __init__(self, address: str) -> None:
        self.address = address

    def run(
        self, batch: BatchArrays, configs: Sequence[RunConfig], stop: threading.Event | None = None
    ) -> list[dict[str, Any]]:
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - distributed is in requirements.txt
            raise SettingsError("dask_address needs the 'distributed' package") from exc
        try:
            client = Client(self.address, timeout="10s")
        except OSError as exc:
            raise SettingsError(f"Cannot reach the Dask scheduler at {self.address}: {exc}") from exc
        try:
            shared = client.scatter(batch, broadcast=True)
            futures = client.map(scenario_result, [shared] * len(configs), configs, pure=False)
            if stop is not None:
                while not all(f.done() for f in futures):
                    if stop.wait(_STOP_POLL_S):
                        client.cancel(futures)  # the scenarios under way end; the others never start
                        return []
            return list(client.gather(futures))
        finally:
            client.close()


def make_executor(workers: int | None = None, dask_address: str | None = None, scenarios: int = 1) -> Executor:
    if dask_address:
        return DaskCluster(dask_address)
    if workers is None:
        import os

        workers = min(os.cpu_count() or 1, 4)
    if workers <= 1 or scenarios <= 1:
        return InProcess()
    return LocalProcesses(min(workers, scenarios))


# -- storage and summaries ------------------------------------------------------------------------


def summary(results: Iterable[dict[str, Any]], metric: str = "notional_zar_succeeded") -> list[SweepBand]:
    """Per success rate: the mean and the 5-95% band of ``metric`` across the seeds."""
    df = pd.DataFrame(list(results))
    if df.empty:
        return []
    df["success_share"] = df["succeeded"] / df["trades"]
    out = []
    for rate, group in df.groupby("success_rate", sort=True):
        values = group[metric].to_numpy(dtype=float)
        share = group["success_share"].to_numpy(dtype=float)
        out.append(
            SweepBand(
                success_rate=float(rate),  # type: ignore[arg-type]
                mean=float(values.mean()),
                p05=float(np.percentile(values, 5)),
                p95=float(np.percentile(values, 95)),
                success_share_mean=float(share.mean()),
                success_share_p05=float(np.percentile(share, 5)),
                success_share_p95=float(np.percentile(share, 95)),
                **_money_band(group),
                scenarios=len(group),
            )
        )
    return out


def _money_band(group: pd.DataFrame) -> dict[str, float | None]:
    """The desk's income earned and lost across the seeds (None for sweeps stored without it)."""
    out: dict[str, float | None] = {}
    for name, column in (("income", "spread_income_zar"), ("income_lost", "income_lost_zar")):
        raw = group[column] if column in group else pd.Series([None] * len(group))
        values = pd.to_numeric(raw, errors="coerce").dropna().to_numpy(dtype=float)
        known = len(values) == len(group)
        out[f"{name}_mean"] = float(values.mean()) if known else None
        out[f"{name}_p05"] = float(np.percentile(values, 5)) if known else None
        out[f"{name}_p95"] = float(np.percentile(values, 95)) if known else None
    return out


def reserve_sweep_id(store: Store) -> int:
    """A fresh sweep id, to hand out before the sweep runs (``run_sweep(..., sweep_id=...)``)."""
    return int(store.cursor().execute("SELECT nextval('sweep_id_seq')").fetchall()[0][0])


def run_sweep(
    store: Store,
    rates: RateTable,
    batch_id: int,
    grid: SweepGrid,
    *,
    name: str | None = None,
    executor: Executor | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    trade_date: date | None = None,
    sweep_id: int | None = None,
    cancel: SweepCancel | None = None,
) -> Sweep:
    """Run every scenario of ``grid`` over ``batch_id`` as runs on ``trade_date`` would, store the
    sweep (under ``sweep_id`` when one was reserved with ``reserve_sweep_id``), return it.

    Once ``cancel`` is requested (from any thread, before the results are being stored) the
    scenarios under way end, no other starts, nothing is stored, and CancelledError says how far
    the sweep got."""
    cur = store.cursor()
    if sweep_id is not None and _sweep_exists(cur, sweep_id):
        raise ConflictError(f"Sweep {sweep_id} already exists; reserve a new id for another sweep.")
    batch = BatchArrays.load(cur, batch_id, rates, trade_date)
    configs = grid.scenarios()
    executor = executor or make_executor(scenarios=len(configs))
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    stop = cancel.event if cancel is not None else None
    step = max(1, len(configs) // 20) if on_progress else len(configs)
    for i in range(0, len(configs), step):
        if stop is not None and stop.is_set():
            break
        results.extend(executor.run(batch, configs[i : i + step], stop))
        if on_progress and not (stop is not None and stop.is_set()):
            on_progress(len(results), len(configs))
    if cancel is not None and not cancel.store():
        which = "The sweep" if sweep_id is None else f"Sweep {sweep_id}"
        raise CancelledError(
            f"{which} was cancelled after {len(results):,} of {len(configs):,} scenarios; nothing of it was stored."
        )
    elapsed = time.perf_counter() - started
    if sweep_id is None:
        sweep_id = reserve_sweep_id(store)
    cur.begin()
    try:
        cur.execute(
            "INSERT INTO sweeps (sweep_id, batch_id, name, grid, scenarios, elapsed_s, trade_date) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                sweep_id,
                batch_id,
                name or f"Sweep {sweep_id}",
                grid.model_dump_json(),
                len(configs),
                elapsed,
                trade_date,
            ],
        )
        rows = pd.DataFrame(
            {
                "sweep_id": sweep_id,
                "scenario": np.arange(1, len(results) + 1),
                "success_rate": [r["success_rate"] for r in results],
                "seed": [r["seed"] for r in results],
                "trades": [r["trades"] for r in results],
                "succeeded": [r["succeeded"] for r in results],
                "failed": [r["failed"] for r in results],
                "failure_reasons": [json.dumps(r["failure_reasons"]) for r in results],
                "notional_zar_succeeded": [r["notional_zar_succeeded"] for r in results],
                "config": [json.dumps(r["config"]) for r in results],
                "spread_income_zar": [r["spread_income_zar"] for r in results],
                "income_lost_zar": [r["income_lost_zar"] for r in results],
            }
        )
        insert_arrow(cur, "sweep_scenarios", rows, by_name=True)
        cur.commit()
    except Exception:
        cur.rollback()
        raise
    return get_sweep(store, sweep_id)


def _sweep_exists(cur: duckdb.DuckDBPyConnection, sweep_id: int) -> bool:
    return bool(cur.execute("SELECT count(*) FROM sweeps WHERE sweep_id = ?", [sweep_id]).fetchall()[0][0])


def get_sweep(store: Store, sweep_id: int) -> Sweep:
    cur = store.cursor()
    head = cur.execute(
        "SELECT sweep_id, batch_id, name, grid, scenarios, elapsed_s, created_at, trade_date FROM sweeps "
        "WHERE sweep_id = ?",
        [sweep_id],
    ).fetchall()
    if not head:
        raise NotFoundError(f"There is no sweep {sweep_id}; `python -m fxbatch sweeps` lists them.")
    sid, batch_id, name, grid, scenario_count, elapsed, created, day = head[0]
    rows = cur.execute(
        "SELECT scenario, success_rate, seed, trades, succeeded, failed, failure_reasons, notional_zar_succeeded, "
        "spread_income_zar, income_lost_zar FROM sweep_scenarios WHERE sweep_id = ? ORDER BY scenario",
        [sweep_id],
    ).fetchall()
    scenarios = [
        ScenarioResult(
            scenario=r[0], success_rate=r[1], seed=r[2], trades=r[3], succeeded=r[4], failed=r[5],
            failure_reasons=json.loads(r[6]), notional_zar_succeeded=r[7], spread_income_zar=r[8],
            income_lost_zar=r[9],
        )
        for r in rows
    ]  # fmt: skip
    return Sweep(
        sweep_id=sid,
        batch_id=batch_id,
        name=name,
        grid=json.loads(grid),
        scenario_count=scenario_count,
        elapsed_s=elapsed,
        created_at=created,
        scenarios=scenarios,
        summary=summary(s.model_dump() for s in scenarios),
        trade_date=day,
    )


def list_sweeps(store: Store, batch_id: int | None = None) -> list[SweepInfo]:
    """Stored sweeps, newest first; a batch's only (NotFoundError for an unknown batch)."""
    if batch_id is not None:
        records.batch_fingerprint(store.cursor(), batch_id)
    where, params = ("WHERE batch_id = ?", [batch_id]) if batch_id is not None else ("", [])
    rows = (
        store.cursor()
        .execute(
            f"SELECT sweep_id, batch_id, name, scenarios, elapsed_s, created_at, trade_date FROM sweeps {where} "
            "ORDER BY sweep_id DESC",
            params,
        )
        .fetchall()
    )
    return [
        SweepInfo(
            sweep_id=r[0], batch_id=r[1], name=r[2], scenarios=r[3], elapsed_s=r[4], created_at=r[5], trade_date=r[6]
        )
        for r in rows
    ]


def scenario_config(store: Store, sweep_id: int, scenario: int) -> tuple[int, RunConfig, date | None]:
    """The batch, full run configuration and simulated trading day of one stored scenario (to
    promote it to a run)."""
    rows = (
        store.cursor()
        .execute(
            "SELECT s.batch_id, c.config, s.trade_date FROM sweep_scenarios c JOIN sweeps s USING (sweep_id) "
            "WHERE c.sweep_id = ? AND c.scenario = ?",
            [sweep_id, scenario],
        )
        .fetchall()
    )
    if not rows:
        if not store.cursor().execute("SELECT 1 FROM sweeps WHERE sweep_id = ?", [sweep_id]).fetchall():
            raise NotFoundError(f"There is no sweep {sweep_id}; `python -m fxbatch sweeps` lists them.")
        raise NotFoundError(
            f"Sweep {sweep_id} has no scenario {scenario}; `python -m fxbatch sweep {sweep_id}` lists them."
        )
    return int(rows[0][0]), RunConfig.model_validate_json(rows[0][1]), rows[0][2]
