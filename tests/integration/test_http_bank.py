"""The HTTP bank against the bank simulator service over real HTTP on loopback.

Each test starts ``python -m fxbatch.banksim serve`` as a subprocess (the ``service`` fixture:
``tests/integration/banksim_helpers.py``) on a port it picks, with its own DuckDB ledger, and
kills it in the fixture's finally.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from fxbatch import Settings, Workbench
from fxbatch.errors import SettingsError
from fxbatch.models import FailureCode, RunStatus
from tests.integration.banksim_helpers import CLIENT, SECRET, Service
from tests.integration.run_helpers import WAIT, assert_every_trade_final, load_generated, query, wait_until
from tests.integration.test_crash_resume import cli_env, prepared_db, start_cli, wait_for_progress


def http_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "db": tmp_path / "client.duckdb", "bank_client_id": CLIENT, "bank_client_secret": SecretStr(SECRET),
        "bank_unreachable_window_s": 2.0, "bank_timeout_s": 5.0,
    }  # fmt: skip
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def assert_one_deal_per_success(wb: Workbench, run_id: int, ledger: list[dict[str, str]]) -> None:
    ids = [row["deal_transaction_id"] for row in ledger]
    assert len(ids) == len(set(ids)), "a deal was booked twice"
    success = {
        r[0]: r[1]
        for r in query(
            wb, "SELECT deal_transaction_id, quote_id FROM run_trades WHERE run_id = ? AND status = 'SUCCESS'", run_id
        )
    }
    assert set(ids) == set(success)
    assert all(int(row["quote_id"]) == success[row["deal_transaction_id"]] for row in ledger)
    assert all(row["booked_at"] for row in ledger)


def test_a_500_trade_batch_at_concurrency_16_ends_final_with_one_deal_per_success(
    tmp_path: Path, service: Service
) -> None:
    with Workbench.open(settings=http_settings(tmp_path)) as wb:
        batch = load_generated(wb, tmp_path, 500)
        over_http = wb.run(batch, bank_url=service.url, concurrency=16, backoff_ms=5)
        assert over_http.status in (RunStatus.COMPLETED, RunStatus.PARTIAL), over_http.error
        assert_every_trade_final(wb, over_http.run_id)
        # The simulator decides with the same model and success rate (95%) as the in-process bank,
        # from the request alone (no fxbatch header reaches it).
        assert 440 <= over_http.counts["SUCCESS"] < 500
        reasons = set(over_http.failure_reasons)
        assert reasons and reasons <= {c.value for c in FailureCode}
        service.stop()
        assert_one_deal_per_success(wb, over_http.run_id, service.ledger(tmp_path))


@pytest.mark.parametrize("service", [("--drop-after-book-rate", "0.2", "--error-rate", "0.05")], indirect=True)
def test_dropped_booking_answers_and_5xx_never_book_a_deal_twice(tmp_path: Path, service: Service) -> None:
    with Workbench.open(settings=http_settings(tmp_path)) as wb:
        batch = load_generated(wb, tmp_path, 300, seed=3)
        summary = wb.run(batch, bank_url=service.url, concurrency=16, backoff_ms=5)
        assert summary.status in (RunStatus.COMPLETED, RunStatus.PARTIAL), summary.error
        assert_every_trade_final(wb, summary.run_id)
        # Lost answers (20% of bookings) and 5xx (5% of calls) are resolved by the bank's status and
        # retries: the failures are the model's own 5% (~15 of 300), not one per lost answer (~60).
        assert summary.counts["FAILED"] <= 30
        service.stop()
        ledger = service.ledger(tmp_path)
        assert len(ledger) == summary.counts["SUCCESS"] > 250
        assert_one_deal_per_success(wb, summary.run_id, ledger)


@pytest.mark.parametrize("service", [("--latency-ms", "20")], indirect=True)
def test_a_killed_bank_interrupts_the_run_and_resume_finishes_it_consistently(
    tmp_path: Path, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with Workbench.open(settings=http_settings(tmp_path)) as wb:
        batch = load_generated(wb, tmp_path, 600, seed=5)
        job = wb.start_run(batch, bank_url=service.url, concurrency=8, backoff_ms=5)
        wait_until(lambda: job.progress.snapshot().done >= 50, timeout=30)
        service.kill()
        killed_at = time.monotonic()
        assert job.wait(WAIT)
        summary = wb.run_summary(job.run_id)
        assert summary.status is RunStatus.INTERRUPTED
        assert time.monotonic() - killed_at >= 1.0  # it waited out (most of) the 2 s window
        assert summary.error and "could not be reached" in summary.error and SECRET not in summary.error
        assert summary.counts["FAILED"] < 30  # the outage failed no trade: only the bank's own refusals
        assert summary.counts["SUCCESS"] + summary.counts["FAILED"] < 600  # the rest untouched
        service.start()
        resumed = wb.resume(job.run_id)
        assert resumed.status in (RunStatus.COMPLETED, RunStatus.PARTIAL), resumed.error
        assert_every_trade_final(wb, job.run_id)
        # The outage failed no trade: the failures are the model's own 5% (~30 of 600).
        assert resumed.counts["FAILED"] <= 60
        service.stop()
        assert_one_deal_per_success(wb, job.run_id, service.ledger(tmp_path))
    assert SECRET not in caplog.text and SECRET not in service.log.read_text()


def test_bad_credentials_fail_clearly_before_any_trade_is_touched(
    tmp_path: Path, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-" + SECRET
    settings = http_settings(tmp_path, bank_client_secret=SecretStr(wrong))
    assert wrong not in repr(settings) and wrong not in str(settings.model_dump())
    with Workbench.open(settings=settings) as wb:
        batch = load_generated(wb, tmp_path, 20)
        with pytest.raises(SettingsError) as info:
            wb.run(batch, bank_url=service.url)
        assert f"{service.url}/oauth2/token" in info.value.message
        assert wrong not in info.value.message and SECRET not in info.value.message
        assert query(wb, "SELECT count(*) FROM run_trades WHERE status = 'FAILED'") == [(0,)]
    assert wrong not in caplog.text


def test_the_ledger_command_writes_the_booked_deals(tmp_path: Path, service: Service) -> None:
    with Workbench.open(settings=http_settings(tmp_path)) as wb:
        batch = load_generated(wb, tmp_path, 20)
        summary = wb.run(batch, bank_url=service.url, concurrency=4)
    service.stop()
    ledger = service.ledger(tmp_path)
    assert len(ledger) == summary.counts["SUCCESS"]
    assert {"deal_transaction_id", "quote_id", "booked_at", "deal_rate", "quote_rate"} <= set(ledger[0])
    assert os.path.getsize(tmp_path / "ledger.csv") > 0


@pytest.mark.parametrize("service", [("--latency-ms", "50", "--hang-after-bookings", "40")], indirect=True)
def test_a_client_killed_while_a_wave_books_is_resumed_booking_nothing_twice(tmp_path: Path, service: Service) -> None:
    # A wave's booking answers are settled as they come: a crash in the middle leaves some of its
    # trades final and others booking. The bank answers the first 40 bookings, then holds every
    # later one unanswered (and says so in its log): the kill lands with the wave's first answers
    # in and the rest in flight, however slow the machine is.
    db, batch = prepared_db(tmp_path, 300)
    stderr = tmp_path / "run.err"
    env = {**cli_env(), "FXBATCH_BANK_CLIENT_ID": CLIENT, "FXBATCH_BANK_CLIENT_SECRET": SECRET,
           "FXBATCH_BANK_TIMEOUT_S": "300"}  # fmt: skip
    proc = start_cli(db, stderr, "run", str(batch), "--bank", service.url, "--concurrency", "4", "--progress", env=env)

    def bank_hung() -> bool:
        assert proc.poll() is None, stderr.read_text()
        return "every later one is held" in service.log.read_text()

    try:
        wait_until(bank_hung, timeout=60, every=0.05)
        # Parts of the wave were settled before it: more than the first wave's one round of 4.
        wait_for_progress(proc, stderr, at_least=5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, stderr.read_text()
    service.kill()
    booked_before = len(service.ledger(tmp_path))
    assert 0 < booked_before <= 40  # the bank made some of the wave's deals, and no more
    service.args = ("--latency-ms", "50")  # back, answering again
    service.start()

    with Workbench.open(settings=http_settings(tmp_path, db=db)) as wb:
        (run,) = wb.runs(batch)
        assert run.status is RunStatus.INTERRUPTED
        (booking,) = query(
            wb,
            "SELECT count(*) FROM run_inflight i LEFT JOIN run_trades t ON t.run_id = i.run_id "
            "AND t.src_row = i.src_row WHERE i.run_id = ? AND t.src_row IS NULL",
            run.run_id,
        )[0]
        assert booking > 0, "the kill was meant to land while the wave still had bookings out"
        resumed = wb.resume(run.run_id)
        assert resumed.status in (RunStatus.COMPLETED, RunStatus.PARTIAL), resumed.error
        assert_every_trade_final(wb, run.run_id)
        service.stop()
        assert_one_deal_per_success(wb, run.run_id, service.ledger(tmp_path))
