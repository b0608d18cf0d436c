"""The audit trail after real workbench calls, on an old database, and through the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pydantic import SecretStr

from fxbatch import Settings, Workbench, audit
from fxbatch.cli import main
from fxbatch.errors import ConflictError, FxBatchError
from fxbatch.store import SCHEMA_VERSION, verify
from tests.conftest import HEADER, good_row
from tests.integration.run_helpers import database_at


def rows(wb: Workbench, action: str | None = None) -> list[dict[str, Any]]:
    """The audit rows, oldest first, with params parsed."""
    df = wb.audit_trail(action=action)
    return [{**r, "params": json.loads(r["params"])} for r in reversed(df.to_dict("records"))]


@pytest.fixture
def trades(write_file: Callable[..., Path]) -> Path:
    return write_file("\n".join([HEADER, good_row(1), good_row(2, side="HOLD"), good_row(3), good_row(4)]) + "\n")


def test_a_load_records_the_batch_file_fingerprint_and_counts_as_the_os_user(wb: Workbench, trades: Path) -> None:
    result = wb.load(trades)
    (row,) = rows(wb)
    assert (row["actor"], row["action"], row["object"], row["outcome"]) == (
        audit.os_user(), "load", f"batch:{result.batch_id}", "ok"
    )  # fmt: skip
    assert row["params"] == {"batch_id": result.batch_id, "file": "trades.csv", "fingerprint": result.fingerprint,
                             "accepted": 3, "rejected": 1, "corrected": 0}  # fmt: skip


def test_a_load_with_corrections_records_the_rows_corrected(wb: Workbench, trades: Path) -> None:
    bad_row = wb.check(trades).rejections[0].row
    result = wb.load(trades, fixes={bad_row: {"side": "SELL"}}, display_name="morning.csv")
    (row,) = rows(wb, "correct")
    assert row["object"] == f"batch:{result.batch_id}"
    assert (row["params"]["file"], row["params"]["corrected"], row["params"]["rejected"]) == ("morning.csv", 1, 0)


def test_a_refused_load_records_the_error(wb: Workbench, write_file: Callable[..., Path]) -> None:
    path = write_file("nothing,like,trades\n1,2,3\n", name="junk.csv")
    with pytest.raises(FxBatchError) as refused:
        wb.load(path)
    (row,) = rows(wb)
    assert (row["action"], row["object"]) == ("load", "file:junk.csv")
    assert row["outcome"] == f"{type(refused.value).__name__}: {refused.value.message.splitlines()[0]}"


def test_runs_retries_exports_unmasked_reads_and_deletes_are_recorded(
    wb: Workbench, trades: Path, tmp_path: Path
) -> None:
    batch = wb.load(trades).batch_id
    run = wb.run(batch, seed=7, success_rate=0.0, concurrency=4)
    (started,) = rows(wb, "run")
    assert started["object"] == f"run:{run.run_id}"
    assert started["params"] == {"run_id": run.run_id, "batch_id": batch, "bank": "simulated", "bank_url": None,
                                 "seed": 7, "success_rate": 0.0, "concurrency": 4, "max_attempts": 3,
                                 "retry_of_run": None}  # fmt: skip
    retry = wb.run(batch, retry_of_run=run.run_id, success_rate=1.0)
    (retried,) = rows(wb, "retry")
    assert (retried["object"], retried["params"]["retry_of_run"]) == (f"run:{retry.run_id}", run.run_id)

    wb.export_run(run.run_id, tmp_path / "out.csv")
    wb.export_run(run.run_id, tmp_path / "out.csv", unmask=True)
    masked, unmasked = rows(wb, "export")
    assert (masked["params"]["unmasked"], masked["params"]["path"]) == (False, str(tmp_path / "out.csv"))
    assert (unmasked["params"]["unmasked"], unmasked["params"]["path"]) == (True, str(tmp_path / "out-UNMASKED.csv"))
    assert unmasked["params"]["rows"] == 3

    wb.trades(batch)  # masked: not an audited read
    wb.trades(batch, unmask=True)
    wb.trade_detail(run.run_id, 2, unmask=True)  # the first trade, below the header
    assert [(r["object"], r["params"]["view"]) for r in rows(wb, "unmask")] == [
        (f"batch:{batch}", "trades"), (f"run:{run.run_id}", "trade")
    ]  # fmt: skip

    with pytest.raises(ConflictError):
        wb.cancel(run.run_id)  # finished: nothing to cancel, and the refusal is on record
    (cancel,) = rows(wb, "cancel")
    assert cancel["outcome"].startswith("ConflictError: ")

    wb.delete_batch(batch)
    (deleted,) = rows(wb, "delete")
    assert (deleted["object"], deleted["outcome"]) == (f"batch:{batch}", "ok")
    assert wb.verify_audit().ok


def test_no_secret_from_the_settings_ever_reaches_the_trail(tmp_path: Path, trades: Path) -> None:
    settings = Settings(db=tmp_path / "s.duckdb", bank_client_secret=SecretStr("cl13nt-s3cret"),
                        bank_password=SecretStr("d3aler-pw"))  # fmt: skip
    with Workbench.open_local(settings=settings, actor="alice") as wb:
        batch = wb.load(trades).batch_id
        run = wb.run(batch, seed=1)
        wb.export_run(run.run_id, tmp_path / "x.csv", unmask=True)
        text = wb.audit_trail().to_json(date_format="iso")
        assert set(wb.audit_trail()["actor"]) == {"alice"}
    assert "cl13nt-s3cret" not in text and "d3aler-pw" not in text


def test_an_old_database_without_the_trail_opens_and_gains_it(tmp_path: Path, trades: Path) -> None:
    path = tmp_path / "old.duckdb"
    database_at(path, SCHEMA_VERSION - 1).close()
    with Workbench.open_local(path) as wb:
        assert wb.schema_version() == SCHEMA_VERSION
        wb.load(trades)
        assert wb.verify_audit().rows == 1
    verify(path)  # the damaged-database check accepts the upgraded file


def test_the_cli_verifies_and_lists_the_trail(tmp_path: Path, trades: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "cli.duckdb"
    with Workbench.open_local(db, actor="alice") as wb:
        wb.load(trades)
        wb.load(trades)
    capsys.readouterr()
    assert main(["--db", str(db), "audit", "verify"]) == 0
    assert capsys.readouterr().out.strip() == "audit trail intact: 2 rows"

    assert main(["--db", str(db), "audit", "list", "--json", "--actor", "alice", "--limit", "1"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["seq"], listed["action"], listed["params"]["accepted"]) == (2, "load", 3)
    assert main(["--db", str(db), "audit", "list", "--action", "export"]) == 0
    assert capsys.readouterr().out.strip() == "no audit rows"

    con = duckdb.connect(str(db))
    con.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1")
    con.close()
    assert main(["--db", str(db), "audit", "verify", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["ok"], out["bad_seq"]) == (False, 1)
    assert main(["--db", str(db), "audit", "verify"]) == 1
    assert capsys.readouterr().out.startswith("audit trail broken at row 1: ")


def test_the_cli_refuses_a_bad_limit_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", str(tmp_path / "x.duckdb"), "audit", "list", "--limit", "0"]) == 2
    assert "positive whole number" in capsys.readouterr().err


def test_a_promoted_scenario_and_a_refused_resume_are_recorded(wb: Workbench, trades: Path) -> None:
    batch = wb.load(trades).batch_id
    sweep = wb.whatif.sweep(batch, [0.9], workers=1)
    run = wb.whatif.promote(sweep.sweep_id, 1)
    (promoted,) = rows(wb, "promote")
    assert promoted["object"] == f"run:{run.run_id}"
    assert (promoted["params"]["sweep_id"], promoted["params"]["scenario"]) == (sweep.sweep_id, 1)
    assert promoted["params"]["success_rate"] == 0.9

    with pytest.raises(FxBatchError):
        wb.resume(run.run_id)  # finished: nothing to resume
    (resumed,) = rows(wb, "resume")
    assert resumed["object"] == f"run:{run.run_id}" and resumed["outcome"] != "ok"


def test_a_backup_carries_the_trail_head_and_checks_intact(tmp_path: Path, trades: Path) -> None:
    with Workbench.open_local(tmp_path / "desk.duckdb") as wb:
        wb.load(trades)
        copy = wb.backup(tmp_path / "backup.duckdb")
    assert (tmp_path / "backup.duckdb.audit-head").exists()
    with Workbench.open_local(copy) as restored:
        assert restored.verify_audit().ok


def _append_behind_fxbatchs_back(wb: Workbench) -> int:
    """A correctly chained row written straight into the database (not through fxbatch)."""
    cur = wb.store.cursor()
    seq, prev = cur.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    at = datetime(2026, 11, 30, 9, 0)
    params = json.dumps({"approval_id": 1, "reason": None}, sort_keys=True)
    digest = audit.row_hash(seq + 1, at, "pat@desk.example", "run.approve", "approval:1", params, "ok", prev)
    cur.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [seq + 1, at, "pat@desk.example", "run.approve", "approval:1", params, "ok", prev, digest])  # fmt: skip
    return int(seq) + 1


def test_a_row_appended_behind_fxbatchs_back_shows_and_stays_shown_after_later_rows(tmp_path: Path) -> None:
    with Workbench.open_local(settings=Settings(db=tmp_path / "x.duckdb")) as wb:
        audit.record(wb.store, "ana@desk.example", "run.request", "approval:1", {})
        assert wb.verify_audit().ok
        forged = _append_behind_fxbatchs_back(wb)
        check = wb.verify_audit()
        assert not check.ok and check.bad_seq == forged
        assert f"row {forged} was added without fxbatch recording it" in check.message
        audit.record(wb.store, "root", "load", "file:x", {})  # a genuine row after it does not vouch for it
        check = wb.verify_audit()
        assert not check.ok and check.bad_seq == forged and "behind its back" in check.message


def test_a_crash_between_a_row_and_its_head_leaves_a_trail_that_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Workbench.open_local(settings=Settings(db=tmp_path / "x.duckdb")) as wb:
        audit.record(wb.store, "ana@desk.example", "load", "batch:1", {})
        real = audit._write_head

        def dies_after_the_row(store: Any, seq: int, digest: str, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("upcoming") is None:  # the head after the commit: the process is gone first
                raise KeyboardInterrupt("killed")
            real(store, seq, digest, *args, **kwargs)

        monkeypatch.setattr(audit, "_write_head", dies_after_the_row)
        with pytest.raises(KeyboardInterrupt):
            audit.record(wb.store, "ana@desk.example", "export", "run:1", {})
        monkeypatch.setattr(audit, "_write_head", real)
        assert wb.verify_audit().ok, "the head said which row came next: fxbatch wrote it"
        audit.record(wb.store, "ana@desk.example", "export", "run:2", {})
        assert wb.verify_audit().ok and wb.verify_audit().rows == 3


def test_rows_cut_from_the_end_stay_found_after_later_rows_unless_restored_with_the_head(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    with Workbench.open_local(settings=Settings(db=db)) as wb:
        for n in range(3):
            audit.record(wb.store, "ana@desk.example", "export", f"run:{n}", {})
        wb.backup(tmp_path / "copy.duckdb")  # with its head file
        wb.store.cursor().execute("DELETE FROM audit_log WHERE seq >= 3")  # the newest rows cut
        audit.record(wb.store, "root", "load", "file:x", {})
        check = wb.verify_audit()
        assert not check.ok and "were gone when fxbatch next wrote row 3" in check.message
    restored = tmp_path / "restored.duckdb"
    for suffix in ("", audit.HEAD_SUFFIX):  # a restore copies the backup and its head file
        (tmp_path / f"restored.duckdb{suffix}").write_bytes((tmp_path / f"copy.duckdb{suffix}").read_bytes())
    with Workbench.open_local(settings=Settings(db=restored)) as again:
        audit.record(again.store, "root", "load", "file:y", {})
        assert again.verify_audit().ok


def test_two_workbenches_on_one_file_share_the_trails_lock(tmp_path: Path) -> None:
    from fxbatch.store import Store

    first, second = Store(tmp_path / "x.duckdb"), Store(tmp_path / "." / "x.duckdb")
    try:
        assert audit._lock(first) is audit._lock(second)
    finally:
        first.close()
        second.close()


def test_a_row_written_while_a_backup_is_taken_does_not_break_the_restored_trail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Workbench.open_local(settings=Settings(db=tmp_path / "x.duckdb")) as wb:
        audit.record(wb.store, "ana@desk.example", "load", "batch:1", {})
        real = wb.store.backup

        def busy_backup(path: Path, *, force: bool = False) -> Path:
            copy = real(path, force=force)
            # Another request writes a row between the copy and its head, unless the trail's lock
            # holds it back (then it writes after the head is copied, as the lock makes it wait).
            lock = audit.holding(wb.store)
            if lock.acquire(blocking=False):
                lock.release()
                audit.record(wb.store, "bob@desk.example", "export", "run:1", {})
            return copy

        monkeypatch.setattr(wb.store, "backup", busy_backup)
        wb.backup(tmp_path / "copy.duckdb")
    restored = tmp_path / "restored.duckdb"
    for suffix in ("", audit.HEAD_SUFFIX):
        (tmp_path / f"restored.duckdb{suffix}").write_bytes((tmp_path / f"copy.duckdb{suffix}").read_bytes())
    with Workbench.open_local(settings=Settings(db=restored)) as again:
        audit.record(again.store, "root", "load", "file:y", {})
        assert again.verify_audit().ok, again.verify_audit().message
