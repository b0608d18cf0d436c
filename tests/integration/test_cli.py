"""``python -m fxbatch`` as scripts use it: a real subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DATA, HEADER, good_row

PROJECT = Path(__file__).resolve().parents[2]
BAD_FILES = PROJECT / "tests" / "data" / "bad_files"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the developer's own FXBATCH_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FXBATCH_") or k == "FXBATCH_TODAY"}
    env.update(extra)
    return env


def fxbatch(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fxbatch", *map(str, args)],
        cwd=PROJECT,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.duckdb"


@pytest.fixture
def trades_csv(tmp_path: Path) -> Path:
    path = tmp_path / "morning.csv"
    lines = [HEADER, good_row(1), good_row(2, side="HOLD"), "", good_row(3, amount="1.234"), good_row(4)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_json_reports_the_batch_counts_and_its_rejections(db: Path, trades_csv: Path) -> None:
    proc = fxbatch("--db", db, "load", trades_csv, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"batch_id", "name", "rows", "accepted", "rejected", "ignored", "rejections"} <= set(out)
    assert (out["batch_id"], out["name"]) == (1, "morning")
    assert (out["rows"], out["accepted"], out["rejected"], out["ignored"]) == (5, 2, 2, 1)
    assert out["rejections"] == [
        {
            "row": 3,
            "column": "side",
            "value": "HOLD",
            "code": "INVALID_SIDE",
            "message": "side HOLD must be BUY or SELL (or B/S)",
        },
        {
            "row": 5,
            "column": "amount",
            "value": "1.234",
            "code": "TOO_MANY_DECIMALS",
            "message": "amount 1.234 has more than 2 decimals",
        },
    ]
    assert out["rejections_total"] == 2
    assert proc.stderr == ""


def test_a_load_lists_the_first_rejections_and_stores_every_one(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    lines = [HEADER, good_row(1)] + [good_row(n, side="HOLD") for n in range(2, 8)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = clean_env(FXBATCH_MAX_REJECTIONS_SHOWN="4")
    out = json.loads(fxbatch("--db", db, "load", path, "--json", env=env).stdout)
    assert [r["row"] for r in out["rejections"]] == [3, 4, 5, 6] and out["rejections_total"] == 6
    text = fxbatch("--db", db, "load", path, env=env).stdout
    assert "... 2 more: `python -m fxbatch rejections 2` lists them all" in text
    stored = json.loads(fxbatch("--db", db, "rejections", "1", "--json", env=env).stdout)
    assert [r["row"] for r in stored] == [3, 4, 5, 6, 7, 8]


def test_load_without_json_prints_a_summary_and_each_rejection(db: Path, trades_csv: Path) -> None:
    proc = fxbatch("--db", db, "load", trades_csv, "--name", "Desk run")
    assert proc.returncode == 0, proc.stderr
    assert "Batch 1 'Desk run' created from morning.csv" in proc.stdout
    assert "accepted 2, rejected 2, ignored (blank) 1" in proc.stdout
    assert "INVALID_SIDE" in proc.stdout and "TOO_MANY_DECIMALS" in proc.stdout


def test_load_names_the_columns_it_did_not_read(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "margin.csv"
    path.write_text("trade_id,client_cif,account_number,currency_pair,side,amount,Margin\n"
                    "M1,0123456789,0012345678,USD/ZAR,BUY,1000,385\n")  # fmt: skip
    proc = fxbatch("--db", db, "load", path)
    assert proc.returncode == 0, proc.stderr
    assert "columns not read (no field): 'Margin'" in proc.stdout


def test_loading_the_same_file_again_notes_the_earlier_batch(db: Path, trades_csv: Path) -> None:
    fxbatch("--db", db, "load", trades_csv)
    out = json.loads(fxbatch("--db", db, "load", trades_csv, "--json").stdout)
    assert (out["batch_id"], out["previously_loaded_as"]) == (2, [1])


def test_load_for_a_coming_trading_date_checks_value_dates_for_that_day(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "tomorrow.csv"
    path.write_text(f"{HEADER}\n{good_row(1, delivery='CASH', value_date='2026-12-01')}\n", encoding="utf-8")
    proc = fxbatch("--db", db, "load", path, "--trade-date", "2026-12-01", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accepted"] == 1
    proc = fxbatch("--db", db, "load", path, "--trade-date", "2026-11-02", "--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["code"] == "BAD_SETTING"
    assert "trading date 2026-11-02: a file is checked for today (2026-11-30)" in proc.stderr
    proc = fxbatch("--db", db, "load", path, "--trade-date", "1 Dec")
    assert proc.returncode == 2 and "--trade-date: '1 Dec' is not a date YYYY-MM-DD" in proc.stderr


def test_load_of_a_workbook_sheet_by_name(db: Path, tmp_path: Path) -> None:
    import xlsxwriter

    path = tmp_path / "book.xlsx"
    with xlsxwriter.Workbook(str(path)) as book:
        book.add_worksheet("Notes").write_string(0, 0, "nothing here")
        ws = book.add_worksheet("Trades")
        ws.write_row(0, 0, HEADER.split(","))
        ws.write_row(1, 0, good_row(1).split(","))
    proc = fxbatch("--db", db, "load", path, "--sheet", "Trades", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accepted"] == 1
    proc = fxbatch("--db", db, "load", path, "--sheet", "Monday", "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["code"] == "NO_SUCH_SHEET"
    assert "Notes, Trades" in proc.stderr


@pytest.mark.parametrize(
    ("name", "code"),
    [("header_only.csv", "NO_DATA_ROWS"), ("not_really.xlsx", "NOT_A_SPREADSHEET"), ("empty.csv", "EMPTY_FILE")],
)
def test_an_unusable_file_exits_2_with_a_json_error_and_no_batch(db: Path, name: str, code: str) -> None:
    proc = fxbatch("--db", db, "load", BAD_FILES / name, "--json")
    assert proc.returncode == 2
    out = json.loads(proc.stdout)
    assert set(out) == {"error"}
    assert set(out["error"]) == {"code", "message"}
    assert out["error"]["code"] == code
    assert name in out["error"]["message"]
    assert "Traceback" not in proc.stderr
    assert json.loads(fxbatch("--db", db, "batches", "--json").stdout) == []


def test_an_unusable_file_without_json_explains_itself_on_stderr(db: Path) -> None:
    proc = fxbatch("--db", db, "load", BAD_FILES / "missing_amount_column.csv")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: Required column(s) missing: amount.")
    assert "found 'trade_id'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_file_that_does_not_exist_exits_2(db: Path, tmp_path: Path) -> None:
    proc = fxbatch("--db", db, "load", tmp_path / "nope.csv", "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["code"] == "UNREADABLE_FILE"


def test_batches_json_lists_each_batch_newest_first(db: Path, trades_csv: Path) -> None:
    fxbatch("--db", db, "load", trades_csv, "--name", "first")
    fxbatch("--db", db, "load", DATA / "sample_trades.csv", "--name", "second")
    proc = fxbatch("--db", db, "batches", "--json")
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)
    assert [(b["batch_id"], b["name"], b["trades"]) for b in items] == [(2, "second", 200), (1, "first", 2)]
    for item in items:
        assert {"batch_id", "name", "status", "trades", "created_at"} <= set(item)
        assert item["status"] == "LOADED"
        assert item["created_at"][:4].isdigit()


def test_rejections_and_trades_commands_give_the_stored_rows(db: Path, trades_csv: Path) -> None:
    fxbatch("--db", db, "load", trades_csv)
    rejections = json.loads(fxbatch("--db", db, "rejections", "1", "--json").stdout)
    assert [(r["row"], r["code"]) for r in rejections] == [(3, "INVALID_SIDE"), (5, "TOO_MANY_DECIMALS")]
    trades = json.loads(fxbatch("--db", db, "trades", "1", "--json").stdout)
    assert [(t["row"], t["trade_id"], t["client_cif"]) for t in trades] == [
        (2, "T00001", "0123456789"),
        (6, "T00004", "0123456789"),
    ]


def test_trades_as_text_shows_the_first_rows_and_says_how_many_more_there_are(db: Path, trades_csv: Path) -> None:
    fxbatch("--db", db, "load", trades_csv)
    one = fxbatch("--db", db, "trades", "1", "--limit", "1").stdout
    assert "T00001" in one and "T00004" not in one
    assert "... 1 more of 2 trades (--limit N shows more; --json gives all)" in one
    everything = fxbatch("--db", db, "trades", "1").stdout
    assert "T00004" in everything and "more of" not in everything
    refused = fxbatch("--db", db, "trades", "1", "--limit", "-1")
    assert refused.returncode == 2 and "'-1' is not a whole number of 0 or more" in refused.stderr


def test_whatif_refuses_no_workers_and_workers_with_a_dask_scheduler(db: Path) -> None:
    zero = fxbatch("--db", db, "whatif", "1", "--success-rates", "0.9", "--workers", "0")
    assert zero.returncode == 2 and "'0' is not a positive whole number" in zero.stderr
    both = fxbatch("--db", db, "whatif", "1", "--success-rates", "0.9", "--workers", "2", "--dask", "tcp://h:8786")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_an_unknown_batch_exits_2_naming_it(db: Path) -> None:
    proc = fxbatch("--db", db, "trades", "42", "--json")
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "NOT_FOUND" and "42" in error["message"]


def test_the_fxbatch_db_environment_variable_chooses_the_database(tmp_path: Path, trades_csv: Path) -> None:
    db = tmp_path / "from_env.duckdb"
    env = clean_env(FXBATCH_DB=str(db))
    proc = fxbatch("load", trades_csv, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert db.exists()
    assert [b["name"] for b in json.loads(fxbatch("batches", "--json", env=env).stdout)] == ["morning"]
    other = tmp_path / "other.duckdb"
    assert json.loads(fxbatch("--db", other, "batches", "--json", env=env).stdout) == [], "--db wins over the env"


@pytest.fixture
def held_database(db: Path) -> Iterator[Path]:
    """Another process holding ``db`` open read-write, as a running app would."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time, duckdb
                con = duckdb.connect({str(db)!r})
                print("ready", flush=True)
                time.sleep(60)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        yield db
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_database_held_by_another_process_exits_2_naming_the_file(held_database: Path, trades_csv: Path) -> None:
    proc = fxbatch("--db", held_database, "load", trades_csv, "--json")
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "DATABASE_LOCKED"
    assert str(held_database) in error["message"]
    assert "Traceback" not in proc.stderr
    text = fxbatch("--db", held_database, "batches")
    assert text.returncode == 2
    assert text.stderr.startswith(f"error: The database file {held_database} is in use by another process")
    assert "Traceback" not in text.stderr


def test_json_given_before_the_command_is_honoured(db: Path, trades_csv: Path) -> None:
    proc = fxbatch("--db", db, "--json", "load", trades_csv)
    assert json.loads(proc.stdout)["accepted"] == 2


def test_a_bad_fxbatch_setting_exits_2_naming_the_setting(db: Path, trades_csv: Path) -> None:
    proc = fxbatch("--db", db, "load", trades_csv, "--json", env=clean_env(FXBATCH_DEFAULT_SPREAD_PIPS="lots"))
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "BAD_SETTING" and "FXBATCH_DEFAULT_SPREAD_PIPS" in error["message"]
    assert "Traceback" not in proc.stderr
