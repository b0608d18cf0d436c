"""The audit trail's chain, redaction and concurrency on an in-memory store."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from fxbatch import audit
from fxbatch.errors import ConflictError
from fxbatch.store import Store


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store(None)
    yield s
    s.close()


def _fill(store: Store, n: int = 5) -> None:
    for i in range(1, n + 1):
        audit.record(store, "alice", "load", f"batch:{i}", {"batch_id": i})


def test_an_untouched_trail_is_intact_with_its_row_count(store: Store) -> None:
    assert audit.verify(store).message == "audit trail intact: 0 rows"
    _fill(store)
    check = audit.verify(store)
    assert (check.ok, check.rows, check.bad_seq) == (True, 5, None)
    assert check.message == "audit trail intact: 5 rows"


def test_each_row_chains_to_the_one_before_from_the_genesis_hash(store: Store) -> None:
    _fill(store, 3)
    rows = store.cursor().execute("SELECT seq, prev_hash, hash FROM audit_log ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[0][1] == audit.GENESIS
    assert rows[1][1] == rows[0][2] and rows[2][1] == rows[1][2]


def test_verify_names_an_edited_row(store: Store) -> None:
    _fill(store)
    store.cursor().execute("""UPDATE audit_log SET params = '{"batch_id": 99}' WHERE seq = 3""")
    check = audit.verify(store)
    assert (check.ok, check.bad_seq) == (False, 3)
    assert "changed" in (check.reason or "")
    assert check.message.startswith("audit trail broken at row 3:")


def test_verify_names_the_row_after_a_deleted_one(store: Store) -> None:
    _fill(store)
    store.cursor().execute("DELETE FROM audit_log WHERE seq = 2")
    check = audit.verify(store)
    assert (check.ok, check.bad_seq) == (False, 3)
    assert "row 2 missing: removed" in (check.reason or "")


def test_verify_names_the_row_after_one_inserted_with_a_forged_hash(store: Store) -> None:
    _fill(store)
    cur = store.cursor()
    cur.execute("UPDATE audit_log SET seq = seq + 100 WHERE seq >= 3")
    cur.execute("UPDATE audit_log SET seq = seq - 99 WHERE seq >= 103")  # 3, 4, 5 -> 4, 5, 6
    (prev,) = cur.execute("SELECT hash FROM audit_log WHERE seq = 2").fetchall()[0]
    at = datetime(2026, 1, 1, 12, 0)
    forged = audit.row_hash(3, at, "mallory", "delete", "batch:1", "{}", "ok", prev)
    cur.execute(
        "INSERT INTO audit_log VALUES (3, ?, 'mallory', 'delete', 'batch:1', '{}', 'ok', ?, ?)", [at, prev, forged]
    )
    # The forger also rehashes the renumbered rows; their links still point past the new row.
    for row in cur.execute(f"SELECT {', '.join(audit.COLUMNS[:-1])} FROM audit_log WHERE seq >= 4").fetchall():
        cur.execute("UPDATE audit_log SET hash = ? WHERE seq = ?", [audit.row_hash(*row), row[0]])
    check = audit.verify(store)
    assert (check.ok, check.bad_seq) == (False, 4)
    assert "does not chain to row 3" in (check.reason or "")


def test_verify_names_an_inserted_row_whose_hash_was_not_recomputed(store: Store) -> None:
    _fill(store, 2)
    (prev,) = store.cursor().execute("SELECT hash FROM audit_log WHERE seq = 2").fetchall()[0]
    store.cursor().execute(
        "INSERT INTO audit_log VALUES (3, now()::TIMESTAMP, 'mallory', 'run', 'batch:1', '{}', 'ok', ?, 'f00')", [prev]
    )
    assert audit.verify(store).bad_seq == 3


def test_params_never_hold_a_secret_or_url_credentials() -> None:
    params = {
        "client_secret": "s3cr3t",
        "Password": "hunter2",
        "token": "abc",
        "nested": {"api_key": "k", "bank_url": "https://dealer:pw@bank.example/api", "ok": 1},
        "urls": ["http://u:p@h:8600/x", "http://plain:8600"],
        "hidden": SecretStr("x"),
    }
    out = audit.redact(params)
    assert out == {
        "client_secret": "***",
        "Password": "***",
        "token": "***",
        "nested": {"api_key": "***", "bank_url": "https://bank.example/api", "ok": 1},
        "urls": ["http://h:8600/x", "http://plain:8600"],
        "hidden": "***",
    }


def test_a_recorded_row_stores_redacted_params(store: Store) -> None:
    audit.record(store, "alice", "run", "run:1", {"password": "hunter2", "bank_url": "http://a:b@bank:1"})
    text = str(store.cursor().execute("SELECT params FROM audit_log").fetchall()[0][0])
    assert "hunter2" not in text and "a:b@" not in text
    assert audit.verify(store).ok


def test_a_failed_action_records_its_error_class_and_message_and_re_raises(store: Store) -> None:
    with pytest.raises(ConflictError), audit.audited(store, "bob", "cancel", "run:4", run_id=4):
        raise ConflictError("Run 4 is SUCCEEDED; there is nothing to cancel.")
    row = audit.read(store).iloc[0]
    assert (row["action"], row["object"], row["actor"]) == ("cancel", "run:4", "bob")
    assert row["outcome"] == "ConflictError: Run 4 is SUCCEEDED; there is nothing to cancel."


def test_appends_from_many_threads_keep_one_unbroken_chain(store: Store) -> None:
    start = threading.Barrier(8)

    def append(worker: int) -> None:
        start.wait()
        try:
            for i in range(25):
                audit.record(store, f"user{worker}", "export", f"run:{i}")
        finally:
            store.release_cursor()

    threads = [threading.Thread(target=append, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check = audit.verify(store)
    assert (check.ok, check.rows) == (True, 200)
    seqs = [r[0] for r in store.cursor().execute("SELECT seq FROM audit_log ORDER BY seq").fetchall()]
    assert seqs == list(range(1, 201))


def test_read_filters_by_actor_action_time_and_limit_newest_first(store: Store) -> None:
    audit.record(store, "alice", "load", "batch:1")
    audit.record(store, "bob", "run", "run:1")
    audit.record(store, "alice", "run", "run:2")
    assert list(audit.read(store)["seq"]) == [3, 2, 1]
    assert list(audit.read(store, actor="alice")["seq"]) == [3, 1]
    assert list(audit.read(store, action="run", limit=1)["object"]) == ["run:2"]
    now = datetime.now(UTC)
    assert len(audit.read(store, since=now - timedelta(days=1), until=now + timedelta(days=1))) == 3
    assert len(audit.read(store, since=now + timedelta(days=1))) == 0


def test_acting_as_records_a_signed_in_user_instead_of_the_default(store: Store) -> None:
    with audit.acting_as("carol@desk.example"):
        audit.record(store, "root", "unmask", "batch:1")
    audit.record(store, "root", "unmask", "batch:1")
    assert list(audit.read(store)["actor"]) == ["root", "carol@desk.example"]


def test_the_os_user_is_never_empty() -> None:
    assert audit.os_user()


@pytest.fixture
def file_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "trail.duckdb")
    yield s
    s.close()


def test_the_head_file_beside_the_database_names_the_newest_row(file_store: Store) -> None:
    _fill(file_store, 3)
    path = audit.head_path(file_store)
    assert path is not None and path.name == "trail.duckdb.audit-head"
    newest = file_store.cursor().execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchall()[0]
    assert json.loads(path.read_text()) == {"seq": newest[0], "hash": newest[1]}
    assert audit.verify(file_store).message == "audit trail intact: 3 rows"


def test_rows_cut_from_the_end_are_found_by_the_head_file(file_store: Store) -> None:
    _fill(file_store, 5)
    file_store.cursor().execute("DELETE FROM audit_log WHERE seq >= 4")
    check = audit.verify(file_store)
    assert (check.ok, check.bad_seq) == (False, 4)
    assert "rows 4-5 missing: removed from the end" in (check.reason or "")


def test_a_trail_rewritten_with_fresh_hashes_is_found_by_the_head_file(file_store: Store) -> None:
    _fill(file_store, 3)
    cur = file_store.cursor()
    rows = cur.execute(f"SELECT {', '.join(audit.COLUMNS)} FROM audit_log ORDER BY seq").fetchall()
    prev = audit.GENESIS
    for seq, at, actor, action, obj, _params, outcome, _prev, _digest in rows:  # a forger recomputes every hash
        params = '{"batch_id": 0}'
        digest = audit.row_hash(seq, at, actor, action, obj, params, outcome, prev)
        cur.execute(
            "UPDATE audit_log SET params = ?, prev_hash = ?, hash = ? WHERE seq = ?", [params, prev, digest, seq]
        )
        prev = digest
    check = audit.verify(file_store)
    assert (check.ok, check.bad_seq) == (False, 3)
    assert "rewritten" in (check.reason or "")


def test_an_unreadable_head_file_is_reported(file_store: Store) -> None:
    _fill(file_store, 2)
    path = audit.head_path(file_store)
    assert path is not None
    path.write_text("not json")
    check = audit.verify(file_store)
    assert not check.ok and check.message.startswith("audit trail broken: the head file")


def test_a_deleted_head_file_is_reported_once_the_database_keeps_one(file_store: Store) -> None:
    _fill(file_store, 2)
    audit.ensure_head(file_store)  # what opening a workbench does
    path = audit.head_path(file_store)
    assert path is not None
    path.unlink()
    check = audit.verify(file_store)
    assert not check.ok and "is missing" in (check.reason or "")


def test_a_trail_from_before_head_files_gets_its_head_once_at_open(file_store: Store) -> None:
    _fill(file_store, 3)
    path = audit.head_path(file_store)
    assert path is not None
    path.unlink()  # as a database written before head files existed
    audit.ensure_head(file_store)
    assert json.loads(path.read_text())["seq"] == 3
    assert audit.verify(file_store).ok
