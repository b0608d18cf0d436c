"""Run review queries and figures on a real DuckDB: aggregates add up, filters and paging, masking, timelines."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import pytest

from fxbatch import Workbench, analytics, charts
from fxbatch.errors import ConflictError, NotFoundError
from fxbatch.models import RunSummary
from tests.integration.run_helpers import load_sample, query


@dataclass
class Ran:
    wb: Workbench
    summary: RunSummary

    @property
    def run_id(self) -> int:
        return self.summary.run_id


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    """The 200-trade sample run once at a 70% success rate, with a little latency (shared: read-only tests)."""
    from fxbatch import Settings

    db = tmp_path_factory.mktemp("analytics") / "a.duckdb"
    with Workbench.open(settings=Settings(db=db)) as wb:
        batch_id = load_sample(wb)
        yield Ran(wb, wb.run(batch_id, success_rate=0.7, latency_ms=1, seed=3))


def test_outcome_counts_sum_to_the_runs_trades_and_match_the_summary(ran: Ran) -> None:
    counts = analytics.outcome_counts(ran.wb.store, ran.run_id)
    assert counts["trades"].sum() == ran.summary.trades == 200
    by_status = dict(zip(counts["status"], counts["trades"], strict=True))
    assert by_status == {k: v for k, v in ran.summary.counts.items() if v}
    assert by_status["FAILED"] > 0 and by_status["SUCCESS"] > 0
    assert counts["share"].sum() == pytest.approx(1.0)


def test_failure_pareto_ranks_reasons_and_its_cumulative_share_ends_at_100_percent(ran: Ran) -> None:
    pareto = analytics.failure_pareto(ran.wb.store, ran.run_id)
    assert pareto["trades"].sum() == ran.summary.counts["FAILED"]
    assert pareto["trades"].is_monotonic_decreasing
    assert pareto["cumulative_share"].is_monotonic_increasing
    assert pareto["cumulative_share"].iloc[-1] == pytest.approx(1.0)
    assert dict(zip(pareto["failure_code"], pareto["trades"], strict=True)) == ran.summary.failure_reasons


def test_outcomes_by_pair_cover_every_trade_and_keep_only_the_top_n_pairs(ran: Ran) -> None:
    by_pair = analytics.outcomes_by(ran.wb.store, ran.run_id, "pair", top=3)
    assert by_pair["trades"].sum() == 200
    keys = list(dict.fromkeys(by_pair["key"]))
    assert len(keys) == 4 and keys[-1] == analytics.OTHER
    per_pair = query(
        ran.wb,
        "SELECT currency_pair, count(*) FROM trades WHERE batch_id = ? GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3",
        ran.summary.batch_id,
    )
    assert keys[:3] == [p for p, _ in per_pair]
    totals = by_pair.groupby("key", sort=False)["trades"].sum()
    assert [totals[p] for p, _ in per_pair] == [n for _, n in per_pair]


def test_outcomes_by_client_group_on_the_cif(ran: Ran) -> None:
    by_client = analytics.outcomes_by(ran.wb.store, ran.run_id, "client", top=100)
    assert by_client["trades"].sum() == 200
    assert analytics.OTHER not in set(by_client["key"])
    assert all(k.isdigit() for k in by_client["key"])
    with pytest.raises(ValueError):
        analytics.outcomes_by(ran.wb.store, ran.run_id, "colour")


def test_notional_by_outcome_adds_up_to_the_runs_notional_in_zar(ran: Ran) -> None:
    notional = analytics.notional_by_outcome(ran.wb.store, ran.run_id)
    [(expected,)] = query(ran.wb, "SELECT sum(amount_zar) FROM run_trades WHERE run_id = ?", ran.run_id)
    assert notional["amount_zar"].sum() == pytest.approx(expected)
    assert expected > 0
    assert notional.set_index("status")["trades"].to_dict() == {
        k: v for k, v in ran.summary.counts.items() if v and k != "PENDING"
    }


def test_latency_histogram_counts_every_trade_in_bins_that_tile_the_range(ran: Ran) -> None:
    hist = analytics.latency_histogram(ran.wb.store, ran.run_id, bins=10)
    assert hist["trades"].sum() == 200
    assert len(hist) <= 10
    assert (hist["to_ms"] > hist["from_ms"]).all()
    [(lo, hi)] = query(
        ran.wb,
        "SELECT min(epoch_ms(finished_at) - epoch_ms(executing_at)), max(epoch_ms(finished_at) - epoch_ms(executing_at)) "
        "FROM run_trades WHERE run_id = ?",
        ran.run_id,
    )
    assert hist["from_ms"].iloc[0] == pytest.approx(lo)
    assert hist["to_ms"].iloc[-1] >= hi - 1e-6
    assert lo >= 1  # latency_ms=1: every trade took at least one bank call


def test_throughput_counts_every_finished_trade_once(ran: Ran) -> None:
    tp = analytics.throughput(ran.wb.store, ran.run_id)
    assert tp["trades"].sum() == 200
    assert tp["second"].is_monotonic_increasing and tp["second"].iloc[0] == 0


def test_trades_page_pages_in_row_order_and_counts_every_match(ran: Ran) -> None:
    store = ran.wb.store
    first, total = analytics.trades_page(store, ran.run_id, limit=50)
    second, total2 = analytics.trades_page(store, ran.run_id, limit=50, offset=50)
    last, _ = analytics.trades_page(store, ran.run_id, limit=50, offset=190)
    assert total == total2 == 200
    assert len(first) == len(second) == 50 and len(last) == 10
    rows = first["row"].tolist() + second["row"].tolist()
    assert rows == sorted(rows) and len(set(rows)) == 100


def test_trades_page_filters_by_status_reason_pair_client_and_text(ran: Ran) -> None:
    store, run_id = ran.wb.store, ran.run_id
    failed, n_failed = analytics.trades_page(store, run_id, analytics.TradeFilter(statuses=["FAILED"]), limit=500)
    assert n_failed == ran.summary.counts["FAILED"] == len(failed)
    assert set(failed["status"]) == {"FAILED"}

    code, n = next(iter(ran.summary.failure_reasons.items()))
    by_code, total = analytics.trades_page(store, run_id, analytics.TradeFilter(failure_codes=[code]), limit=500)
    assert total == n == len(by_code) and set(by_code["failure_code"]) == {code}

    pair_rows, pair_total = analytics.trades_page(store, run_id, analytics.TradeFilter(pair="EUR/ZAR"), limit=500)
    [(eur,)] = query(ran.wb, "SELECT count(*) FROM trades WHERE batch_id = ? AND currency_pair = 'EUR/ZAR'",
                     ran.summary.batch_id)  # fmt: skip
    assert pair_total == eur > 0 and set(pair_rows["currency_pair"]) == {"EUR/ZAR"}

    cif = str(failed["client_cif"].iloc[0])
    both, total = analytics.trades_page(
        store, run_id, analytics.TradeFilter(statuses=["FAILED"], client=cif), limit=500
    )
    assert total == len(both) > 0 and set(both["client_cif"]) == {cif} and set(both["status"]) == {"FAILED"}

    trade_id = str(failed["trade_id"].iloc[0])
    one, total = analytics.trades_page(store, run_id, analytics.TradeFilter(text=trade_id.lower()), limit=500)
    assert total == 1 and one["trade_id"].tolist() == [trade_id]
    _, none = analytics.trades_page(store, run_id, analytics.TradeFilter(text="no such trade anywhere"))
    assert none == 0


def test_account_numbers_show_only_their_last_four_digits_unless_unmasked(ran: Ran) -> None:
    masked, _ = analytics.trades_page(ran.wb.store, ran.run_id, limit=20)
    clear, _ = analytics.trades_page(ran.wb.store, ran.run_id, limit=20, unmask=True)
    for hidden, shown in zip(masked["account_number"], clear["account_number"], strict=True):
        assert shown.isdigit() and len(shown) >= 5
        assert hidden[-4:] == shown[-4:]
        assert not any(c.isdigit() for c in hidden[:-4]) and len(hidden) == len(shown)
    detail = analytics.trade_detail(ran.wb.store, ran.run_id, int(masked["row"].iloc[0]))
    assert detail["account_number"] == masked["account_number"].iloc[0]


def test_a_failed_trades_detail_shows_its_timeline_and_error(ran: Ran) -> None:
    failed, _ = analytics.trades_page(ran.wb.store, ran.run_id, analytics.TradeFilter(statuses=["FAILED"]), limit=1)
    detail = analytics.trade_detail(ran.wb.store, ran.run_id, int(failed["row"].iloc[0]))
    assert detail["status"] == "FAILED" and detail["failure_code"] and detail["failure_message"]
    timeline = detail["timeline"]
    assert timeline["stage"].iloc[0] == "EXECUTING" and timeline["stage"].iloc[-1] == "FAILED"
    assert timeline["ms_since_start"].is_monotonic_increasing and timeline["ms_since_start"].iloc[0] == 0


def test_a_successful_trades_detail_has_its_quote_and_deal(ran: Ran) -> None:
    ok, _ = analytics.trades_page(ran.wb.store, ran.run_id, analytics.TradeFilter(statuses=["SUCCESS"]), limit=1)
    detail = analytics.trade_detail(ran.wb.store, ran.run_id, int(ok["row"].iloc[0]))
    assert detail["failure_code"] is None
    assert detail["quote_id"] and detail["quote_rate"] > 0 and detail["deal_rate"] > 0
    assert detail["deal_transaction_id"].endswith(f"-{detail['row']:012d}")  # the run's UUID, then the row
    assert detail["timeline"]["stage"].tolist() == ["EXECUTING", "QUOTED", "SUCCESS"]


def test_unknown_runs_and_rows_are_not_found(ran: Ran) -> None:
    with pytest.raises(NotFoundError):
        analytics.outcome_counts(ran.wb.store, 999)
    with pytest.raises(NotFoundError):
        analytics.trade_detail(ran.wb.store, ran.run_id, 999_999)


def test_a_retry_run_reviews_only_the_trades_it_retried(ran: Ran) -> None:
    retry = ran.wb.run(ran.summary.batch_id, retry_of_run=ran.run_id, success_rate=1.0)
    counts = analytics.outcome_counts(ran.wb.store, retry.run_id)
    assert counts["trades"].sum() == ran.summary.counts["FAILED"]
    _, total = analytics.trades_page(ran.wb.store, retry.run_id)
    assert total == ran.summary.counts["FAILED"]


def test_every_chart_is_a_figure_with_data_and_empty_inputs_say_so(ran: Ran) -> None:
    store, run_id = ran.wb.store, ran.run_id
    figures = [
        charts.outcome_chart(analytics.outcome_counts(store, run_id)),
        charts.pareto_chart(analytics.failure_pareto(store, run_id)),
        charts.outcomes_by_chart(analytics.outcomes_by(store, run_id, "pair"), "currency pair"),
        charts.notional_chart(analytics.notional_by_outcome(store, run_id)),
        charts.latency_chart(analytics.latency_histogram(store, run_id)),
        charts.throughput_chart(analytics.throughput(store, run_id)),
    ]
    for fig in figures:
        assert isinstance(fig, go.Figure) and fig.data
    pareto = charts.pareto_chart(analytics.failure_pareto(store, run_id))
    assert list(pareto.data[1].y)[-1] == pytest.approx(1.0)
    empty = charts.pareto_chart(pd.DataFrame(columns=["failure_code", "trades", "share", "cumulative_share"]))
    assert not empty.data and "no failed trades" in empty.layout.annotations[0].text


# -- deleting a batch ---------------------------------------------------------------------------


def test_deleting_a_batch_removes_its_trades_runs_and_records_and_leaves_others(wb: Workbench) -> None:
    keep = load_sample(wb)
    gone = load_sample(wb)
    kept_run = wb.run(keep, success_rate=0.5).run_id
    first = wb.run(gone, success_rate=0.5)
    wb.run(gone, retry_of_run=first.run_id)

    wb.delete_batch(gone)

    assert [b.batch_id for b in wb.batches()] == [keep]
    assert [r.run_id for r in wb.runs()] == [kept_run]
    for table in ("trades", "rejections", "runs"):
        assert query(wb, f"SELECT count(*) FROM {table} WHERE batch_id = ?", gone) == [(0,)]
    assert query(wb, "SELECT count(DISTINCT run_id) FROM run_trades") == [(1,)]
    assert query(wb, "SELECT count(*) FROM run_trades WHERE run_id = ?", kept_run) == [(200,)]
    with pytest.raises(NotFoundError):
        wb.delete_batch(gone)


def test_a_batch_cannot_be_deleted_while_one_of_its_runs_executes(wb: Workbench) -> None:
    batch_id = load_sample(wb)
    job = wb.start_run(batch_id, latency_ms=20, concurrency=1)
    try:
        with pytest.raises(ConflictError, match="cancel the run"):
            wb.delete_batch(batch_id)
        assert [(r.run_id, r.batch_id) for r in wb.active_runs()] == [(job.run_id, batch_id)]
    finally:
        wb.cancel(job.run_id)
        job.wait(60)
    assert wb.batch(batch_id).trades == 200
    wb.delete_batch(batch_id)
    assert wb.batches() == []
    assert wb.active_runs() == []


def test_a_batch_cannot_be_deleted_while_a_sweep_of_it_runs(wb: Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from fxbatch import workbench

    batch_id = load_sample(wb)
    go = threading.Event()
    sweep = workbench.run_sweep

    def held(*args: object, **kwargs: object) -> object:
        assert go.wait(60)
        return sweep(*args, **kwargs)

    monkeypatch.setattr(workbench, "run_sweep", held)
    job = wb.whatif.start_sweep(batch_id, [0.5, 0.9], seeds=2, workers=1)
    try:
        with pytest.raises(ConflictError, match=f"sweep {job.sweep_id}"):
            wb.delete_batch(batch_id)
    finally:
        go.set()
        assert job.wait(60)
    assert job.error is None and wb.whatif.get(job.sweep_id).batch_id == batch_id
    wb.delete_batch(batch_id)
    assert wb.batches() == []
