"""What-if: fast-mode scenarios equal ordinary runs, sweeps are stored and reopened, executors agree."""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fxbatch import Workbench
from fxbatch.errors import CancelledError, ConflictError, NotFoundError, SettingsError
from fxbatch.models import RunConfig
from fxbatch.samples import make_trades, write_csv
from fxbatch.whatif import BatchArrays, ScenarioResult, SweepBand, SweepGrid, SweepInfo, outcomes
from fxbatch.whatif.sweep import DaskCluster, InProcess, LocalProcesses, SweepCancel, scenario_result
from tests.conftest import DATA, TODAY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def batch(wb: Workbench, tmp_path: Path) -> int:
    path = write_csv(make_trades(1500, seed=9), tmp_path / "whatif.csv")
    return wb.load(path, today=TODAY).batch_id


def _per_trade(wb: Workbench, run_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = (
        wb.store.cursor()
        .execute(
            "SELECT status = 'SUCCESS', coalesce(failure_code, ''), attempts FROM run_trades WHERE run_id = ? "
            "ORDER BY src_row",
            [run_id],
        )
        .fetchall()
    )
    return (np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))


@pytest.mark.parametrize(
    "overrides",
    [
        {"seed": 1},
        {"seed": 2, "success_rate": 0.3},
        {"seed": 3, "success_rate": 0.7, "max_attempts": 1},
        {"seed": 4, "success_rate": 0.8, "transient_absorb_share": 0.9, "max_attempts": 2},
    ],
)
def test_a_scenario_equals_an_ordinary_run_trade_by_trade(wb: Workbench, batch: int, overrides: dict) -> None:
    summary = wb.run(batch, **overrides)
    success, codes, attempts = _per_trade(wb, summary.run_id)
    fast = outcomes(BatchArrays.load(wb.store.cursor(), batch, wb.rates), summary.config)
    fast_codes = np.array([c or "" for c in fast.failure_codes()])
    assert (fast.success == success).all()
    assert (fast_codes == codes).all()
    assert (fast.attempts == attempts).all()


def test_a_scenario_with_a_client_registry_equals_the_run(wb: Workbench, batch: int, tmp_path: Path) -> None:
    trades = wb.trades(batch, limit=30, unmask=True)  # the registry needs the full account numbers
    lines = ["cif,account_number,status,limit_zar"]
    for i, r in enumerate(trades.itertuples()):
        status = "FROZEN" if i % 7 == 0 else "ACTIVE"
        account = r.account_number if i % 5 else "9999999999"
        lines.append(f"{r.client_cif},{account},{status},{50_000 if i % 3 == 0 else 10_000_000}")
    registry = tmp_path / "registry.csv"
    registry.write_text("\n".join(lines) + "\n")
    summary = wb.run(batch, seed=5, registry_file=str(registry))
    assert {"CLIENT_NOT_FOUND", "ACCOUNT_BLOCKED"} <= set(summary.failure_reasons)
    success, codes, _ = _per_trade(wb, summary.run_id)
    fast = outcomes(BatchArrays.load(wb.store.cursor(), batch, wb.rates), summary.config)
    assert (fast.success == success).all()
    assert (np.array([c or "" for c in fast.failure_codes()]) == codes).all()


def test_a_sweep_is_stored_with_every_scenario_and_a_band_per_rate(wb: Workbench, batch: int) -> None:
    result = wb.whatif.sweep(batch, [0.5, 0.8, 1.0], seeds=4, seed=10, name="bad day", workers=1)
    assert len(result.scenarios) == result.scenario_count == 12
    assert [s.scenario for s in result.scenarios] == list(range(1, 13))
    assert {s.seed for s in result.scenarios} == {10, 11, 12, 13}
    for s in result.scenarios:
        assert s.succeeded + s.failed == s.trades == 1500
        assert sum(s.failure_reasons.values()) == s.failed
    by_rate = {p.success_rate: p for p in result.summary}
    assert set(by_rate) == {0.5, 0.8, 1.0}
    for rate, point in by_rate.items():
        values = [s.notional_zar_succeeded for s in result.scenarios if s.success_rate == rate]
        assert point.mean == pytest.approx(np.mean(values))
        assert point.p05 <= point.mean <= point.p95
        assert abs(point.success_share_mean - rate) < 0.06  # 1500 trades: binomial noise
        assert point.scenarios == 4
    assert by_rate[1.0].success_share_mean == 1.0
    reopened = wb.whatif.get(result.sweep_id)
    assert reopened == result
    assert reopened.name == "bad day" and reopened.batch_id == batch and reopened.created_at is not None
    [listed] = wb.whatif.sweeps(batch)
    assert listed == SweepInfo(sweep_id=result.sweep_id, batch_id=batch, name="bad day", scenarios=12,
                               elapsed_s=result.elapsed_s, created_at=result.created_at,
                               trade_date=result.trade_date)  # fmt: skip
    with pytest.raises(NotFoundError, match=f"There is no batch {batch + 1}"):  # not an empty batch
        wb.whatif.sweeps(batch + 1)


