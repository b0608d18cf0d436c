"""Nothing booked twice, nothing lost: runs that die (SIGKILL, Ctrl-C, a crash, the bank gone) and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fxbatch import Settings, Workbench
from fxbatch.bank.port import BankUnavailable, BookBatch, QuoteBatch, QuoteReplies
from fxbatch.bank.simulated import SimulatedBank
from fxbatch.errors import ConflictError
from fxbatch.models import FINAL_RUN, RunConfig, RunStatus
from tests.integration.run_helpers import (
    SpyBank,
    assert_every_trade_final,
    assert_ledger_matches_successes,
    install_spy,
    load_generated,
    outcomes,
    query,
)

REPO = Path(__file__).resolve().parents[2]
PROGRESS = re.compile(r"([\d,]+)/([\d,]+) ")


# -- a real process, killed -------------------------------------------------------------------------


def cli_env() -> dict[str, str]:
    """The environment without the developer's own FXBATCH_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FXBATCH_") or k == "FXBATCH_TODAY"}


def start_cli(db: Path, stderr: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m fxbatch --db DB ARGS`` as a child (``env``: its whole environment, else ``cli_env()``)."""
    with stderr.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "fxbatch", "--db", str(db), *args],
            cwd=REPO,
            env=env if env is not None else cli_env(),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def wait_for_progress(proc: subprocess.Popen[str], stderr: Path, at_least: int, timeout: float = 30.0) -> int:
    """Wait until the child's progress bar reports ``at_least`` final trades; returns how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before it could be stopped: {stderr.read_text()}"
        seen = PROGRESS.findall(stderr.read_text())
        done = int(seen[-1][0].replace(",", "")) if seen else 0
        if done >= at_least:
            return done
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no progress within {timeout}s: {stderr.read_text()!r}")


def prepared_db(tmp_path: Path, trades: int) -> tuple[Path, int]:
    """A database file holding one generated batch, closed so that a child process may open it."""
    db = tmp_path / "crash.duckdb"
    with Workbench.open(settings=Settings(db=db)) as wb:
        batch = load_generated(wb, tmp_path, trades)
    return db, batch


def test_a_run_killed_mid_way_is_found_interrupted_and_resumes_booking_nothing_twice(tmp_path: Path) -> None:
    db, batch = prepared_db(tmp_path, 400)
    stderr = tmp_path / "run.err"
    # About 10 s of bank calls (400 x 2 x 50 ms, 4 at a time): the kill lands mid-way on any machine.
    proc = start_cli(db, stderr, "run", str(batch), "--latency-ms", "50", "--concurrency", "4", "--progress")
    try:
        done_at_kill = wait_for_progress(proc, stderr, at_least=100)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert done_at_kill < 400

    with Workbench.open(settings=Settings(db=db)) as wb:  # recover() runs on open
        (run,) = wb.runs(batch)
        assert run.status is RunStatus.INTERRUPTED
        assert run.error and "stopped" in run.error
        # progress counts trades final in memory; the last of them may not have reached the file
        assert sum(run.counts[s] for s in ("SUCCESS", "FAILED")) < 400
        booked_before = {r[0] for r in query(wb, "SELECT deal_transaction_id FROM sim_ledger")}
        spies = install_spy(wb)
        resumed = wb.resume(run.run_id)
        assert resumed.status in FINAL_RUN and resumed.status is not RunStatus.CANCELLED
        assert_every_trade_final(wb, run.run_id)
        assert_ledger_matches_successes(wb, run.run_id)
        (spy,) = spies
        assert not booked_before & {d for _, _, d in spy.bookings}, "a deal the bank holds is never asked for again"
        # same seed, never interrupted: the same outcome for every trade
        fresh = wb.run(batch, seed=run.config.seed).run_id
        assert outcomes(wb, run.run_id) == outcomes(wb, fresh)


def test_ctrl_c_stops_a_cli_run_resumably_and_resume_finishes_it(tmp_path: Path) -> None:
    db, batch = prepared_db(tmp_path, 200)
    stderr = tmp_path / "run.err"
    # Long by construction (200 trades x 2 calls x 50 ms, one at a time: about 20 s), so that the
    # signal arrives while it runs however busy the machine is.
    proc = start_cli(db, stderr, "run", str(batch), "--latency-ms", "50", "--concurrency", "1", "--progress", "--json")
    try:
        wait_for_progress(proc, stderr, at_least=1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, stderr.read_text()
    stopped = json.loads(out)
    assert stopped["status"] == "INTERRUPTED"
    assert stopped["trades"] == 200 and sum(stopped["counts"].values()) == 200
    assert stopped["counts"]["PENDING"] > 0
    run_id = stopped["run_id"]
    assert f"Resume with: python -m fxbatch resume {run_id}" in stderr.read_text()

    resumed = subprocess.run(
        [sys.executable, "-m", "fxbatch", "--db", str(db), "resume", str(run_id), "--json"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["run_id"] == run_id
    assert summary["status"] in ("COMPLETED", "PARTIAL")
    assert summary["counts"]["SUCCESS"] + summary["counts"]["FAILED"] == 200
    with Workbench.open(settings=Settings(db=db)) as wb:
        assert_every_trade_final(wb, run_id)
        assert_ledger_matches_successes(wb, run_id)


# -- in-process crashes at chosen moments -----------------------------------------------------------


class DiesAfterBooking(SpyBank):
    """The bank books the deals of the n-th booking call, then the caller dies before hearing back."""

    def __init__(self, inner: SimulatedBank, wb: Workbench, on_call: int) -> None:
        super().__init__(inner, wb)
        self.on_call = on_call
        self.calls = 0
        self.booked_then_died: list[str] = []

    def book_deals(self, batch: BookBatch, max_in_flight: int) -> Any:
        replies = super().book_deals(batch, max_in_flight)
        self.calls += 1
        if self.calls == self.on_call:
            ids = batch.deal_txn_id.to_pylist()
            self.booked_then_died = [d for d, ok in zip(ids, replies.ok, strict=True) if ok]
            raise RuntimeError("the process died before the answer was recorded")
        return replies


class GoesAway(SpyBank):
    """A bank that stops answering from its n-th quote call on."""

    def __init__(self, inner: SimulatedBank, wb: Workbench, on_call: int) -> None:
        super().__init__(inner, wb)
        self.on_call = on_call
        self.calls = 0

    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> QuoteReplies:
        self.calls += 1
        if self.calls >= self.on_call:
            raise BankUnavailable("connection refused")
        return super().create_quotes(batch, max_in_flight)


def use_bank(wb: Workbench, make: Any) -> list[Any]:
    made: list[Any] = []

    def factory(config: RunConfig) -> Any:
        bank = make(SimulatedBank(wb.store, config.bank, config.seed, wb.rates.mids))
        made.append(bank)
        return bank

    wb.engine.bank_factory = factory
    return made


def test_deals_booked_just_before_a_crash_are_found_on_resume_and_not_booked_again(
    wb: Workbench, tmp_path: Path
) -> None:
    batch = load_generated(wb, tmp_path, 300)
    banks = use_bank(wb, lambda inner: DiesAfterBooking(inner, wb, on_call=3))
    run_id = wb.run(batch, seed=5, success_rate=0.7, chunk_size=40).run_id
    (dying,) = banks
    crashed = wb.run_summary(run_id)
    assert crashed.status is RunStatus.INTERRUPTED
    assert crashed.error and "died" in crashed.error
    lost = set(dying.booked_then_died)
    assert lost, "the crashed call should have booked some deals"
    in_ledger = {r[0] for r in query(wb, "SELECT deal_transaction_id FROM sim_ledger WHERE run_id = ?", run_id)}
    recorded = {r[0] for r in query(wb, "SELECT deal_transaction_id FROM run_trades WHERE run_id = ?", run_id)}
    assert lost <= in_ledger and not lost & recorded  # booked at the bank, unknown to the run

    spies = install_spy(wb)
    resumed = wb.resume(run_id)
    assert resumed.status in (RunStatus.COMPLETED, RunStatus.PARTIAL)
    (spy,) = spies
    assert lost <= set(spy.status_asked), "the bank is asked about unanswered bookings first"
    assert not lost & {d for _, _, d in spy.bookings}, "and they are not booked again"
    final = {deal: status for deal, status in outcomes(wb, run_id, "deal_transaction_id, status").values()}
    assert all(final[d] == "SUCCESS" for d in lost)
    assert_every_trade_final(wb, run_id)
    assert_ledger_matches_successes(wb, run_id)

    wb.engine.bank_factory = wb.engine._default_bank
    fresh = wb.run(batch, seed=5, success_rate=0.7).run_id
    assert outcomes(wb, run_id) == outcomes(wb, fresh)


def test_an_unreachable_bank_leaves_the_run_interrupted_with_a_clear_error_and_resumable(
    wb: Workbench, tmp_path: Path
) -> None:
    batch = load_generated(wb, tmp_path, 200)
    use_bank(wb, lambda inner: GoesAway(inner, wb, on_call=3))
    run_id = wb.run(batch, seed=6, success_rate=0.8, chunk_size=30).run_id
    stopped = wb.run_summary(run_id)
    assert stopped.status is RunStatus.INTERRUPTED
    assert stopped.error is not None
    assert "could not be reached" in stopped.error and "resume" in stopped.error
    assert 0 < stopped.counts["SUCCESS"] < 200
    assert stopped.counts["PENDING"] > 0

    wb.engine.bank_factory = wb.engine._default_bank
    resumed = wb.resume(run_id)
    assert resumed.status in (RunStatus.COMPLETED, RunStatus.PARTIAL)
    assert_every_trade_final(wb, run_id)
    assert_ledger_matches_successes(wb, run_id)
    fresh = wb.run(batch, seed=6, success_rate=0.8).run_id
    assert outcomes(wb, run_id) == outcomes(wb, fresh)


def test_an_interrupted_runs_breakdowns_count_its_unfinished_trades_as_pending(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, 200)
    use_bank(wb, lambda inner: GoesAway(inner, wb, on_call=3))
    run_id = wb.run(batch, seed=6, success_rate=0.8, chunk_size=30).run_id
    assert wb.run_summary(run_id).counts["PENDING"] > 0
    for by, column in (("pair", "currency_pair"), ("client", "client_cif")):
        got = wb.outcomes_by(run_id, by, top=1000)  # every key: nothing folded into "other"
        expected = query(
            wb,
            f"SELECT t.{column}, coalesce(r.status, 'PENDING'), count(*) FROM trades t "
            "LEFT JOIN run_trades r ON r.src_row = t.src_row AND r.run_id = ? WHERE t.batch_id = ? GROUP BY ALL",
            run_id,
            batch,
        )
        assert sorted(zip(got["key"], got["status"], got["trades"], strict=True)) == sorted(expected)


def test_an_interrupted_run_resumes_in_the_same_process(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, 200)
    job = wb.start_run(batch, seed=3, latency_ms=5, concurrency=4)
    time.sleep(0.2)
    job.interrupt()
    assert job.wait(30)
    assert wb.run_summary(job.run_id).status is RunStatus.INTERRUPTED
    resumed = wb.resume(job.run_id)
    assert resumed.status in (RunStatus.COMPLETED, RunStatus.PARTIAL)
    assert_every_trade_final(wb, job.run_id)
    assert_ledger_matches_successes(wb, job.run_id)
    assert resumed.elapsed_s is not None and resumed.elapsed_s > 0


@pytest.mark.parametrize("success_rate", [1.0, 0.0])
def test_only_an_interrupted_run_can_be_resumed(wb: Workbench, tmp_path: Path, success_rate: float) -> None:
    batch = load_generated(wb, tmp_path, 20)
    run = wb.run(batch, success_rate=success_rate)
    with pytest.raises(ConflictError, match=f"Run {run.run_id} is {run.status.value}; only an INTERRUPTED run"):
        wb.resume(run.run_id)
