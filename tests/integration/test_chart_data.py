"""The chart data on a real DuckDB: top clients by notional and by failed notional (never by id),
time bins sized to the run's length, and runs compared on money."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fxbatch import Settings, Workbench, analytics
from fxbatch.analytics import OTHER
from fxbatch.models import RunSummary
from tests.integration.run_helpers import load_generated, query


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workbench, RunSummary]]:
    """2,000 generated trades over many clients, run once at a 70% success rate (shared: read-only tests)."""
    tmp = tmp_path_factory.mktemp("chart_data")
    with Workbench.open(settings=Settings(db=tmp / "c.duckdb")) as wb:
        batch_id = load_generated(wb, Path(tmp), 2_000)
        yield wb, wb.run(batch_id, success_rate=0.7, seed=5)


def per_client(wb: Workbench, run_id: int) -> pd.DataFrame:
    """Each client's notional and failed notional, straight from the tables."""
    return (
        wb.store.cursor()
        .execute(
            "SELECT t.client_cif AS key, sum(r.amount_zar) AS total, "
            "coalesce(sum(r.amount_zar) FILTER (WHERE r.status = 'FAILED'), 0) AS failed "
            "FROM run_trades r JOIN trades t ON t.src_row = r.src_row AND t.batch_id = "
            "(SELECT batch_id FROM runs WHERE run_id = ?) WHERE r.run_id = ? GROUP BY ALL",
            [run_id, run_id],
        )
        .df()
    )


def test_top_clients_are_the_ten_with_the_most_notional_and_the_rest_add_up(
    ran: tuple[Workbench, RunSummary],
) -> None:
    wb, summary = ran
    df = wb.notional_by(summary.run_id, "client")
    named = df[df["key"] != OTHER]
    ranked = list(dict.fromkeys(named.sort_values("rank")["key"]))
    truth = per_client(wb, summary.run_id).sort_values(["total", "key"], ascending=[False, True])
    assert ranked == truth["key"].head(10).tolist()  # by money, not by CIF
    assert ranked != sorted(ranked)
    [(total,)] = query(wb, "SELECT sum(amount_zar) FROM run_trades WHERE run_id = ?", summary.run_id)
    assert df["amount_zar"].sum() == pytest.approx(total)
    assert df["trades"].sum() == summary.trades
    others = df[df["key"] == OTHER]
    assert set(others["rank"]) == {11} and int(others["keys"].iloc[0]) == len(truth) - 10
    by_status = df.groupby("status")["trades"].sum().to_dict()
    assert by_status == {k: v for k, v in summary.counts.items() if v}


def test_the_failed_view_ranks_clients_by_their_failed_notional(ran: tuple[Workbench, RunSummary]) -> None:
    wb, summary = ran
    df = analytics.notional_by(wb.store, summary.run_id, "client", top=5, failed=True)
    named = df[df["key"] != OTHER]
    ranked = list(dict.fromkeys(named.sort_values("rank")["key"]))
    truth = per_client(wb, summary.run_id).sort_values(["failed", "total"], ascending=False)
    assert ranked == truth["key"].head(5).tolist()
    failed = named[named["status"] == "FAILED"].set_index("key")["amount_zar"]
    assert failed.loc[ranked].is_monotonic_decreasing


def test_pairs_rank_by_notional_too(ran: tuple[Workbench, RunSummary]) -> None:
    wb, summary = ran
    df = wb.notional_by(summary.run_id, "pair", top=3)
    totals = df[df["key"] != OTHER].groupby("key")["amount_zar"].sum()
    ranked = list(dict.fromkeys(df[df["key"] != OTHER].sort_values("rank")["key"]))
    assert ranked == totals.sort_values(ascending=False).index.tolist()
    with pytest.raises(ValueError):
        analytics.notional_by(wb.store, summary.run_id, "colour")