def test_a_sweeps_tables_have_a_column_per_field_and_a_row_per_scenario_or_rate(wb: Workbench, batch: int) -> None:
    sweep = wb.whatif.sweep(batch, [0.5, 1.0], seeds=2, workers=1)
    scenarios = wb.whatif.scenarios_df(sweep.sweep_id)
    assert list(scenarios.columns) == list(ScenarioResult.model_fields) and len(scenarios) == 4
    assert scenarios["succeeded"].tolist() == [s.succeeded for s in sweep.scenarios]
    summary = wb.whatif.summary_df(sweep.sweep_id)
    assert list(summary.columns) == list(SweepBand.model_fields)
    assert summary["success_rate"].tolist() == [0.5, 1.0]


def test_a_sweep_is_stored_under_the_id_reserved_for_it(wb: Workbench, batch: int) -> None:
    reserved = wb.whatif.reserve_sweep_id()
    later = wb.whatif.reserve_sweep_id()
    assert later > reserved
    with pytest.raises(NotFoundError):
        wb.whatif.get(reserved)  # nothing stored until the sweep has run
    sweep = wb.whatif.sweep(batch, [0.9], workers=1, sweep_id=reserved)
    assert sweep.sweep_id == reserved and sweep.name == f"Sweep {reserved}"
    assert wb.whatif.get(reserved) == sweep
    fresh = wb.whatif.sweep(batch, [0.9], workers=1)
    assert fresh.sweep_id not in (reserved, later)
    with pytest.raises(ConflictError, match=f"Sweep {reserved} already exists"):
        wb.whatif.sweep(batch, [0.8], workers=1, sweep_id=reserved)
    assert [s.sweep_id for s in wb.whatif.sweeps(batch)] == [fresh.sweep_id, reserved]


