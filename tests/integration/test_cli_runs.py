"""The command line's run commands and their JSON contracts (issue 3): run, runs, show, resume, cancel, export, ledger."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fxbatch import Settings, Workbench
from fxbatch.cli import main
from fxbatch.models import FailureCode, TradeStatus
from tests.conftest import DATA
from tests.integration.run_helpers import finish, wait_until

RUN_KEYS = {"run_id", "batch_id", "status", "trades", "counts", "failure_reasons", "elapsed_s"}
LIST_KEYS = {"run_id", "batch_id", "status", "trades", "counts", "started_at"}
STATUSES = {s.value for s in TradeStatus}
CODES = {c.value for c in FailureCode}

Cli = Callable[..., tuple[int, Any, str]]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A closed database holding the bundled sample as a batch; each test works on a copy."""
    path = tmp_path_factory.mktemp("cli") / "template.duckdb"
    with Workbench.open(settings=Settings(db=path)) as wb:
        batch = wb.load(DATA / "sample_trades.csv").batch_id
    return path, batch


@pytest.fixture
def db(template: tuple[Path, int], tmp_path: Path) -> Path:
    copy = tmp_path / "cli.duckdb"
    shutil.copyfile(template[0], copy)
    return copy


@pytest.fixture
def cli(db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cli("run", "1", "--json")`` -> (exit code, parsed JSON on stdout, stderr) against one database."""
    for name in [n for n in os.environ if n.startswith("FXBATCH_") and n != "FXBATCH_TODAY"]:
        monkeypatch.delenv(name)

    def run(*args: str, parse: bool = True) -> tuple[int, Any, str]:
        code = main(["--db", str(db), *args])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if parse and out.strip() else out), err

    return run


@pytest.fixture
def batch(template: tuple[Path, int], db: Path) -> int:
    return template[1]


def assert_run_contract(payload: dict[str, Any], batch: int, trades: int) -> None:
    assert set(payload) >= RUN_KEYS
    assert payload["batch_id"] == batch and payload["trades"] == trades
    assert set(payload["counts"]) == STATUSES
    assert all(isinstance(n, int) for n in payload["counts"].values())
    assert sum(payload["counts"].values()) == trades
    assert set(payload["failure_reasons"]) <= CODES
    assert sum(payload["failure_reasons"].values()) == payload["counts"]["FAILED"]
    assert isinstance(payload["elapsed_s"], float) and payload["elapsed_s"] > 0


def test_run_json_prints_the_run_summary_contract(cli: Cli, batch: int) -> None:
    code, summary, _ = cli("run", str(batch), "--json", "--success-rate", "0.6", "--seed", "3")
    assert code == 0
    assert_run_contract(summary, batch, 200)
    assert summary["status"] == "PARTIAL"
    assert summary["counts"]["PENDING"] == summary["counts"]["EXECUTING"] == summary["counts"]["QUOTED"] == 0
    assert summary["failure_reasons"]  # some failed at 60%


def test_run_options_are_kept_in_the_runs_configuration(cli: Cli, batch: int) -> None:
    args = ["--success-rate", "1", "--seed", "9", "--concurrency", "3", "--max-attempts", "2", "--latency-ms", "0"]
    code, summary, _ = cli("run", str(batch), "--json", *args)
    assert code == 0 and summary["status"] == "COMPLETED"
    code, shown, _ = cli("show", str(summary["run_id"]), "--json")
    config = shown["config"]
    assert (config["seed"], config["concurrency"], config["max_attempts"]) == (9, 3, 2)
    assert config["bank"]["success_rate"] == 1.0


def test_run_retry_failed_of_runs_the_failed_trades_only(cli: Cli, batch: int) -> None:
    _, first, _ = cli("run", str(batch), "--json", "--success-rate", "0.5", "--seed", "1")
    code, retry, _ = cli("run", str(batch), "--json", "--retry-failed-of", str(first["run_id"]), "--seed", "2")
    assert code == 0
    assert_run_contract(retry, batch, first["counts"]["FAILED"])
    assert retry["retry_of_run"] == first["run_id"]


def test_runs_json_lists_every_run_newest_first_with_its_counts(cli: Cli, batch: int) -> None:
    _, a, _ = cli("run", str(batch), "--json")
    _, b, _ = cli("run", str(batch), "--json", "--success-rate", "0")
    code, items, _ = cli("runs", "--json")
    assert code == 0
    assert [i["run_id"] for i in items] == [b["run_id"], a["run_id"]]
    for item in items:
        assert set(item) >= LIST_KEYS
        assert item["batch_id"] == batch and item["trades"] == 200
        assert sum(item["counts"].values()) == 200
        assert item["started_at"]
    assert items[0]["status"] == "FAILED"
    code, none, _ = cli("runs", "--json", "--batch", str(batch + 1))
    assert code == 2 and none["error"]["code"] == "NOT_FOUND"  # no such batch, not an empty one


def test_show_json_prints_the_same_summary_as_run(cli: Cli, batch: int) -> None:
    _, ran, _ = cli("run", str(batch), "--json")
    code, shown, _ = cli("show", str(ran["run_id"]), "--json")
    assert code == 0
    assert {k: shown[k] for k in RUN_KEYS} == {k: ran[k] for k in RUN_KEYS}


def test_text_output_names_the_run_its_status_and_counts(cli: Cli, batch: int) -> None:
    code, out, _ = cli("run", str(batch), "--success-rate", "1", parse=False)
    assert code == 0
    assert out.startswith("Run 1 of batch 1: COMPLETED, 200 trades in ")
    assert "SUCCESS 200" in out


def test_resuming_a_finished_run_is_refused_with_exit_2_and_a_clear_error(cli: Cli, batch: int) -> None:
    _, ran, _ = cli("run", str(batch), "--json", "--success-rate", "1")
    code, payload, err = cli("resume", str(ran["run_id"]), "--json")
    assert code == 2
    message = f"Run {ran['run_id']} is COMPLETED; only an INTERRUPTED run can be resumed."
    assert payload == {"error": {"code": "CONFLICT", "message": message}}
    assert err.strip() == f"error: {message}"


def test_running_a_missing_batch_is_refused_with_exit_2(cli: Cli, batch: int) -> None:
    code, payload, err = cli("run", "99", "--json")
    assert code == 2
    assert payload["error"]["code"] == "NOT_FOUND"
    assert "no batch 99" in payload["error"]["message"] and "batches" in payload["error"]["message"]
    assert err.startswith("error: ")
    assert cli("runs", "--json")[1] == []


def test_showing_a_missing_run_is_refused_with_exit_2(cli: Cli, batch: int) -> None:
    code, payload, _ = cli("show", "42", "--json")
    assert code == 2 and payload["error"]["code"] == "NOT_FOUND" and "no run 42" in payload["error"]["message"]


def test_an_out_of_range_option_is_refused_with_exit_2_naming_the_setting(cli: Cli, batch: int) -> None:
    code, payload, _ = cli("run", str(batch), "--json", "--success-rate", "1.5")
    assert code == 2
    assert payload["error"]["code"] == "BAD_SETTING"
    assert "success_rate" in payload["error"]["message"]
    assert cli("runs", "--json")[1] == []


def test_cancelling_a_finished_run_is_refused_with_exit_2(cli: Cli, batch: int) -> None:
    _, ran, _ = cli("run", str(batch), "--json")
    code, payload, _ = cli("cancel", str(ran["run_id"]), "--json")
    assert code == 2 and payload["error"]["code"] == "CONFLICT" and "nothing to cancel" in payload["error"]["message"]


def test_export_writes_one_row_per_trade(cli: Cli, batch: int, tmp_path: Path) -> None:
    _, ran, _ = cli("run", str(batch), "--json", "--success-rate", "0.7")
    out = tmp_path / "x.csv"
    code, payload, _ = cli("export", str(ran["run_id"]), "-o", str(out), "--json")
    assert code == 0
    assert payload == {"run_id": ran["run_id"], "rows": 200, "path": str(out), "unmasked": False}
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 200
    assert sum(r["status"] == "SUCCESS" for r in rows) == ran["counts"]["SUCCESS"]
    assert any(r["client_cif"].startswith("0") for r in rows)


def test_export_batch_writes_the_trades_as_loaded_and_a_run_or_a_batch_must_be_named(
    cli: Cli, batch: int, tmp_path: Path
) -> None:
    out = tmp_path / "batch.csv"
    code, payload, _ = cli("export", "--batch", str(batch), "-o", str(out), "--json")
    assert code == 0 and payload == {"batch_id": batch, "rows": 200, "path": str(out), "unmasked": False}
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 200 and "status" not in rows[0] and all("••" in r["account_number"] for r in rows)
    for args in ([], ["1", "--batch", str(batch)]):
        code, payload, _ = cli("export", *args, "-o", str(tmp_path / "x.csv"), "--json")
        assert code == 2 and "name a run (RUN_ID) or a batch (--batch BATCH_ID)" in payload["error"]["message"]
    assert not (tmp_path / "x.csv").exists()


def test_export_to_an_unknown_format_is_refused_with_exit_2(cli: Cli, batch: int, tmp_path: Path) -> None:
    _, ran, _ = cli("run", str(batch), "--json")
    code, payload, _ = cli("export", str(ran["run_id"]), "-o", str(tmp_path / "x.txt"), "--json")
    assert code == 2 and payload["error"]["code"] == "BAD_SETTING"


def test_ledger_writes_the_booked_deals_of_a_run_or_all(cli: Cli, batch: int, tmp_path: Path) -> None:
    _, first, _ = cli("run", str(batch), "--json", "--success-rate", "0.5")
    _, second, _ = cli("run", str(batch), "--json", "--success-rate", "1")
    out = tmp_path / "ledger.csv"
    code, payload, _ = cli("ledger", "--run", str(second["run_id"]), "-o", str(out), "--json")
    assert code == 0 and payload["rows"] == 200
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {"deal_transaction_id", "quote_id", "trade_id", "run_id", "booked_at"} <= set(rows[0])
    assert {r["run_id"] for r in rows} == {str(second["run_id"])}
    code, payload, _ = cli("ledger", "-o", str(tmp_path / "all.csv"), "--json")
    assert code == 0 and payload["rows"] == first["counts"]["SUCCESS"] + 200


def test_cancel_ends_an_interrupted_run_with_its_unfinished_trades_cancelled(cli: Cli, batch: int, db: Path) -> None:
    with Workbench.open(settings=Settings(db=db)) as wb:
        job = wb.start_run(batch, latency_ms=2, concurrency=1)
        wait_until(lambda: job.progress.snapshot().done > 0)
        job.interrupt()
        finish(job)
    code, shown, _ = cli("show", str(job.run_id), "--json")
    assert code == 0 and shown["status"] == "INTERRUPTED" and shown["counts"]["PENDING"] > 0
    code, cancelled, _ = cli("cancel", str(job.run_id), "--json")
    assert code == 0
    assert_run_contract(cancelled, batch, 200)
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["counts"]["PENDING"] == 0 and cancelled["counts"]["CANCELLED"] > 0
