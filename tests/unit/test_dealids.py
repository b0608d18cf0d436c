"""Deal transaction ids: UUIDs made in bulk from a run's prefix and the trade's row."""

from __future__ import annotations

import uuid

import duckdb
import pyarrow as pa

from fxbatch.bank import dealids


def test_a_runs_deal_ids_are_version_4_uuids_one_per_row_made_in_bulk() -> None:
    prefix = dealids.new_prefix()
    rows = pa.array([0, 1, 7, 123_456, 2_147_483_647], type=pa.int32())
    ids = dealids.deal_ids(prefix, rows).to_pylist()
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 4 and str(u) == i for u, i in zip(parsed, ids, strict=True))
    assert len(set(ids)) == len(ids)
    assert dealids.deal_ids(prefix, rows).to_pylist() == ids  # the same on every retry and resume


def test_two_runs_never_share_a_deal_id() -> None:
    rows = pa.array(range(100), type=pa.int32())
    a, b = dealids.deal_ids(dealids.new_prefix(), rows), dealids.deal_ids(dealids.new_prefix(), rows)
    assert not set(a.to_pylist()) & set(b.to_pylist())


def test_sql_makes_the_same_ids_for_new_and_old_prefixes() -> None:
    for prefix in (dealids.new_prefix(), "FXB-ab12cd34-7-"):
        expected = dealids.deal_ids(prefix, pa.array([5, 1234], type=pa.int32())).to_pylist()
        sql = dealids.deal_id_sql("p", "r")
        got = duckdb.sql(f"SELECT {sql} FROM (VALUES (?, 5), (?, 1234)) t(p, r)", params=[prefix, prefix]).fetchall()
        assert [g[0] for g in got] == expected


def test_an_old_runs_ids_keep_their_form() -> None:
    assert dealids.deal_ids("FXB-ab12cd34-7-", pa.array([5])).to_pylist() == ["FXB-ab12cd34-7-5"]


def test_split_finds_the_prefix_of_an_id_of_either_form() -> None:
    prefix = dealids.new_prefix()
    (one,) = dealids.deal_ids(prefix, pa.array([42])).to_pylist()
    assert dealids.split(one, 42) == prefix
    assert dealids.split(one, 43) is None
    assert dealids.split("FXB-ab12-3-7", 7) == "FXB-ab12-3-"
    assert dealids.split("other", 7) is None
