"""``fxbatch.connect``: the workbench's methods over the HTTP API give what they give in process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fxbatch import NotFoundError, UnusableFileError, Workbench
from fxbatch.analytics import TradeFilter
from fxbatch.client import Client, RemoteJob, connect
from fxbatch.errors import CancelledError, ConflictError
from fxbatch.models import RunStatus
from tests.conftest import DATA
from tests.integration.api_helpers import WAIT, serve_api


@pytest.fixture
def client(wb: Workbench) -> Iterator[Client]:
    with serve_api(wb) as url, connect(url) as remote:
        yield remote


def test_a_file_loaded_through_the_server_is_the_batch_the_workbench_sees(wb: Workbench, client: Client) -> None:
    result = client.load(DATA / "sample_with_errors.csv", name="Over HTTP")
    assert result.rejected > 0 and result.rejections and result.name == "Over HTTP"
    assert client.batch(result.batch_id) == wb.batch(result.batch_id)
    assert [b.batch_id for b in client.batches()] == [b.batch_id for b in wb.batches()]
    pd.testing.assert_frame_equal(client.trades(result.batch_id), wb.trades(result.batch_id), check_dtype=False)
    assert len(client.rejections(result.batch_id)) == len(wb.rejections(result.batch_id)) == result.rejected
    report = client.check(DATA / "sample_with_errors.csv")
    assert report.rejected == result.rejected and report.rejected_rows


def test_errors_come_back_as_the_same_fxbatch_errors_and_messages(
    wb: Workbench, client: Client, tmp_path: Path
) -> None:
    with pytest.raises(NotFoundError) as remote:
        client.batch(999)
    with pytest.raises(NotFoundError) as local:
        wb.batch(999)
    assert remote.value.message == local.value.message
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UnusableFileError) as remote_file:
        client.load(empty)
    with pytest.raises(UnusableFileError) as local_file:
        wb.load(empty)
    assert remote_file.value.message == local_file.value.message
    for load in (client.load, wb.load, client.check, wb.check):
        with pytest.raises(UnusableFileError) as missing:
            load(tmp_path / "gone.csv")
        assert (missing.value.code, missing.value.message) == (
            "UNREADABLE_FILE",
            "Cannot open gone.csv: No such file or directory",
        ), load


def test_a_run_followed_through_the_server_ends_once_it_has_let_go_of_its_batch(wb: Workbench, client: Client) -> None:
    # The run's status is final before its job ends: the quotes it released are still being
    # cancelled at the bank (slowly here). Following it ends with the job, as waiting in process does.
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    make = wb.engine.bank_factory

    def slow_cancels(config: Any) -> Any:
        bank = make(config)
        cancel = bank.cancel_quotes

        def cancel_slowly(quote_ids: Any, max_in_flight: int) -> Any:
            time.sleep(1.0)
            return cancel(quote_ids, max_in_flight)

        bank.cancel_quotes = cancel_slowly
        return bank

    wb.engine.bank_factory = slow_cancels
    first = client.run(batch, seed=3, success_rate=0.5)
    assert first.quotes_cancelled > 0 and first.quotes_cancelled == wb.run_summary(first.run_id).quotes_cancelled
    wb.engine.bank_factory = make
    assert client.run(batch, seed=4, success_rate=0.5).status is RunStatus.PARTIAL  # not "already running"
    client.delete_batch(batch)


def test_a_run_through_the_server_ends_as_the_same_run_in_process(wb: Workbench, client: Client) -> None:
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    job = client.start_run(batch, seed=3, success_rate=0.8, latency_ms=0)
    assert isinstance(job, RemoteJob) and job.wait(timeout=120)
    remote = client.run_summary(job.run_id)
    local = wb.run(batch, seed=3, success_rate=0.8, latency_ms=0)
    assert remote.counts == local.counts and remote.failure_reasons == local.failure_reasons
    assert remote.spread_income_zar == pytest.approx(local.spread_income_zar)
    assert client.progress(job.run_id) is None and client.active_runs() == []
    assert [r.run_id for r in client.runs(batch)] == [r.run_id for r in wb.runs(batch)]

    failed = TradeFilter(statuses=["FAILED"])
    page, total = client.run_trades_page(job.run_id, failed, limit=10)
    local_page, local_total = wb.run_trades_page(job.run_id, failed, limit=10)
    assert total == local_total == remote.counts["FAILED"] and list(page["row"]) == list(local_page["row"])
    pd.testing.assert_frame_equal(client.failure_pareto(job.run_id), wb.failure_pareto(job.run_id), check_dtype=False)
    row = int(page["row"][0])
    detail, local_detail = client.trade_detail(job.run_id, row), wb.trade_detail(job.run_id, row)
    assert set(detail) == set(local_detail) and detail["failure_code"] == local_detail["failure_code"]


def test_events_follow_a_run_to_its_final_state(wb: Workbench, client: Client) -> None:
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    job = client.start_run(batch, latency_ms=0)
    views = list(client.events(job.run_id))
    assert views[-1].finished and views[-1].status in (RunStatus.COMPLETED, RunStatus.PARTIAL)


def test_exports_download_to_the_named_file_with_their_row_count(wb: Workbench, client: Client, tmp_path: Path) -> None:
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    summary = client.run(batch, latency_ms=0)
    rows = client.export_run(summary.run_id, tmp_path / "run.parquet")
    assert rows == summary.trades == len(pd.read_parquet(tmp_path / "run.parquet"))
    booked = client.export_ledger(tmp_path / "ledger.csv", run_id=summary.run_id)
    assert booked == summary.counts["SUCCESS"] == len(pd.read_csv(tmp_path / "ledger.csv"))
    assert not list(tmp_path.glob("*.part"))


def test_a_batch_export_and_the_notional_breakdown_come_as_in_process(
    wb: Workbench, client: Client, tmp_path: Path
) -> None:
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    assert client.export_batch(batch, tmp_path / "remote.csv") == wb.export_batch(batch, tmp_path / "local.csv") > 0
    assert (tmp_path / "remote.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert "••" in (tmp_path / "remote.csv").read_text(encoding="utf-8"), "masked unless asked"
    client.export_batch(batch, tmp_path / "full.xlsx", unmask=True)
    assert len(pd.read_excel(tmp_path / "full-UNMASKED.xlsx", engine="calamine")) == wb.batch(batch).trades
    with_errors = wb.load(DATA / "sample_with_errors.csv").batch_id
    assert client.export_rejections(with_errors, tmp_path / "rejected.csv") == len(wb.rejections(with_errors)) > 0
    wb.export_rejections(with_errors, tmp_path / "rejected-here.csv")
    assert (tmp_path / "rejected.csv").read_bytes() == (tmp_path / "rejected-here.csv").read_bytes()
    with pytest.raises(NotFoundError, match="no batch 999"):
        client.export_batch(999, tmp_path / "none.csv")
    assert not (tmp_path / "none.csv").exists()
    run = wb.run(batch, success_rate=0.6, latency_ms=0)
    remote, local = client.notional_breakdown(run.run_id, top=3), wb.notional_breakdown(run.run_id, top=3)
    assert remote.keys() == local.keys()
    for key, table in local.items():
        pd.testing.assert_frame_equal(remote[key], table, check_dtype=False)


def test_an_export_the_server_takes_longer_to_write_than_the_clients_timeout_still_downloads(
    wb: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server writes the whole file before it answers (minutes for an XLSX of a million trades).
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    run = wb.run(batch, latency_ms=0)
    write = wb.export_run

    def slow(*args: Any, **kwargs: Any) -> int:
        time.sleep(1.5)
        return write(*args, **kwargs)

    monkeypatch.setattr(wb, "export_run", slow)
    with serve_api(wb) as url, connect(url, timeout_s=0.5) as impatient:
        assert impatient.export_run(run.run_id, tmp_path / "run.csv") == run.trades
    assert len(pd.read_csv(tmp_path / "run.csv")) == run.trades and not list(tmp_path.glob("*.part"))


def test_a_load_a_trade_and_a_promoted_runs_settings_come_back_as_in_process(wb: Workbench, client: Client) -> None:
    loaded = client.load(DATA / "sample_trades.csv")
    assert loaded.column_map == wb.load(DATA / "sample_trades.csv").column_map and loaded.column_map
    run = client.run(loaded.batch_id, latency_ms=0)
    remote, local = client.trade_detail(run.run_id, 2), wb.trade_detail(run.run_id, 2)
    assert isinstance(remote["timeline"], pd.DataFrame)
    assert list(remote["timeline"].dtypes) == list(local["timeline"].dtypes)
    assert isinstance(remote["finished_at"], pd.Timestamp) and remote["value_date"] == local["value_date"]
    # A promoted run's settings start a run of their own (not another promotion of that scenario).
    sweep = client.whatif.sweep(loaded.batch_id, [0.8], seeds=1)
    promoted = client.whatif.promote(sweep.sweep_id, 1)
    again = client.run(loaded.batch_id, client.run_summary(promoted.run_id).config)
    assert again.counts == promoted.counts and again.config.sweep_id is None and again.config.scenario is None


def test_a_sweep_runs_in_the_server_reports_progress_and_promotes(wb: Workbench, client: Client) -> None:
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    seen: list[tuple[int, int]] = []
    sweep = client.whatif.sweep(batch, [0.5, 1.0], seeds=2, on_progress=lambda d, t: seen.append((d, t)))
    assert sweep.scenario_count == 4 and len(sweep.summary) == 2 and seen[-1] == (4, 4)
    assert client.whatif.get(sweep.sweep_id) == wb.whatif.get(sweep.sweep_id)
    assert [s.sweep_id for s in client.whatif.sweeps(batch)] == [sweep.sweep_id]
    promoted = client.whatif.promote(sweep.sweep_id, 4)
    assert promoted.status is RunStatus.COMPLETED and promoted.counts["SUCCESS"] == sweep.scenarios[3].succeeded
    assert len(client.whatif.compare([promoted.run_id])) == 1


def test_a_sweep_interrupted_in_the_client_is_cancelled_in_the_server(
    wb: Workbench, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in a notebook or the CLI: nobody waits for the sweep, so the server stops it too. The
    server's sweep holds after its first scenario until the cancel has come."""
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    real_sweep, real_cancel = wb.whatif.sweep, wb.whatif.cancel
    cancelled = threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        def progress(done: int, total: int) -> None:
            reports(done, total)
            assert cancelled.wait(WAIT)

        reports = kwargs["on_progress"]
        return real_sweep(*args, **{**kwargs, "on_progress": progress, "workers": 1})

    def cancel(sweep_id: int) -> None:
        real_cancel(sweep_id)
        cancelled.set()

    monkeypatch.setattr(wb.whatif, "sweep", held)
    monkeypatch.setattr(wb.whatif, "cancel", cancel)

    def interrupt(done: int, total: int) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stopped:
        client.whatif.sweep(batch, [0.5, 0.9], seeds=2, on_progress=interrupt, poll_s=0.01)
    assert cancelled.is_set()
    (sweep_id,) = [s for s in range(1, 10) if _state(client, s) is not None]
    assert stopped.value.__notes__ == [f"sweep {sweep_id} is cancelled in the server: nothing of it is stored"]
    deadline = time.monotonic() + WAIT
    while (state := _state(client, sweep_id)) == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert state == "CANCELLED"
    with pytest.raises(CancelledError, match=f"Sweep {sweep_id} was cancelled after 1 of 4 scenarios"):
        client.whatif.get(sweep_id)
    assert client.whatif.sweeps() == []


