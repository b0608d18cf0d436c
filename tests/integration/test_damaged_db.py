"""A file that is not an fxbatch database, or a damaged one, is refused at open and left as it was;
``python -m fxbatch backup`` makes a copy that opens with the same batches and runs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from fxbatch.cli import main
from fxbatch.errors import ConflictError, DamagedDatabaseError
from fxbatch.samples import make_trades, write_csv
from fxbatch.settings import Settings
from fxbatch.workbench import Workbench
from tests.conftest import DATA

PROJECT = Path(__file__).resolve().parents[2]
MB = 1_000_000
Cli = Callable[..., tuple[int, str]]


def fingerprint(path: Path) -> tuple[str, int, int]:
    """The file's bytes, size and mtime: what must not change when a file is refused."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size, path.stat().st_mtime_ns


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed fxbatch database over 3 MB: one 60k-row batch."""
    folder = tmp_path_factory.mktemp("damaged")
    path = folder / "big.duckdb"
    with Workbench.open_local(settings=Settings(db=path)) as wb:
        wb.load(write_csv(make_trades(60_000), folder / "trades.csv"))
    assert path.stat().st_size > 3 * MB
    return path


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed fxbatch database with the bundled sample loaded and run once."""
    path = tmp_path_factory.mktemp("small") / "small.duckdb"
    with Workbench.open_local(settings=Settings(db=path)) as wb:
        batch = wb.load(DATA / "sample_trades.csv").batch_id
        wb.run(batch, success_rate=0.8)
    return path


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cli(db, "batches")`` -> (exit code, stderr), in this process."""
    for name in [n for n in os.environ if n.startswith("FXBATCH_") and n != "FXBATCH_TODAY"]:
        monkeypatch.delenv(name)

    def run(db: Path, *args: str) -> tuple[int, str]:
        code = main(["--db", str(db), *args])
        return code, capsys.readouterr().err

    return run


def assert_refused_unchanged(cli: Cli, db: Path, message: str) -> None:
    before = fingerprint(db)
    for args in (["batches"], ["load", str(DATA / "sample_trades.csv")]):
        code, err = cli(db, *args)
        assert code == 2, err
        assert message in err and str(db) in err
        assert "Traceback" not in err
    assert fingerprint(db) == before
    assert not db.with_name(db.name + ".wal").exists()


def truncated(big_db: Path, tmp_path: Path, size: int) -> Path:
    path = tmp_path / "cut.duckdb"
    path.write_bytes(big_db.read_bytes()[:size])
    return path


DAMAGED = "is damaged"
RECOVERY = "python -m fxbatch backup -o FILE"


@pytest.mark.parametrize("size", [1 * MB, 2 * MB, 3 * MB])
def test_a_database_truncated_at_some_megabytes_is_refused_at_open_and_not_written(
    cli: Cli, big_db: Path, tmp_path: Path, size: int
) -> None:
    db = truncated(big_db, tmp_path, size)
    assert_refused_unchanged(cli, db, DAMAGED)
    err = cli(db, "batches")[1]
    assert RECOVERY in err and "Could not read" in err


def test_bytes_overwritten_inside_the_trades_are_refused_at_open_and_not_written(
    cli: Cli, big_db: Path, tmp_path: Path
) -> None:
    con = duckdb.connect(str(big_db), read_only=True)
    (block, offset) = con.execute(
        "SELECT block_id, block_offset FROM pragma_storage_info('trades') "
        "WHERE column_name = 'trade_id' AND block_id >= 0 ORDER BY block_id DESC LIMIT 1"
    ).fetchall()[0]
    con.close()
    db = tmp_path / "overwritten.duckdb"
    data = bytearray(big_db.read_bytes())
    start = 3 * 4096 + block * 262_144 + offset + 64  # past the file headers, inside a trade_id segment
    data[start : start + 4096] = b"\xa5" * 4096
    db.write_bytes(bytes(data))
    assert_refused_unchanged(cli, db, DAMAGED)
    assert RECOVERY in cli(db, "batches")[1]


def test_a_database_missing_a_table_of_its_schema_version_is_refused(cli: Cli, small_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "dropped.duckdb"
    shutil.copyfile(small_db, db)
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE corrections")
    con.close()
    assert_refused_unchanged(cli, db, "table corrections is missing")


def test_a_damaged_database_is_refused_by_the_cli_with_one_message_and_no_traceback(
    big_db: Path, tmp_path: Path
) -> None:
    db = truncated(big_db, tmp_path, 2 * MB)
    before = fingerprint(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FXBATCH_")}
    proc = subprocess.run(
        [sys.executable, "-m", "fxbatch", "--db", str(db), "--json", "load", str(DATA / "sample_trades.csv")],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["code"] == "DAMAGED_DATABASE"
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert fingerprint(db) == before


@pytest.mark.parametrize("kind", ["csv", "parquet", "empty", "other duckdb"])
def test_an_existing_file_that_is_not_an_fxbatch_database_is_refused_and_left_unchanged(
    cli: Cli, tmp_path: Path, kind: str
) -> None:
    if kind == "csv":
        db = shutil.copyfile(DATA / "sample_trades.csv", tmp_path / "trades.csv")
    elif kind == "parquet":
        db = tmp_path / "trades.duckdb"  # the header decides, not the name
        make_trades(10).to_parquet(db)
    elif kind == "empty":
        db = tmp_path / "empty.duckdb"
        db.touch()
    else:
        db = tmp_path / "theirs.duckdb"
        con = duckdb.connect(str(db))
        con.execute("CREATE TABLE prices (x INTEGER)")
        con.close()
    assert_refused_unchanged(cli, db, "is not an fxbatch/DuckDB database")


def test_a_new_database_with_an_unusual_name_is_created_with_a_warning(
    cli: Cli, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "desk.sqlite"
    with caplog.at_level(logging.WARNING, logger="fxbatch.dbfile"):
        code, _ = cli(db, "batches")
    assert code == 0 and db.exists()
    assert any("usually named *.duckdb" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fxbatch.dbfile"):
        assert cli(tmp_path / "desk.duckdb", "batches")[0] == 0
    assert not caplog.records


def contents(wb: Workbench) -> tuple[Any, ...]:
    runs = [(r.run_id, r.batch_id, r.status, r.counts) for r in wb.runs()]
    return [b.model_dump() for b in wb.batches()], runs, len(wb.trades(1))


def test_a_backup_opens_with_the_same_batches_and_runs_and_goes_on_from_there(small_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "live.duckdb"
    shutil.copyfile(small_db, db)
    target = tmp_path / "backups" / "live-copy.duckdb"
    with Workbench.open_local(settings=Settings(db=db)) as wb:
        assert wb.backup(target) == target
        original = contents(wb)
    with Workbench.open_local(settings=Settings(db=target)) as copy:
        assert contents(copy) == original
        assert copy.load(DATA / "sample_trades.csv").batch_id == 2  # the id sequence came along
    assert not list(target.parent.glob(".*.tmp*"))


def test_a_backup_refuses_an_existing_file_unless_forced(small_db: Path, tmp_path: Path) -> None:
    target = tmp_path / "backup.duckdb"
    target.write_text("keep me")
    with Workbench.open_local(settings=Settings(db=small_db)) as wb:
        with pytest.raises(ConflictError, match="already exists"):
            wb.backup(target)
        assert target.read_text() == "keep me"
        with pytest.raises(ConflictError, match="the database itself"):
            wb.backup(small_db, force=True)
        wb.backup(target, force=True)
    with Workbench.open_local(settings=Settings(db=target)) as copy:
        assert len(copy.batches()) == 1


def test_the_cli_backup_command_writes_a_copy_and_restoring_it_brings_the_data_back(
    cli: Cli, small_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "desk.duckdb"
    shutil.copyfile(small_db, db)
    backup = tmp_path / "desk-backup.duckdb"
    assert main(["--db", str(db), "backup", "-o", str(backup), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backup"] == str(backup)
    code, err = cli(db, "backup", "-o", str(backup))
    assert code == 2 and "--force" in err
    db.write_bytes(db.read_bytes()[: 3 * 4096 + 1000])  # damaged ...
    with pytest.raises(DamagedDatabaseError):
        Workbench.open_local(settings=Settings(db=db))
    shutil.copyfile(backup, db)  # ... restored: stop fxbatch, copy the backup over the database
    with Workbench.open_local(settings=Settings(db=db)) as wb:
        assert len(wb.batches()) == 1 and len(wb.runs()) == 1