def _open_files() -> list[str]:
    """What this process's file descriptors point at (run in a sweep worker)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
def test_sweep_workers_hold_none_of_the_callers_sockets_and_files(tmp_path: Path) -> None:
    """Forked from a server, a worker inherited its listening socket and database file, kept both
    after the server stopped, and the restarted server found its port taken."""
    from concurrent.futures import ProcessPoolExecutor

    from fxbatch.whatif.sweep import _mp_context

    with socket.socket() as listening, (tmp_path / "desk.duckdb").open("wb") as held:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        mine = {os.readlink(f"/proc/self/fd/{listening.fileno()}"), os.readlink(f"/proc/self/fd/{held.fileno()}")}
        with ProcessPoolExecutor(1, mp_context=_mp_context(serving=True)) as pool:
            theirs = set(pool.submit(_open_files).result())
        assert not mine & theirs, (mine, theirs)


def test_a_script_without_a_main_guard_sweeps_in_worker_processes(tmp_path: Path) -> None:
    """Outside a server the workers do not run the caller's script again (forkserver and spawn
    would: each opened the database and loaded the file once more, and the pool broke)."""
    script = tmp_path / "sweep.py"
    script.write_text(
        "from fxbatch import Workbench\n"
        f"wb = Workbench.open({str(tmp_path / 'desk.duckdb')!r})\n"
        f"batch = wb.load({str(DATA / 'sample_trades.csv')!r}).batch_id\n"
        "sweep = wb.whatif.sweep(batch, [0.5, 0.9], seeds=2, workers=2)\n"
        "print('scenarios', len(sweep.scenarios), 'batches', len(wb.batches()))\n"
        "wb.close()\n"
    )
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "scenarios 4 batches 1"


def test_a_sweep_of_more_than_10_000_scenarios_is_refused_saying_how_many() -> None:
    with pytest.raises(SettingsError) as err:
        SweepGrid(success_rates=[0.5, 0.6], seeds=list(range(5001))).scenarios()
    assert err.value.message == (
        "A sweep of 10,002 scenarios (2 success rates x 5,001 seeds) is more than 10,000: take fewer seeds or success "
        "rates."
    )


def test_process_pool_and_in_process_give_the_same_scenarios(wb: Workbench, batch: int) -> None:
    arrays = BatchArrays.load(wb.store.cursor(), batch, wb.rates)
    configs = SweepGrid(success_rates=[0.6, 0.9], seeds=[1, 2, 3]).scenarios()
    assert LocalProcesses(2).run(arrays, configs) == InProcess().run(arrays, configs)


def test_a_sweep_runs_on_a_local_dask_cluster_with_the_same_results(wb: Workbench, batch: int) -> None:
    distributed = pytest.importorskip("distributed")
    arrays = BatchArrays.load(wb.store.cursor(), batch, wb.rates)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", host="127.0.0.1"
    ) as cluster:
        result = wb.whatif.sweep(batch, [0.7, 0.95], seeds=2, dask_address=cluster.scheduler_address)
        stopped = threading.Event()
        stopped.set()  # a cancel: the cluster's scenarios are cancelled, none is waited for
        many = SweepGrid(success_rates=[0.5], seeds=list(range(200))).scenarios()
        assert DaskCluster(cluster.scheduler_address).run(arrays, many, stopped) == []
    configs = SweepGrid(success_rates=[0.7, 0.95], seeds=[42, 43]).scenarios()
    expected = [scenario_result(arrays, c) for c in configs]
    assert [s.succeeded for s in result.scenarios] == [e["succeeded"] for e in expected]
    assert [s.notional_zar_succeeded for s in result.scenarios] == pytest.approx(
        [e["notional_zar_succeeded"] for e in expected]
    )


def test_an_unreachable_dask_scheduler_is_a_clear_error(wb: Workbench, batch: int) -> None:
    with pytest.raises(SettingsError, match="Dask scheduler"):
        wb.whatif.sweep(batch, [0.9], dask_address="tcp://127.0.0.1:9")


def test_workers_are_one_process_or_more_here_and_run_here_whatever_scheduler_the_settings_name(
    wb: Workbench, batch: int
) -> None:
    for workers in (0, -2):
        with pytest.raises(SettingsError, match=f"workers: {workers} is not a number of processes"):
            wb.whatif.sweep(batch, [0.9], workers=workers)
    with pytest.raises(SettingsError, match=r"workers and dask_address: .* not both"):
        wb.whatif.sweep(batch, [0.9], workers=2, dask_address="tcp://127.0.0.1:9")
    wb.settings = wb.settings.model_copy(update={"dask_address": "tcp://127.0.0.1:9"})  # nobody there
    assert wb.whatif.sweep(batch, [0.9], workers=1).scenario_count == 1
    with pytest.raises(SettingsError, match="Dask scheduler"):
        wb.whatif.sweep(batch, [0.9])
    assert len(wb.whatif.sweeps(batch)) == 1


def test_a_promoted_scenario_is_a_full_run_with_the_same_outcome(wb: Workbench, batch: int) -> None:
    sweep = wb.whatif.sweep(batch, [0.6], seeds=2, seed=3, workers=1)
    scenario = sweep.scenarios[1]
    run = wb.whatif.promote(sweep.sweep_id, scenario.scenario)
    assert run.config.seed == 4 and run.config.bank.success_rate == 0.6
    assert run.counts["SUCCESS"] == scenario.succeeded
    assert run.failure_reasons == scenario.failure_reasons
    # The money too, to the cent: income earned and what the failed trades would have earned
    # (on the quote a failed booking kept, at mid where none was had).
    money = wb.run_money(run.run_id)
    assert (money.income_zar, money.income_lost_zar) == (scenario.spread_income_zar, scenario.income_lost_zar)
    assert set(run.failure_reasons) & {"QUOTE_EXPIRED", "PRICE_MOVED", "INSUFFICIENT_FUNDS"}, "failed at booking"
    assert set(run.failure_reasons) & {"CLIENT_NOT_FOUND", "RATE_UNAVAILABLE", "MARKET_CLOSED"}, "failed at quote"


def test_a_scenario_promoted_without_waiting_returns_its_job_at_once(wb: Workbench, batch: int) -> None:
    sweep = wb.whatif.sweep(batch, [0.6], seeds=[3], workers=1)
    [scenario] = sweep.scenarios
    job = wb.whatif.start_promote(sweep.sweep_id, scenario.scenario)
    assert job.batch_id == batch
    assert job.wait(60)
    run = wb.run_summary(job.run_id)
    assert run.config.seed == 3 and run.counts["SUCCESS"] == scenario.succeeded
    with pytest.raises(NotFoundError, match="no scenario 9"):
        wb.whatif.start_promote(sweep.sweep_id, 9)


def test_comparing_two_runs_lists_exactly_the_trades_whose_outcome_differs(wb: Workbench, batch: int) -> None:
    a = wb.run(batch, seed=1, success_rate=0.7)
    b = wb.run(batch, seed=2, success_rate=0.7)
    table = wb.whatif.compare([a.run_id, b.run_id])
    assert table["succeeded"].tolist() == [a.counts["SUCCESS"], b.counts["SUCCESS"]]
    diff = wb.whatif.differing_trades(a.run_id, b.run_id, limit=10_000)
    sa, ca, _ = _per_trade(wb, a.run_id)
    sb, cb, _ = _per_trade(wb, b.run_id)
    assert len(diff) == int(((sa != sb) | (ca != cb)).sum()) > 0
    assert set(diff["differing"]) == {len(diff)}
    first = wb.whatif.differing_trades(a.run_id, b.run_id, limit=3)
    assert first["row"].tolist() == diff["row"].tolist()[:3] and set(first["differing"]) == {len(diff)}
    same = wb.whatif.differing_trades(a.run_id, wb.run(batch, seed=1, success_rate=0.7).run_id)
    assert same.empty


def test_a_retry_run_is_compared_on_the_trades_it_retried_and_unknown_income_is_not_zero(
    wb: Workbench, batch: int
) -> None:
    first = wb.run(batch, seed=3, success_rate=0.5)
    retry = wb.run(batch, seed=4, success_rate=0.9, retry_of_run=first.run_id)
    failed_first = {r for (r,) in wb.store.cursor().execute(
        "SELECT src_row FROM run_trades WHERE run_id = ? AND status = 'FAILED'", [first.run_id]).fetchall()}  # fmt: skip
    diff = wb.whatif.differing_trades(first.run_id, retry.run_id, limit=10_000)
    # Only trades the retry covered, each FAILED first; a trade the retry never ran is not a difference.
    assert len(diff) and set(diff["row"]) <= failed_first and "PENDING" not in set(diff["status_b"])
    won = {r for (r,) in wb.store.cursor().execute(
        "SELECT src_row FROM run_trades WHERE run_id = ? AND status = 'SUCCESS'", [retry.run_id]).fetchall()}  # fmt: skip
    assert won and won <= set(diff["row"])
    # A run made before spread income was recorded: its income is unknown, not R 0.
    wb.store.cursor().execute("UPDATE runs SET spread_income_zar = NULL WHERE run_id = ?", [first.run_id])
    table = wb.whatif.compare([first.run_id, retry.run_id]).set_index("run_id")
    assert pd.isna(table.loc[first.run_id, "spread_income_zar"])
    assert table.loc[retry.run_id, "spread_income_zar"] > 0
    assert (table.filter(like="reason:").dtypes == "int64").all()


@pytest.mark.parametrize(("setting", "named"), [("retry_of_run", "retry_of_run=1"), ("bank_url", "bank_url=")])
def test_a_sweep_refuses_settings_that_would_make_its_promoted_runs_other_runs(
    wb: Workbench, batch: int, setting: str, named: str
) -> None:
    first = wb.run(batch, seed=3, success_rate=0.5)
    value = first.run_id if setting == "retry_of_run" else "http://127.0.0.1:9"
    with pytest.raises(SettingsError, match=named):
        wb.whatif.sweep(batch, [0.9], seeds=[4], base=RunConfig(**{setting: value}), workers=1)
    assert not wb.whatif.sweeps(batch), "nothing stored"


def test_a_sweep_keeps_its_trading_day_and_is_promoted_only_on_it(wb: Workbench, batch: int) -> None:
    sweep = wb.whatif.sweep(batch, [0.9], seeds=[4], workers=1)
    today = wb.settings.trading_date()
    assert sweep.trade_date == today == wb.whatif.get(sweep.sweep_id).trade_date
    assert [s.trade_date for s in wb.whatif.sweeps(batch)] == [today]
    # The next day (value dates, and which trades can settle, move): its figures are not that day's run.
    wb.store.cursor().execute("UPDATE sweeps SET trade_date = trade_date - 1 WHERE sweep_id = ?", [sweep.sweep_id])
    with pytest.raises(ConflictError, match="Sweep the batch again today"):
        wb.whatif.promote(sweep.sweep_id, 1)
    assert wb.runs() == []


def test_runs_of_different_batches_cannot_be_diffed(wb: Workbench, batch: int) -> None:
    other = wb.load(DATA / "sample_trades.csv", today=TODAY).batch_id
    a, b = wb.run(batch, seed=1), wb.run(other, seed=1)
    with pytest.raises(ConflictError):
        wb.whatif.differing_trades(a.run_id, b.run_id)


def test_whatif_cli_prints_the_sweep_contract(settings, batch: int, wb: Workbench) -> None:
    db = str(wb.settings.db)
    wb.close()
    out = subprocess.run(
        [sys.executable, "-m", "fxbatch", "--db", db, "whatif", str(batch), "--success-rates", "0.5:0.7:0.1",
         "--seeds", "2", "--seed", "7", "--workers", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) >= {"sweep_id", "scenarios", "summary"}
    assert len(doc["scenarios"]) == 6
    assert set(doc["scenarios"][0]) >= {
        "success_rate", "seed", "trades", "succeeded", "failed", "failure_reasons", "notional_zar_succeeded",
    }  # fmt: skip
    assert [p["success_rate"] for p in doc["summary"]] == [0.5, 0.6, 0.7]
    assert set(doc["summary"][0]) >= {"success_rate", "mean", "p05", "p95"}
    # Read back as text: the summary and every scenario with the number promote takes.
    shown = subprocess.run(
        [sys.executable, "-m", "fxbatch", "--db", db, "sweep", str(doc["sweep_id"])],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"Sweep {doc['sweep_id']} over batch {batch}: 6 scenarios"
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["scenario", "success_rate", "seed"])
    assert [int(line.split()[0]) for line in lines[header + 1 : header + 7]] == [1, 2, 3, 4, 5, 6]
    assert lines[-1] == f"Promote one to a full run: `python -m fxbatch promote {doc['sweep_id']} SCENARIO`."


def test_a_bad_variant_name_names_the_setting(wb: Workbench, batch: int) -> None:
    with pytest.raises(SettingsError, match="no_such_knob"):
        wb.whatif.sweep(batch, [0.9], variants={"no_such_knob": [1, 2]}, workers=1)


def test_variants_multiply_the_grid(wb: Workbench, batch: int) -> None:
    grid = SweepGrid(success_rates=[0.8, 0.9], seeds=[1, 2], variants={"transient_absorb_share": [0.1, 0.9]})
    configs = grid.scenarios()
    assert len(configs) == 8
    assert {c.bank.transient_absorb_share for c in configs} == {0.1, 0.9}
    assert isinstance(configs[0], RunConfig)


def test_weighting_a_client_check_without_a_registry_is_refused_by_name(wb: Workbench, batch: int) -> None:
    mix = {"ACCOUNT_BLOCKED": 1.0, "INSUFFICIENT_FUNDS": 1.0}
    with pytest.raises(SettingsError, match=r"ACCOUNT_BLOCKED.*registry"):
        wb.run(batch, failure_mix=mix)
    with pytest.raises(SettingsError, match="ACCOUNT_BLOCKED"):
        wb.whatif.sweep(batch, [0.9], variants={"failure_mix": [mix]}, workers=1)
    assert wb.runs(batch) == []


def test_a_failure_mix_weighing_nothing_is_refused_not_replaced(wb: Workbench, batch: int) -> None:
    for nothing in ({}, {"PRICE_MOVED": 0.0, "INSUFFICIENT_FUNDS": 0.0}):
        with pytest.raises(SettingsError, match="failure_mix gives no reason a weight above 0"):
            wb.run(batch, success_rate=0.5, failure_mix=nothing)
        with pytest.raises(SettingsError, match="failure_mix gives no reason a weight above 0"):
            wb.whatif.sweep(batch, [0.5], variants={"failure_mix": [nothing]}, workers=1)
    assert wb.runs(batch) == []
    assert wb.run(batch, success_rate=1.0, failure_mix={}).counts["SUCCESS"] > 0  # nothing fails: no reason needed


def _held_sweep(
    wb: Workbench, batch: int, sweep_id: int
) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    """A sweep of four scenarios on its own thread that holds after its first scenario is done,
    until ``go`` is set; what it raised goes into the list."""
    reported, go = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def progress(done: int, total: int) -> None:
        if not reported.is_set():
            reported.set()
            assert go.wait(60)

    def sweep() -> None:
        try:
            wb.whatif.sweep(batch, [0.5, 0.9], seeds=2, workers=1, sweep_id=sweep_id, on_progress=progress)
        except BaseException as exc:  # the test reads it
            raised.append(exc)

    thread = threading.Thread(target=sweep)
    thread.start()
    assert reported.wait(60)
    return thread, go, raised


def test_a_sweep_cancelled_from_another_thread_stops_and_stores_nothing(wb: Workbench, batch: int) -> None:
    sweep_id = wb.whatif.reserve_sweep_id()
    thread, go, raised = _held_sweep(wb, batch, sweep_id)
    wb.whatif.cancel(sweep_id)
    go.set()
    thread.join(60)
    assert [type(e) for e in raised] == [CancelledError]
    assert str(raised[0]) == f"Sweep {sweep_id} was cancelled after 1 of 4 scenarios; nothing of it was stored."
    assert wb.whatif.sweeps(batch) == []
    with pytest.raises(NotFoundError):
        wb.whatif.cancel(sweep_id)  # neither running nor stored
    stored = wb.whatif.sweep(batch, [0.9], workers=1)
    with pytest.raises(ConflictError, match=f"Sweep {stored.sweep_id} has finished and is stored"):
        wb.whatif.cancel(stored.sweep_id)


def test_a_sweep_cancelled_before_it_starts_runs_no_scenario(wb: Workbench, batch: int) -> None:
    sweep_id = wb.whatif.reserve_sweep_id()
    wb.whatif.cancel(sweep_id)  # reserved (the API hands the id out first): it can be cancelled already
    with pytest.raises(CancelledError, match="after 0 of 2 scenarios"):
        wb.whatif.sweep(batch, [0.5, 0.9], workers=1, sweep_id=sweep_id)


def test_only_the_newest_reservations_never_swept_keep_a_cancel(
    wb: Workbench, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A notebook reserving ids it never sweeps must not grow the process for ever.
    monkeypatch.setattr("fxbatch.workbench.KEPT_RESERVATIONS", 3)
    running = wb.whatif.reserve_sweep_id()
    thread, go, raised = _held_sweep(wb, batch, running)
    ids = [wb.whatif.reserve_sweep_id() for _ in range(5)]
    for sweep_id in ids[:2]:
        with pytest.raises(NotFoundError):
            wb.whatif.cancel(sweep_id)  # let go: neither reserved any longer, running nor stored
    for sweep_id in ids[2:]:
        wb.whatif.cancel(sweep_id)  # still reserved: cancelled before it starts
    wb.whatif.cancel(running)  # a sweep under way is never let go
    go.set()
    thread.join(60)
    assert [type(e) for e in raised] == [CancelledError]
    assert wb.whatif.sweep(batch, [0.9], workers=1, sweep_id=ids[0]).sweep_id == ids[0]  # it still runs
    with pytest.raises(CancelledError):
        wb.whatif.sweep(batch, [0.9], workers=1, sweep_id=ids[2])


class _StopAtFirstLook(threading.Event):
    """A cancel that is there the first time the executor looks (after its first wait)."""

    def is_set(self) -> bool:
        return True


# Set when the sweep stops handing chunks out; the forked workers inherit it.
_STOPPED = multiprocessing.get_context("fork").Event() if "fork" in multiprocessing.get_all_start_methods() else None


def _counted(ran: str, batch: BatchArrays, config: RunConfig) -> dict[str, Any]:
    with open(ran, "a") as out:  # one line per scenario run, from whichever worker ran it
        out.write(f"{config.seed}\n")
    assert _STOPPED is not None
    _STOPPED.wait(60)  # no chunk ends before the sweep has stopped handing chunks out
    return {"seed": config.seed}


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="the counting stand-in reaches forked workers")
def test_worker_processes_stop_taking_scenarios_once_the_sweep_is_cancelled(
    wb: Workbench, batch: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import Future, ProcessPoolExecutor

    from fxbatch.whatif import sweep

    assert _STOPPED is not None
    _STOPPED.clear()
    ran = tmp_path / "ran.txt"
    submitted: list[Future[Any]] = []

    class Recorded(ProcessPoolExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
            submitted.append(super().submit(*args, **kwargs))
            return submitted[-1]

        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            _STOPPED.set()  # the workers may finish their chunks now
            super().shutdown(wait, cancel_futures=cancel_futures)

    arrays = BatchArrays.load(wb.store.cursor(), batch, wb.rates)
    configs = SweepGrid(success_rates=[0.5], seeds=list(range(400))).scenarios()
    monkeypatch.setattr(sweep, "scenario_result", functools.partial(_counted, str(ran)))
    monkeypatch.setattr(sweep, "ProcessPoolExecutor", Recorded)
    assert LocalProcesses(2).run(arrays, configs, _StopAtFirstLook()) == []
    # Eight chunks of 50; the ones already handed to a worker or its queue (at most 2 + 3) ran, no other did.
    handed_out = [f for f in submitted if not f.cancelled()]
    assert len(submitted) == 8 and 1 <= len(handed_out) <= 5
    assert len(ran.read_text().split()) == 50 * len(handed_out)
    assert InProcess().run(arrays, configs, _StopAtFirstLook()) == []


def test_a_cancel_too_late_for_a_sweep_being_stored_says_so(wb: Workbench, batch: int) -> None:
    sweep_id = wb.whatif.reserve_sweep_id()
    cancel = wb.whatif._stop(sweep_id)
    assert cancel is not None and cancel.store()  # the sweep has claimed its results for storing
    with pytest.raises(ConflictError, match=f"Sweep {sweep_id} has finished and is being stored"):
        wb.whatif.cancel(sweep_id)
    assert not cancel.requested()
    late = SweepCancel()
    assert late.request() and not late.store()  # a cancel first: nothing is stored


def test_a_batch_loaded_before_the_spread_cap_fails_its_unbookable_trades_in_what_if_as_in_the_run(
    wb: Workbench, batch: int
) -> None:
    """A batch loaded before SPREAD_TOO_WIDE may hold JPY/ZAR spreads of about the rate itself
    (1,151 pips at 0.1151): a client selling at such a spread would get a rate of zero or less, and
    both banks refuse the booking unsent (BANK_VALIDATION). Spreads a few pips either side of the
    rate make the outcome hang on each attempt's own quote."""
    cur = wb.store.cursor()
    cur.execute(
        "UPDATE trades SET spread_pips = 1151 + (src_row % 7) - 3 WHERE batch_id = ? AND currency_pair = 'JPY/ZAR'",
        [batch],
    )
    sweep = wb.whatif.sweep(batch, [0.6], seed=3, base=RunConfig(max_attempts=3), workers=1)
    (scenario,) = sweep.scenarios
    run = wb.whatif.promote(sweep.sweep_id, scenario.scenario)
    success, codes, attempts = _per_trade(wb, run.run_id)
    fast = outcomes(BatchArrays.load(cur, batch, wb.rates), run.config)
    assert (fast.success == success).all()
    assert (np.array([c or "" for c in fast.failure_codes()]) == codes).all()
    assert (fast.attempts == attempts).all()
    refused = int((codes == "BANK_VALIDATION").sum())
    selling = "SELECT count(*) FROM trades WHERE batch_id = ? AND currency_pair = 'JPY/ZAR' AND side = 'SELL'"
    assert 0 < refused < int(cur.execute(selling, [batch]).fetchall()[0][0]), "some of the selling trades, not all"
    assert scenario.failure_reasons == run.failure_reasons
    money = wb.run_money(run.run_id)
    assert (money.income_zar, money.income_lost_zar) == (scenario.spread_income_zar, scenario.income_lost_zar)