def hold_sweeps(wb: Workbench, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The server's sweeps wait, before their first scenario, until the event returned is set."""
    release = threading.Event()
    real_sweep = wb.whatif.sweep

    def held(*args: Any, **kwargs: Any) -> Any:
        assert release.wait(WAIT)
        return real_sweep(*args, **kwargs)

    monkeypatch.setattr(wb.whatif, "sweep", held)
    return release


def test_a_sweep_started_in_the_server_returns_at_once_and_can_be_waited_for_or_cancelled(
    wb: Workbench, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    release = hold_sweeps(wb, monkeypatch)
    job = client.whatif.start_sweep(batch, [0.5, 1.0], seeds=2, name="From a notebook")
    assert job.running and job.done == 0 and job.error is None and job.batch_id == batch
    assert not job.wait(0.05), "held in the server"
    release.set()
    assert job.wait(WAIT) and not job.running and job.error is None
    assert job.done == 4 and client.whatif.get(job.sweep_id).name == "From a notebook"

    release.clear()
    cancelled = client.whatif.start_sweep(batch, [0.9])
    cancelled.cancel()
    release.set()
    assert cancelled.wait(WAIT)
    assert isinstance(cancelled.error, CancelledError)
    with pytest.raises(CancelledError):
        client.whatif.get(cancelled.sweep_id)


def _state(client: Client, sweep_id: int) -> str | None:
    try:
        return str(client.json("GET", f"/whatif/{sweep_id}")["status"])
    except NotFoundError:
        return None


def test_a_sweep_still_running_in_the_server_is_not_read_as_a_stored_one(
    wb: Workbench, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    release = hold_sweeps(wb, monkeypatch)
    sweep_id = int(client.json("POST", "/whatif", json={"batch_id": batch, "success_rates": [0.9]})["sweep_id"])
    try:
        with pytest.raises(
            ConflictError, match=rf"Sweep {sweep_id} is still running in the server at .* \(0 of 1 scenarios done\)"
        ):
            client.whatif.get(sweep_id)
    finally:
        release.set()


def test_a_retry_through_the_server_takes_its_runs_settings_and_the_next_seed(wb: Workbench, client: Client) -> None:
    """The client sends only the options given, so the server fills the rest as in process."""
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    first = client.run(batch, seed=7, success_rate=0.6, max_attempts=2)
    retry = client.run(batch, retry_of_run=first.run_id)
    assert (retry.config.seed, retry.config.bank.success_rate, retry.config.max_attempts) == (8, 0.6, 2)
    fresh = client.run(batch, success_rate=0.7)  # not a retry: the defaults, as in process
    assert fresh.config.seed == 42 and fresh.config.max_attempts == wb.run(batch, success_rate=0.7).config.max_attempts
