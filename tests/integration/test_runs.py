"""Runs end to end on a real DuckDB file: lifecycle, determinism, nothing booked twice, retries."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fxbatch import Settings, Workbench
from fxbatch.bank.port import BookBatch, QuoteBatch
from fxbatch.errors import ConflictError, NotFoundError, SettingsError
from fxbatch.models import FAILURES, FailureCode, RunConfig, RunStatus
from tests.integration.run_helpers import (
    DETAIL,
    assert_every_trade_final,
    assert_ledger_matches_successes,
    install_spy,
    load_generated,
    load_sample,
    outcomes,
    query,
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    """One database for the tests that only read back their own runs (saves a database per test)."""
    with Workbench.open(settings=Settings(db=tmp_path_factory.mktemp("runs") / "shared.duckdb")) as wb:
        yield wb


@pytest.fixture(scope="module")
def sample(shared: Workbench) -> int:
    return load_sample(shared)


# -- a run from start to end -------------------------------------------------------------------------


def test_a_run_ends_with_every_trade_final_and_counts_summing_to_the_trades(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    summary = wb.run(batch)
    assert summary.trades == 200
    assert summary.status in (RunStatus.COMPLETED, RunStatus.PARTIAL)
    assert_every_trade_final(wb, summary.run_id)
    assert sum(summary.failure_reasons.values()) == summary.counts["FAILED"]
    assert summary.started_at is not None and summary.finished_at is not None
    assert summary.started_at <= summary.finished_at
    assert summary.elapsed_s is not None and summary.elapsed_s > 0
    assert summary.error is None


def test_a_run_keeps_its_full_configuration(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    summary = wb.run(batch, seed=9, success_rate=0.7, concurrency=3, max_attempts=4, quote_ttl_s=12)
    stored = wb.run_summary(summary.run_id).config
    assert (stored.seed, stored.concurrency, stored.max_attempts) == (9, 3, 4)
    assert (stored.bank.success_rate, stored.bank.quote_ttl_s) == (0.7, 12)
    assert stored == summary.config


def test_each_trade_record_carries_its_stages_and_for_failures_the_reason(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    run_id = wb.run(batch, success_rate=0.5, seed=3).run_id
    rows = query(
        wb,
        "SELECT status, failure_code, failure_message, retryable, attempts, quote_id, quote_rate, quote_expiry, "
        "deal_transaction_id, deal_rate, executing_at, quoted_at, finished_at FROM run_trades WHERE run_id = ?",
        run_id,
    )
    assert {r[0] for r in rows} == {"SUCCESS", "FAILED"}
    for status, code, message, retryable, attempts, qid, qrate, qexp, deal, drate, t_exec, t_quote, t_end in rows:
        assert 1 <= attempts <= 3
        assert t_exec is not None and t_end is not None and t_exec <= t_end
        if status == "SUCCESS":
            assert code is None and message is None and retryable is None
            assert qid and qrate and qexp and deal and 0 < abs(drate - qrate) <= 0.2  # the spread: 1 to 2000 pips
            assert t_exec <= t_quote <= t_end
        else:
            info = FAILURES[FailureCode(code)]
            assert (message, retryable) == (info.message, info.retry_helps)


def test_retryable_failures_are_retried_up_to_max_attempts(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    mix = {FailureCode.RATE_UNAVAILABLE: 1.0}
    run_id = wb.run(batch, success_rate=0.0, failure_mix=mix, max_attempts=4).run_id
    assert set(outcomes(wb, run_id, "status, failure_code, attempts").values()) == {("FAILED", "RATE_UNAVAILABLE", 4)}


def test_a_failure_that_a_retry_cannot_fix_is_not_retried(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    mix = {FailureCode.INSUFFICIENT_FUNDS: 1.0}
    run_id = wb.run(batch, success_rate=0.0, failure_mix=mix).run_id
    assert set(outcomes(wb, run_id, "status, failure_code, attempts, retryable").values()) == {
        ("FAILED", "INSUFFICIENT_FUNDS", 1, False)
    }


def test_every_trade_succeeding_makes_the_run_completed(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    summary = wb.run(batch, success_rate=1.0)
    assert summary.status is RunStatus.COMPLETED
    assert summary.counts["SUCCESS"] == 200 and summary.failure_reasons == {}
    assert_ledger_matches_successes(wb, summary.run_id)


def test_no_trade_succeeding_makes_the_run_failed_and_books_nothing(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    summary = wb.run(batch, success_rate=0.0)
    assert summary.status is RunStatus.FAILED
    assert summary.counts["FAILED"] == 200
    assert query(wb, "SELECT count(*) FROM sim_ledger WHERE run_id = ?", summary.run_id) == [(0,)]


def test_some_trades_succeeding_makes_the_run_partial(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    summary = wb.run(batch, success_rate=0.5, seed=1)
    assert summary.status is RunStatus.PARTIAL
    assert 0 < summary.counts["SUCCESS"] < 200


@pytest.mark.parametrize("rate", [0.95, 0.6])
def test_with_default_settings_the_success_share_is_the_success_rate(
    shared: Workbench, tmp_path: Path, rate: float
) -> None:
    wb = shared
    n = 4000
    batch = load_generated(wb, tmp_path, n)
    summary = wb.run(batch, success_rate=rate, seed=5)
    share = summary.counts["SUCCESS"] / n
    assert abs(share - rate) <= 5 * np.sqrt(rate * (1 - rate) / n), summary.counts


# -- determinism ---------------------------------------------------------------------------------------


def test_the_same_seed_gives_identical_outcomes_per_trade(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    first = wb.run(batch, seed=11, success_rate=0.6).run_id
    second = wb.run(batch, seed=11, success_rate=0.6).run_id
    assert outcomes(wb, first, DETAIL) == outcomes(wb, second, DETAIL)
    assert len(outcomes(wb, first)) == 200


def test_a_different_seed_gives_different_outcomes(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    first = outcomes(wb, wb.run(batch, seed=11, success_rate=0.6).run_id)
    second = outcomes(wb, wb.run(batch, seed=12, success_rate=0.6).run_id)
    assert first.keys() == second.keys()
    differing = sum(first[k] != second[k] for k in first)
    assert differing > 20


def test_outcomes_do_not_depend_on_the_chunk_size(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    default = wb.run(batch, seed=4, success_rate=0.6).run_id
    small = wb.run(batch, seed=4, success_rate=0.6, chunk_size=7).run_id
    assert wb.run_summary(small).config.chunk_size == 7
    assert outcomes(wb, small, DETAIL) == outcomes(wb, default, DETAIL)


def test_outcomes_do_not_depend_on_concurrency_or_latency(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    fast = wb.run(batch, seed=4, success_rate=0.6).run_id
    serial = wb.run(batch, seed=4, success_rate=0.6, latency_ms=0.5, concurrency=1, backoff_ms=0).run_id
    wide = wb.run(batch, seed=4, success_rate=0.6, latency_ms=0.5, concurrency=64, backoff_ms=0).run_id
    expected = outcomes(wb, fast, DETAIL)
    assert outcomes(wb, serial, DETAIL) == expected
    assert outcomes(wb, wide, DETAIL) == expected


# -- nothing booked twice ------------------------------------------------------------------------------


def test_every_success_has_exactly_one_booked_deal_and_no_deal_id_appears_twice(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    for seed in (1, 2, 3):
        summary = wb.run(batch, seed=seed, success_rate=0.5)
        assert_ledger_matches_successes(wb, summary.run_id)
    ids = query(wb, "SELECT deal_transaction_id FROM run_trades WHERE deal_transaction_id IS NOT NULL")
    assert len(ids) == len(set(ids))


def test_a_retried_trade_keeps_one_deal_id_stored_before_every_booking(wb: Workbench) -> None:
    spies = install_spy(wb)
    batch = load_sample(wb)
    run_id = wb.run(batch, seed=2, success_rate=0.5).run_id
    (spy,) = spies
    per_trade: dict[int, set[str]] = defaultdict(set)
    attempts: dict[int, set[int]] = defaultdict(set)
    for src_row, attempt, deal in spy.bookings:
        per_trade[src_row].add(deal)
        attempts[src_row].add(attempt)
    rebooked = [row for row, seen in attempts.items() if len(seen) > 1]
    assert len(rebooked) >= 5, "the seed should give trades booked on several attempts"
    assert all(len(ids) == 1 for ids in per_trade.values())
    assert spy.not_stored_first == []
    recorded = outcomes(wb, run_id, "deal_transaction_id, attempts")
    for row in rebooked:
        (deal,) = per_trade[row]
        assert recorded[row][0] == deal and recorded[row][1] >= max(attempts[row])
    assert_ledger_matches_successes(wb, run_id)


def test_an_unanswered_booking_is_resolved_by_transaction_status_not_booked_again(wb: Workbench) -> None:
    spies = install_spy(wb)
    batch = load_sample(wb)
    mix = {FailureCode.TIMEOUT_UNKNOWN: 1.0, FailureCode.INSUFFICIENT_FUNDS: 1.0}
    run_id = wb.run(batch, seed=2, success_rate=0.5, failure_mix=mix, transient_absorb_share=0.9).run_id
    (spy,) = spies
    assert spy.status_asked, "some bookings should have gone unanswered"
    booked_once = {d for _, _, d in spy.bookings}
    assert set(spy.status_asked) <= booked_once
    final = outcomes(wb, run_id, "deal_transaction_id, status, failure_code")
    by_deal = {deal: (status, code) for deal, status, code in final.values()}
    # a lost answer on a booking the bank made is a SUCCESS found by asking, not a second booking
    found = [d for d in set(spy.status_asked) if by_deal[d][0] == "SUCCESS"]
    assert found
    assert_ledger_matches_successes(wb, run_id)


# -- retrying failed trades ------------------------------------------------------------------------------


def test_retry_failed_of_runs_exactly_the_failed_trades_of_the_earlier_run(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    first = wb.run(batch, seed=1, success_rate=0.5)
    failed = {row for row, (status, _) in outcomes(wb, first.run_id).items() if status == "FAILED"}
    assert failed
    retry = wb.run(batch, seed=2, success_rate=0.5, retry_of_run=first.run_id)
    assert retry.trades == len(failed) == first.counts["FAILED"]
    assert retry.retry_of_run == first.run_id
    assert set(outcomes(wb, retry.run_id)) == failed
    assert_every_trade_final(wb, retry.run_id)
    assert_ledger_matches_successes(wb, retry.run_id)
    before = outcomes(wb, first.run_id, "attempts")
    after = outcomes(wb, retry.run_id, "attempts")
    assert all(after[row][0] > before[row][0] for row in failed), "a retry continues the attempt count"


def test_a_retry_takes_its_runs_settings_and_the_next_seed_so_the_bank_answers_afresh(
    shared: Workbench, sample: int
) -> None:
    """The simulated bank draws each trade's answer from the seed: with the same seed every trade
    fated to fail would fail again, so "retry the failed trades" would never help."""
    wb, batch = shared, sample
    # Three runs alike, each retried once (a run is retried once: its retry takes the failures on).
    first, twin, triplet = (wb.run(batch, seed=7, success_rate=0.6, max_attempts=2, latency_ms=0) for _ in range(3))
    assert first.counts == twin.counts == triplet.counts
    retry = wb.run(batch, retry_of_run=first.run_id)
    assert retry.config.seed == 8 and retry.config.bank.success_rate == 0.6 and retry.config.max_attempts == 2
    assert retry.counts["SUCCESS"] > 0, "some of the failed trades go through on a second try"
    same = wb.run(batch, retry_of_run=twin.run_id, seed=7)  # a seed given is kept
    assert same.config.seed == 7 and same.counts["SUCCESS"] < retry.counts["SUCCESS"]
    sure = wb.run(batch, retry_of_run=triplet.run_id, success_rate=1.0)  # any setting given is kept too
    assert sure.config.seed == 8 and sure.counts["SUCCESS"] == triplet.counts["FAILED"]


def test_retrying_a_run_without_failures_is_refused(shared: Workbench, sample: int) -> None:
    wb, batch = shared, sample
    done = wb.run(batch, success_rate=1.0)
    with pytest.raises(ConflictError, match="no FAILED trades"):
        wb.start_run(batch, retry_of_run=done.run_id)


def test_retrying_a_run_of_another_batch_is_refused(shared: Workbench, sample: int, tmp_path: Path) -> None:
    wb, batch = shared, sample
    other = load_generated(wb, tmp_path, 20)
    first = wb.run(batch, success_rate=0.5)
    with pytest.raises(ConflictError, match=f"run of batch {batch}"):
        wb.start_run(other, retry_of_run=first.run_id)


# -- refusals -----------------------------------------------------------------------------------------


def test_running_a_batch_that_does_not_exist_is_refused(wb: Workbench) -> None:
    with pytest.raises(NotFoundError, match="no batch 99"):
        wb.start_run(99)
    assert wb.runs() == []


def test_a_missing_registry_file_is_refused_before_the_run_starts(wb: Workbench, tmp_path: Path) -> None:
    batch = load_sample(wb)
    with pytest.raises(SettingsError, match="registry_file"):
        wb.start_run(batch, registry_file=str(tmp_path / "nope.csv"))
    assert wb.runs() == []


def test_a_client_registry_fails_unknown_clients_once_without_retrying(wb: Workbench, tmp_path: Path) -> None:
    batch = load_sample(wb)
    trades = wb.trades(batch, unmask=True)  # the registry holds full account numbers
    known = trades.drop_duplicates("client_cif").head(2)
    registry = tmp_path / "clients.csv"
    lines = ["cif,account_number,status,limit_zar"]
    lines += [f"{r.client_cif},{r.account_number},ACTIVE," for r in known.itertuples()]
    registry.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_id = wb.run(batch, success_rate=1.0, registry_file=str(registry)).run_id
    result = outcomes(wb, run_id, "status, failure_code, attempts")
    cif_of = dict(zip(trades["row"], trades["client_cif"], strict=True))
    allowed = set(known["client_cif"])
    for row, (status, code, attempts) in result.items():
        if cif_of[row] in allowed:
            assert (status, code) == ("SUCCESS", None)
        else:
            assert (status, code, attempts) == ("FAILED", "CLIENT_NOT_FOUND", 1)
    assert any(r[0] == "SUCCESS" for r in result.values()) and any(r[0] == "FAILED" for r in result.values())


def test_runs_are_listed_newest_first_and_by_batch(wb: Workbench, tmp_path: Path) -> None:
    batch = load_sample(wb)
    other = load_generated(wb, tmp_path, 10)
    a = wb.run(batch).run_id
    b = wb.run(other).run_id
    c = wb.run(batch).run_id
    assert [r.run_id for r in wb.runs()] == [c, b, a]
    assert [r.run_id for r in wb.runs(batch)] == [c, a]


# -- clocks ---------------------------------------------------------------------------------------------


@pytest.fixture
def johannesburg_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The desk's local time zone (UTC+2), as on an analyst's machine in South Africa."""
    monkeypatch.setenv("TZ", "Africa/Johannesburg")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_trade_and_ledger_times_are_on_the_same_clock_as_the_run(johannesburg_time: None, tmp_path: Path) -> None:
    with Workbench.open(settings=Settings(db=tmp_path / "local.duckdb")) as local:
        batch = load_sample(local)
        summary = local.run(batch, success_rate=1.0)
        assert summary.started_at is not None and summary.finished_at is not None
        start = summary.started_at - timedelta(seconds=1)
        end = summary.finished_at + timedelta(seconds=1)
        first, last = query(local, "SELECT min(executing_at), max(finished_at) FROM run_trades")[0]
        booked = query(local, "SELECT min(booked_at) FROM sim_ledger")[0][0]
        assert start <= first <= last <= end, (summary.started_at, first, last, summary.finished_at)
        assert start <= booked <= end