def test_a_sweep_started_in_the_background_reports_its_progress_and_its_end(wb: Workbench, batch: int) -> None:
    with pytest.raises(NotFoundError):
        wb.whatif.start_sweep(99, [0.9])  # checked at once, not a failed sweep later
    with pytest.raises(SettingsError, match="10,001 scenarios"):
        wb.whatif.start_sweep(batch, [0.5], seeds=10_001)
    job = wb.whatif.start_sweep(batch, [0.5, 0.9], seeds=2, workers=1, name="background")
    assert job.total == 4 and wb.whatif.sweep_job(job.sweep_id) is job
    assert job.wait(60) and not job.running
    assert job.error is None and job.done == 4
    stored = wb.whatif.get(job.sweep_id)
    assert stored.name == "background" and stored.scenario_count == 4


def test_closing_the_workbench_cancels_its_background_sweeps(tmp_path: Path) -> None:
    path = write_csv(make_trades(300, seed=4), tmp_path / "few.csv")
    wb = Workbench.open(tmp_path / "closing.duckdb")
    batch = wb.load(path, today=TODAY).batch_id
    real = wb.whatif.sweep
    started = threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        def progress(done: int, total: int) -> None:
            started.set()
            stop = wb.whatif._stop(kwargs["sweep_id"])
            assert stop is not None and stop.event.wait(60)  # until the close cancels it

        return real(*args, **{**kwargs, "on_progress": progress})

    wb.whatif.sweep = held  # type: ignore[method-assign]
    job = wb.whatif.start_sweep(batch, [0.5, 0.9], seeds=2, workers=1)
    assert started.wait(60)
    wb.close()
    assert not job.running and isinstance(job.error, CancelledError)