def test_throughput_bins_a_short_run_finely_and_a_long_run_coarsely(ran: tuple[Workbench, RunSummary]) -> None:
    wb, summary = ran
    short = analytics.throughput(wb.store, summary.run_id)
    assert short["trades"].sum() == summary.trades
    [(span,)] = query(
        wb, "SELECT epoch(max(finished_at)) - epoch(min(finished_at)) FROM run_trades WHERE run_id = ?", summary.run_id
    )
    width = short["width_s"].iloc[0]
    assert width == analytics.time_bin_width(span) and span / width <= 40
    assert short["second"].iloc[0] == 0 and short["second"].max() < span + width

    # The same run spread over about an hour (a trade every 1.8 s): bins of two minutes.
    wb.store.cursor().execute(
        "CREATE TEMP TABLE long_run AS SELECT * REPLACE (999 AS run_id, "
        "finished_at + to_microseconds(src_row::BIGINT * 1_800_000) AS finished_at) FROM run_trades WHERE run_id = ?",
        [summary.run_id],
    )
    try:
        wb.store.cursor().execute("INSERT INTO run_trades SELECT * FROM long_run")
        long = analytics.throughput(wb.store, 999)
    finally:
        wb.store.cursor().execute("DELETE FROM run_trades WHERE run_id = 999")
        wb.store.cursor().execute("DROP TABLE long_run")
    assert long["width_s"].iloc[0] == 120 and long["trades"].sum() == summary.trades
    assert len(long) <= 40 and (long["per_s"] == long["trades"] / 120).all()


def test_trades_a_cancel_ended_count_in_neither_throughput_nor_latency(ran: tuple[Workbench, RunSummary]) -> None:
    """A cancel ends thousands of trades in one millisecond, long after the bank's last answer: as
    throughput or latency they drew a spike of 199,000 a second over a run of 37 ms."""
    wb, summary = ran
    before = (analytics.throughput(wb.store, summary.run_id), analytics.latency_histogram(wb.store, summary.run_id))
    wb.store.cursor().execute(
        "CREATE TEMP TABLE cancelled_run AS SELECT * REPLACE (998 AS run_id) FROM run_trades WHERE run_id = ?",
        [summary.run_id],
    )
    try:
        wb.store.cursor().execute(
            "INSERT INTO cancelled_run SELECT * REPLACE (998 AS run_id, 'CANCELLED' AS status, src_row + 100000 AS "
            "src_row, finished_at + INTERVAL 1 HOUR AS finished_at) FROM cancelled_run"
        )
        wb.store.cursor().execute("INSERT INTO run_trades SELECT * FROM cancelled_run")
        after = (analytics.throughput(wb.store, 998), analytics.latency_histogram(wb.store, 998))
    finally:
        wb.store.cursor().execute("DELETE FROM run_trades WHERE run_id = 998")
        wb.store.cursor().execute("DROP TABLE cancelled_run")
    for was, now in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(was, now)


def test_runs_compare_on_money_as_well_as_counts(ran: tuple[Workbench, RunSummary]) -> None:
    wb, summary = ran
    other = wb.run(summary.batch_id, success_rate=0.9, seed=6)
    table = wb.whatif.compare([summary.run_id, other.run_id]).set_index("run_id")
    for run_id in (summary.run_id, other.run_id):
        [(booked, failed)] = query(
            wb,
            "SELECT sum(amount_zar) FILTER (WHERE status = 'SUCCESS'), sum(amount_zar) FILTER (WHERE status = 'FAILED') "
            "FROM run_trades WHERE run_id = ?",
            run_id,
        )
        assert table.loc[run_id, "notional_zar_succeeded"] == pytest.approx(booked)
        assert table.loc[run_id, "notional_zar_failed"] == pytest.approx(failed)
    assert table.loc[other.run_id, "notional_zar_succeeded"] > table.loc[summary.run_id, "notional_zar_succeeded"]


def test_the_notional_breakdown_in_one_pass_equals_each_ranking_asked_for_alone(
    ran: tuple[Workbench, RunSummary],
) -> None:
    wb, summary = ran
    both = wb.notional_breakdown(summary.run_id, top=3)
    assert set(both) == {("pair", False), ("pair", True), ("client", False), ("client", True)}
    for (by, failed), frame in both.items():
        alone = analytics.notional_by(wb.store, summary.run_id, by, top=3, failed=failed)
        pd.testing.assert_frame_equal(frame, alone)
        assert OTHER in set(frame["key"])  # more than 3 keys: the "(others)" row is there to compare too
