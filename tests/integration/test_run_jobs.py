"""Runs in the background: one run per batch at a time, cancel, progress from another thread, latency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fxbatch import Workbench
from fxbatch.errors import ConflictError
from fxbatch.models import RunProgress, RunStatus
from tests.integration.run_helpers import (
    FINAL,
    assert_every_trade_final,
    assert_ledger_matches_successes,
    finish,
    install_spy,
    load_generated,
    load_sample,
    query,
    wait_until,
)
from tests.integration.test_crash_resume import GoesAway, use_bank


def test_starting_a_batch_that_is_running_is_refused_while_another_batch_may_run(wb: Workbench, tmp_path: Path) -> None:
    first_batch = load_generated(wb, tmp_path, 96, seed=1)
    second_batch = load_generated(wb, tmp_path, 96, seed=2)
    slow = {"latency_ms": 20, "concurrency": 8}
    first = wb.start_run(first_batch, **slow)
    with pytest.raises(ConflictError) as err:
        wb.start_run(first_batch, **slow)
    assert err.value.message == (
        f"Batch {first_batch} is already running (run {first.run_id}); wait for it to finish or cancel it."
    )
    second = wb.start_run(second_batch, **slow)
    assert first.running and second.running
    finish(first)
    finish(second)
    for job in (first, second):
        summary = wb.run_summary(job.run_id)
        assert summary.error is None and summary.status in (RunStatus.COMPLETED, RunStatus.PARTIAL)
        assert_every_trade_final(wb, job.run_id)
        assert_ledger_matches_successes(wb, job.run_id)
    # once the first run has ended its batch may run again
    finish(wb.start_run(first_batch, success_rate=1.0))
    assert len(wb.runs(first_batch)) == 2


def test_starting_a_run_returns_at_once(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, 64)
    started = time.monotonic()
    job = wb.start_run(batch, latency_ms=50, concurrency=4)
    assert time.monotonic() - started < 0.5  # the run itself needs at least 64 * 2 * 50 ms / 4 = 1.6 s
    assert job.running and wb.run_summary(job.run_id).status is RunStatus.RUNNING
    wb.cancel(job.run_id)
    finish(job)


def test_a_booking_held_until_after_the_cancel_is_never_sent_and_its_quotes_are_released(
    wb: Workbench, tmp_path: Path
) -> None:
    batch = load_generated(wb, tmp_path, 400)
    # The first wave (4 x 64 trades) is held at its booking until the cancel has been asked for:
    # its bookings are then never sent, and the 144 trades not taken on yet end CANCELLED too,
    # whatever the machine's pace.
    booking, cancelled = threading.Event(), threading.Event()
    spies = install_spy(wb)
    make_spy = wb.engine.bank_factory

    def holding_bank(config: Any) -> Any:
        spy = make_spy(config)
        book = spy.book_deals

        def held_booking(batch_: Any, max_in_flight: int) -> Any:
            booking.set()
            assert cancelled.wait(30)
            return book(batch_, max_in_flight)

        spy.book_deals = held_booking  # type: ignore[method-assign]
        return spy

    wb.engine.bank_factory = holding_bank
    job = wb.start_run(batch, latency_ms=10, concurrency=4)
    assert booking.wait(30)
    wb.cancel(job.run_id)
    # Still stopping (its booking call is held): starting the batch again says so, not "running".
    with pytest.raises(ConflictError) as err:
        wb.start_run(batch, latency_ms=10)
    assert err.value.message.startswith(f"Run {job.run_id} of batch {batch} is still stopping after its cancel")
    cancelled.set()
    finish(job)
    summary = wb.run_summary(job.run_id)
    assert summary.status is RunStatus.CANCELLED
    assert_every_trade_final(wb, job.run_id)
    assert spies[0].inner.calls["bookquoteddeal"] == 0
    assert summary.counts["SUCCESS"] == 0
    assert summary.counts["CANCELLED"] + summary.counts["FAILED"] == 400
    rows = query(
        wb,
        "SELECT quote_id, attempts, executing_at, deal_transaction_id FROM run_trades "
        "WHERE run_id = ? AND status = 'CANCELLED'",
        job.run_id,
    )
    assert len(rows) == summary.counts["CANCELLED"]
    assert all(deal is None for *_, deal in rows), "a cancelled trade was never booked"
    # Not started: no attempt. Refused and waiting to try again: its attempts, no more.
    # Quoted, its booking not sent: its quote released.
    assert all((attempts == 0) == (executing is None) for quote, attempts, executing, _ in rows if quote is None)
    assert sum(1 for quote, attempts, _, _ in rows if quote is None and attempts == 0) >= 144
    quoted = {quote for quote, *_ in rows if quote is not None}
    assert quoted and quoted <= set(spies[0].cancelled)
    assert_ledger_matches_successes(wb, job.run_id)
    assert job.progress.snapshot().status is RunStatus.CANCELLED


def test_cancelling_a_finished_run_is_refused(wb: Workbench) -> None:
    batch = load_sample(wb)
    run_id = wb.run(batch).run_id
    with pytest.raises(ConflictError, match="nothing to cancel"):
        wb.cancel(run_id)


def test_an_interrupted_run_can_be_cancelled_and_its_unfinished_trades_end_cancelled(
    wb: Workbench, tmp_path: Path
) -> None:
    batch = load_generated(wb, tmp_path, 400)
    job = wb.start_run(batch, latency_ms=10, concurrency=4)
    wait_until(lambda: job.progress.snapshot().done > 0)
    job.interrupt()
    finish(job)
    assert wb.run_summary(job.run_id).status is RunStatus.INTERRUPTED
    wb.cancel(job.run_id)
    summary = wb.run_summary(job.run_id)
    assert summary.status is RunStatus.CANCELLED
    assert summary.counts["CANCELLED"] > 0
    assert_every_trade_final(wb, job.run_id)
    assert_ledger_matches_successes(wb, job.run_id)


def test_progress_is_readable_from_another_thread_while_the_run_executes(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, 240)
    job = wb.start_run(batch, latency_ms=2, concurrency=1)  # many small waves, about a second in all
    snapshots: list[RunProgress] = []
    while job.running:
        snap = wb.progress(job.run_id)
        assert snap is not None
        snapshots.append(snap)
        time.sleep(0.02)
    finish(job)
    last = wb.progress(job.run_id)
    assert last is not None
    running = [s for s in snapshots if s.status is RunStatus.RUNNING]
    assert running, "the test thread never saw the run in progress"
    assert any(0 < s.done < s.total for s in running)
    for s in running:
        assert s.run_id == job.run_id and s.batch_id == batch and s.total == 240
        assert 0 <= s.done <= s.total
        assert sum(s.counts.values()) == s.total, s
        assert s.done == sum(s.counts[k] for k in FINAL)
        assert s.trades_per_s >= 0
        assert s.eta_s is None or s.eta_s >= 0
    dones = [s.done for s in snapshots]
    assert dones == sorted(dones), "done never goes backwards"
    assert last.done == last.total == 240 and last.fraction == 1.0
    assert last.status is wb.run_summary(job.run_id).status


def test_a_waves_trades_show_executing_while_their_quotes_are_asked_and_a_slow_bank_takes_smaller_waves(
    wb: Workbench, tmp_path: Path
) -> None:
    """At 400 ms a call, 64 rounds a wave would show nothing in flight and nothing final for 50 s:
    the progress counts the wave EXECUTING as soon as its quotes are asked for, and the wave is
    16 rounds of calls in flight (the bank here answers at once: only the setting is slow)."""
    from fxbatch.bank.simulated import SimulatedBank
    from fxbatch.models import RunConfig
    from tests.integration.run_helpers import SpyBank

    batch = load_generated(wb, tmp_path, 200)
    seen: list[tuple[int, dict[str, int]]] = []

    class Watching(SpyBank):
        def create_quotes(self, quotes: Any, max_in_flight: int) -> Any:
            (job,) = wb.engine.active_jobs()
            seen.append((len(quotes), job.progress.snapshot().counts))
            return super().create_quotes(quotes, max_in_flight)

    def factory(config: RunConfig) -> Watching:
        instant = config.bank.model_copy(update={"latency_ms": 0.0})
        return Watching(SimulatedBank(wb.store, instant, config.seed, wb.rates.mids), wb)

    wb.engine.bank_factory = factory
    summary = wb.run(batch, latency_ms=400, concurrency=4, success_rate=1.0)
    assert summary.counts["SUCCESS"] == 200
    first_wave, counts = seen[0]
    assert first_wave == 16 * 4
    assert counts["EXECUTING"] == first_wave and counts["PENDING"] == 200 - first_wave


def _timed_http_bank(wb: Workbench, round_s: float, waves: list[int]) -> Callable[[Any], Any]:
    """A factory of banks that take the place of an HTTP bank: ``round_s`` a round of calls (slept,
    so a round takes at least that long however busy the machine), each wave's size noted."""
    from fxbatch.bank.simulated import SimulatedBank
    from tests.integration.run_helpers import SpyBank

    class Http(SpyBank):
        def create_quotes(self, quotes: Any, max_in_flight: int) -> Any:
            waves.append(len(quotes))
            time.sleep(round_s * -(-len(quotes) // max_in_flight))  # one round of calls after the other
            return super().create_quotes(quotes, max_in_flight)

    def factory(config: Any) -> Http:
        assert config.bank_url
        instant = config.bank.model_copy(update={"latency_ms": 0.0})
        return Http(SimulatedBank(wb.store, instant, config.seed, wb.rates.mids), wb)

    return factory


def test_an_http_banks_first_wave_is_one_round_and_the_next_are_sized_by_how_long_its_quotes_took(
    wb: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a real bank the time a call takes is not a setting: the first wave is one round of
    calls, the next ones go by how long a round of quotes took (a busier machine only makes
    them smaller)."""
    from fxbatch.engine import worker

    batch = load_generated(wb, tmp_path, 300)
    waves: list[int] = []
    monkeypatch.setattr(worker, "WAVE_S", 0.6)
    monkeypatch.setattr(worker, "MIN_WAVE_ROUNDS", 1)
    wb.engine.bank_factory = _timed_http_bank(wb, 0.02, waves)
    summary = wb.run(batch, bank_url="http://bank.test", concurrency=2, success_rate=1.0)
    assert summary.counts["SUCCESS"] == 300
    assert waves[0] == 2  # one round: nothing says yet how long a round takes
    assert waves[1] > 2  # measured: more rounds fit in WAVE_S (unless a round took 30 times longer)
    # 0.6 s at >= 20 ms a round: at most 30 rounds of 2 calls a wave (and the few left after
    # one, under half a wave, with it), never the full 64
    assert all(w <= 45 * 2 for w in waves), waves
    assert sum(waves) == 300


def test_no_wave_is_quoted_for_longer_than_a_third_of_the_life_its_quotes_say_they_have(
    wb: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Quotes of 0.6 s at >= 10 ms a round: a wave is quoted within 0.2 s (20 rounds at most),
    # where the rounds alone would be the full 64 (WAVE_S is no limit here).
    from fxbatch.engine import worker

    batch = load_generated(wb, tmp_path, 300)
    waves: list[int] = []
    monkeypatch.setattr(worker, "WAVE_S", 1000.0)
    wb.engine.bank_factory = _timed_http_bank(wb, 0.01, waves)
    summary = wb.run(batch, bank_url="http://bank.test", concurrency=2, success_rate=1.0, quote_ttl_s=0.6)
    # Every trade books, unless a machine too busy to book within 0.6 s let its quote expire
    # three times over.
    assert summary.counts["SUCCESS"] + summary.failure_reasons.get("QUOTE_EXPIRED", 0) == 300
    assert waves[0] == 2 and len(waves) > 2
    assert all(w <= 20 * 2 for w in waves), waves


def test_a_simulated_bank_sizes_its_waves_by_the_latency_setting_not_by_a_measured_time(
    wb: Workbench, tmp_path: Path
) -> None:
    from fxbatch.bank.simulated import SimulatedBank
    from fxbatch.models import RunConfig
    from tests.integration.run_helpers import SpyBank

    batch = load_generated(wb, tmp_path, 200)
    waves: list[int] = []

    class Watching(SpyBank):
        def create_quotes(self, quotes: Any, max_in_flight: int) -> Any:
            waves.append(len(quotes))
            return super().create_quotes(quotes, max_in_flight)

    def factory(config: RunConfig) -> Watching:
        instant = config.bank.model_copy(update={"latency_ms": 0.0})
        return Watching(SimulatedBank(wb.store, instant, config.seed, wb.rates.mids), wb)

    wb.engine.bank_factory = factory
    wb.run(batch, latency_ms=20, concurrency=2, success_rate=1.0)
    assert waves == [128, 72]  # 64 rounds at 20 ms (WAVE_S / 20 ms is more than 64)


def test_progress_of_a_run_not_executing_here_is_none(wb: Workbench) -> None:
    assert wb.progress(12345) is None


def test_latency_bound_wall_time_approaches_trades_times_calls_times_latency_over_concurrency(
    wb: Workbench, tmp_path: Path
) -> None:
    trades, latency_s, concurrency = 320, 0.02, 16
    batch = load_generated(wb, tmp_path, trades)
    started = time.monotonic()
    # every trade succeeds at once: exactly two calls (quote, book) per trade
    summary = wb.run(batch, success_rate=1.0, latency_ms=latency_s * 1000, concurrency=concurrency)
    wall = time.monotonic() - started
    ideal = trades * 2 * latency_s / concurrency
    assert summary.status is RunStatus.COMPLETED
    assert wall >= 0.9 * ideal, "latency is really simulated"
    assert wall < 3 * ideal, f"{wall:.2f}s against an ideal {ideal:.2f}s"


def test_a_resumed_runs_progress_starts_from_the_trades_already_final(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, 200)
    job = wb.start_run(batch, latency_ms=2, concurrency=1)
    wait_until(lambda: wb.run_summary(job.run_id).counts["SUCCESS"] > 0, every=0.05)
    job.interrupt()
    finish(job)
    interrupted = wb.run_summary(job.run_id)
    already = sum(interrupted.counts[s] for s in FINAL)
    assert 0 < already < 200
    resumed = wb.start_resume(job.run_id)
    first = resumed.progress.snapshot()
    assert first.total == 200 and first.done >= already
    finish(resumed)
    last = resumed.progress.snapshot()
    assert last.done == 200
    summary = wb.run_summary(job.run_id)
    assert summary.status in (RunStatus.COMPLETED, RunStatus.PARTIAL)
    assert_every_trade_final(wb, job.run_id)
    assert_ledger_matches_successes(wb, job.run_id)


def test_resuming_a_run_while_its_batch_runs_again_is_refused(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, 200)
    first = wb.start_run(batch, latency_ms=10, concurrency=4)
    wait_until(lambda: first.progress.snapshot().done > 0)
    first.interrupt()
    finish(first)
    second = wb.start_run(batch, latency_ms=10, concurrency=4)
    with pytest.raises(ConflictError, match=f"Batch {batch} is already running \\(run {second.run_id}\\)"):
        wb.resume(first.run_id)
    wb.cancel(second.run_id)
    finish(second)
    assert wb.run_summary(first.run_id).status is RunStatus.INTERRUPTED  # still resumable


def test_retrying_the_failures_of_a_run_that_has_not_ended_is_refused(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, 200)
    job = wb.start_run(batch, success_rate=0.5, latency_ms=2, concurrency=1)
    wait_until(lambda: job.progress.snapshot().done > 0)
    with pytest.raises(ConflictError, match="RUNNING; retry its failed trades once it has ended"):
        wb.start_run(batch, retry_of_run=job.run_id)
    job.interrupt()
    finish(job)
    with pytest.raises(ConflictError, match="INTERRUPTED; retry its failed trades once it has ended"):
        wb.start_run(batch, retry_of_run=job.run_id)


def test_the_failures_of_a_run_at_a_bank_are_retried_at_that_bank_only(wb: Workbench, tmp_path: Path) -> None:
    """Retried on the simulated bank, a real bank's refusals would look booked while that bank
    books nothing: the retry must name the same bank."""
    from fxbatch.bank.simulated import SimulatedBank
    from fxbatch.models import RunConfig

    batch = load_generated(wb, tmp_path, 40)
    asked: list[str | None] = []

    def factory(config: RunConfig) -> SimulatedBank:  # stands in for the bank at the URL
        asked.append(config.bank_url)
        return SimulatedBank(wb.store, config.bank, config.seed, wb.rates.mids)

    wb.engine.bank_factory = factory
    url = "http://bank.test"
    first = wb.run(batch, bank_url=url, success_rate=0.5)
    assert first.counts["FAILED"] > 0
    with pytest.raises(ConflictError) as err:
        wb.start_run(batch, retry_of_run=first.run_id, bank_url="http://other.test")
    assert err.value.message == (
        f"Run {first.run_id} ran against the bank at {url}: retry its failed trades at that bank "
        "(CLI: --bank http://bank.test; API: bank_url), not at http://other.test."
    )
    with pytest.raises(ConflictError, match="not on the simulated bank"):
        wb.start_run(batch, wb.run_summary(first.run_id).config.model_copy(update={"bank_url": None}),
                     retry_of_run=first.run_id)  # fmt: skip
    retry = wb.run(batch, retry_of_run=first.run_id, bank_url=url + "/", success_rate=1.0)  # the same bank
    assert retry.trades == first.counts["FAILED"] and asked == [url, url + "/"]
    again = wb.run(batch, retry_of_run=retry.run_id) if retry.counts["FAILED"] else None
    second = wb.run(batch, bank_url=url, success_rate=0.5)
    unnamed = wb.run(batch, retry_of_run=second.run_id)  # no bank named: the run's own
    assert unnamed.config.bank_url == url and asked[-1] == url and again is None
    assert unnamed.config.seed == second.config.seed  # a real bank answers afresh anyway: no new seed


def test_a_run_is_retried_once_and_its_retry_takes_the_failures_on(wb: Workbench, tmp_path: Path) -> None:
    """Each retry has deal ids of its own: a second retry of one run would book again what the
    first booked (a double click, or two analysts, at a real bank)."""
    batch = load_generated(wb, tmp_path, 40)
    first = wb.run(batch, success_rate=0.5)
    retry = wb.run(batch, retry_of_run=first.run_id, success_rate=0.5)
    with pytest.raises(
        ConflictError, match=f"retried already, by run {retry.run_id}.*--retry-failed-of {retry.run_id}"
    ):
        wb.start_run(batch, retry_of_run=first.run_id, success_rate=1.0)
    booked = (
        wb.store.cursor()
        .execute("SELECT count(*), count(DISTINCT src_row) FROM run_trades WHERE status = 'SUCCESS'")
        .fetchall()[0]
    )
    assert booked[0] == booked[1], "no trade booked twice"
    if retry.counts["FAILED"]:
        assert wb.run(batch, retry_of_run=retry.run_id, success_rate=1.0).trades == retry.counts["FAILED"]


def test_cancelling_an_interrupted_retry_leaves_its_untried_trades_with_the_attempts_they_had(
    wb: Workbench, tmp_path: Path
) -> None:
    batch = load_generated(wb, tmp_path, 40)
    first = wb.run(batch, success_rate=0.3, max_attempts=2)
    use_bank(wb, lambda inner: GoesAway(inner, wb, on_call=1))  # gone before the retry quotes anything
    retry = wb.run(batch, retry_of_run=first.run_id)
    assert retry.status is RunStatus.INTERRUPTED and retry.trades == first.counts["FAILED"] > 0
    wb.cancel(retry.run_id)
    assert wb.run_summary(retry.run_id).status is RunStatus.CANCELLED
    pairs = query(
        wb,
        "SELECT r.attempts, p.attempts FROM run_trades r JOIN run_trades p USING (src_row) "
        "WHERE r.run_id = ? AND p.run_id = ? AND r.status = 'CANCELLED'",
        retry.run_id, first.run_id,
    )  # fmt: skip
    assert len(pairs) == retry.trades
    assert all(now == before for now, before in pairs) and any(before > 0 for _, before in pairs)


def test_a_bank_made_for_a_run_that_cannot_start_is_closed(
    wb: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An HTTP bank holds an event loop thread and connections from the moment it is made: when
    # the run is not started after all, nobody else would close it.
    from fxbatch.engine import records

    batch = load_generated(wb, tmp_path, 10)
    closed: list[str] = []

    class Owned:
        def close(self) -> None:
            closed.append("closed")

    wb.engine.bank_factory = lambda config: Owned()

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(records, "create_run", refuse)
    with pytest.raises(OSError, match="disk full"):
        wb.start_run(batch)
    assert closed == ["closed"]


def test_a_run_left_running_in_the_database_by_a_job_that_has_ended_is_resumed_not_stuck(
    wb: Workbench, tmp_path: Path
) -> None:
    # As after restoring, in the same process, a backup taken while the run executed: the stored
    # run says RUNNING, and this process's job of it has ended. Resume and cancel must not refuse it.
    batch = load_generated(wb, tmp_path, 40)
    run = wb.run(batch, success_rate=0.5)
    wb.store.cursor().execute("UPDATE runs SET status = 'RUNNING', finished_at = NULL WHERE run_id = ?", [run.run_id])
    wb.store.cursor().execute("DELETE FROM run_trades WHERE run_id = ? AND src_row % 2 = 0", [run.run_id])
    resumed = wb.resume(run.run_id)
    assert resumed.status is RunStatus.PARTIAL and resumed.counts == run.counts