def test_an_ended_background_sweep_keeps_no_traceback_and_old_ones_are_forgotten(
    wb: Workbench, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fxbatch import workbench as module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise SettingsError("Cannot reach the Dask scheduler")

    monkeypatch.setattr(wb.whatif, "sweep", broken)
    monkeypatch.setattr(module, "KEPT_SWEEP_JOBS", 2)
    jobs = [wb.whatif.start_sweep(batch, [0.9]) for _ in range(3)]
    for job in jobs:
        assert job.wait(60)
    # Its frames would hold the batch's arrays and the results for the life of the server.
    assert isinstance(jobs[0].error, SettingsError) and jobs[0].error.__traceback__ is None
    newest = wb.whatif.start_sweep(batch, [0.9])
    assert newest.wait(60)
    kept = [j.sweep_id for j in [*jobs, newest] if wb.whatif.sweep_job(j.sweep_id) is not None]
    assert kept == [jobs[2].sweep_id, newest.sweep_id]


def test_a_sweep_whose_thread_cannot_start_leaves_no_job_behind(
    wb: Workbench, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(RuntimeError):
        wb.whatif.start_sweep(batch, [0.9])
    monkeypatch.undo()
    assert [k for k in wb.whatif._jobs if k[0] == wb.engine.db_key and wb.whatif._jobs[k].running] == []


def test_the_cli_compare_says_how_many_trades_differ_in_all(
    wb: Workbench, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fxbatch.cli import main
    from fxbatch.samples import make_trades, write_csv

    batch = wb.load(write_csv(make_trades(3_000, seed=2), tmp_path / "big.csv")).batch_id
    a, b = wb.run(batch, seed=1, success_rate=0.5), wb.run(batch, seed=2, success_rate=0.5)
    differing = len(wb.whatif.differing_trades(a.run_id, b.run_id, limit=10_000))
    assert differing > 1_000
    db = str(wb.settings.db)
    wb.close()
    assert main(["--db", db, "compare", str(a.run_id), str(b.run_id)]) == 0
    assert f"{differing:,} trade(s) differ; the first 20:" in capsys.readouterr().out
    assert main(["--db", db, "--json", "compare", str(a.run_id), str(b.run_id)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["differing"] == differing and len(doc["differing_trades"]) == 1_000
    assert "differing" not in doc["differing_trades"][0]