def test_a_batch_stored_out_of_row_order_still_runs_in_row_order(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, 300)
    reference = wb.run(batch, seed=4, chunk_size=50)
    cur = wb.store.cursor()
    cur.execute("CREATE TABLE shuffled AS SELECT * FROM trades ORDER BY src_row DESC")
    cur.execute("DELETE FROM trades")
    cur.execute("INSERT INTO trades SELECT * FROM shuffled")
    spies = install_spy(wb)
    again = wb.run(batch, seed=4, chunk_size=50)
    first_tries = [row for row, attempt, _ in spies[0].bookings if attempt == 1]
    assert first_tries == sorted(first_tries)
    assert outcomes(wb, again.run_id, DETAIL) == outcomes(wb, reference.run_id, DETAIL)


def test_a_wave_is_booked_while_the_next_is_quoted_and_every_booking_is_still_recorded_first(
    wb: Workbench, tmp_path: Path
) -> None:
    batch = load_generated(wb, tmp_path, 400)
    reference = wb.run(batch, seed=3, success_rate=0.6)  # one wave: nothing to overlap
    spies = install_spy(wb)
    quoting = threading.Event()
    booked_during_quote: list[bool] = []
    (factory,) = [wb.engine.bank_factory]

    def slow_quotes(config: RunConfig) -> Any:
        spy = factory(config)
        book, quote = spy.book_deals, spy.create_quotes

        def create_quotes(batch_: QuoteBatch, max_in_flight: int) -> Any:
            quoting.set()
            try:
                time.sleep(0.05)  # long enough for the last wave's booking to come in meanwhile
                return quote(batch_, max_in_flight)
            finally:
                quoting.clear()

        def book_deals(batch_: BookBatch, max_in_flight: int) -> Any:
            booked_during_quote.append(quoting.is_set())
            return book(batch_, max_in_flight)

        spy.book_deals, spy.create_quotes = book_deals, create_quotes  # type: ignore[method-assign]
        return spy

    wb.engine.bank_factory = slow_quotes
    run = wb.run(batch, seed=3, success_rate=0.6, chunk_size=40)
    (spy,) = spies
    assert any(booked_during_quote), "a wave is booked while the next one is being quoted"
    assert spy.not_stored_first == []
    assert outcomes(wb, run.run_id, DETAIL) == outcomes(wb, reference.run_id, DETAIL)
    assert_every_trade_final(wb, run.run_id)
    assert_ledger_matches_successes(wb, run.run_id)


def test_the_heap_is_kept_from_the_collector_while_a_run_goes_on_and_given_back_after(
    wb: Workbench, tmp_path: Path
) -> None:
    import gc

    batch = load_generated(wb, tmp_path, 100)
    spies = install_spy(wb)
    (factory,) = [wb.engine.bank_factory]
    during: list[int] = []

    def watched(config: RunConfig) -> Any:
        spy = factory(config)
        quote = spy.create_quotes

        def create_quotes(batch_: QuoteBatch, max_in_flight: int) -> Any:
            during.append(gc.get_freeze_count())
            return quote(batch_, max_in_flight)

        spy.create_quotes = create_quotes  # type: ignore[method-assign]
        return spy

    wb.engine.bank_factory = watched
    assert gc.get_freeze_count() == 0
    run = wb.run(batch)
    assert spies and during and min(during) > 0  # frozen for every wave's quotes
    assert gc.get_freeze_count() == 0
    assert_every_trade_final(wb, run.run_id)
