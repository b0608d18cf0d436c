"""The desk's spread income in the app: the run page's metric, charts, trades and trade detail, the
trading date's effect on value dates, and income earned and lost on the What-if page (AppTest)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Dataframe

from fxbatch import Settings, Workbench
from fxbatch.money import zar_compact
from tests.app.test_run_pages import app_workbench, finished_run, metrics, ok, tables
from tests.conftest import HEADER, TODAY, good_row

OpenPage = Callable[[str], AppTest]


def _plain(value: Any) -> Any:
    """Plotly's JSON writes numeric arrays as typed arrays ({dtype, bdata}): turn them back into lists."""
    if isinstance(value, dict) and set(value) >= {"dtype", "bdata"}:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def figures(at: AppTest) -> dict[str, dict[str, Any]]:
    """The page's plotly figures by title."""
    specs = [_plain(json.loads(c.proto.spec)) for c in at.get("plotly_chart")]
    return {s["layout"]["title"]["text"]: s for s in specs}


def labels(table: Dataframe) -> dict[str, str]:
    """Column name -> the label the analyst sees (from the table's column_config)."""
    return {name: cfg.get("label", name) for name, cfg in json.loads(table.proto.columns).items()}


def table_with(at: AppTest, column: str) -> Dataframe:
    """The one read-only table holding ``column`` (a st.dataframe without selections has no key in AppTest)."""
    [table] = [d for d in at.dataframe if d.editing_mode == "read_only" and column in d.value.columns]
    return table


def test_a_finished_run_shows_its_spread_income_charts_and_per_trade_rates(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    run_id = finished_run(success_rate=0.7)
    wb = app_workbench()
    summary = wb.run_summary(run_id)
    assert summary.spread_income_zar and summary.spread_income_zar > 0
    at = ok(open_page("pages/run.py"))

    assert metrics(at)["Spread income"] == zar_compact(summary.spread_income_zar)
    assert f"R {summary.spread_income_zar:,.2f}" in next(m.help for m in at.metric if m.label == "Spread income")
    assert f"Trading date {summary.trade_date:%Y-%m-%d}." in [c.value for c in at.caption]  # nothing moved

    shown = figures(at)
    by_client = shown["Spread income by client (top 10)"]["data"][0]
    expected = wb.income_by(run_id, "client")
    assert by_client["y"] == expected["key"].tolist()  # largest first, as income_by ranks them
    assert by_client["x"] == pytest.approx(expected["spread_income_zar"].tolist())
    assert by_client["x"] == sorted(by_client["x"], reverse=True)
    by_pair = shown["Spread income by pair"]["data"][0]
    assert sum(by_pair["x"]) == pytest.approx(summary.spread_income_zar, abs=0.01)
    assert shown["Spread income by pair"]["layout"]["xaxis"]["range"][0] == 0

    trades = table_with(at, "trade_id")
    assert {
        k: labels(trades)[k] for k in ("spread_pips", "quote_rate", "deal_rate", "spread_income_zar")
    } == {"spread_pips": "Spread (pips)", "quote_rate": "Bank quote", "deal_rate": "Client rate",
          "spread_income_zar": "Income (ZAR)"}  # fmt: skip
    page = trades.value
    failed = page[page["status"] == "Failed"]
    assert not failed.empty and failed["spread_income_zar"].isna().all() and failed["spread_pips"].notna().all()

    ok(at.multiselect(key="f_status").select("SUCCESS").run())
    first = tables(at)[0].iloc[0]
    d = wb.trade_detail(run_id, int(first["row"]))
    assert d["spread_income_zar"] is not None and d["spread_income_zar"] > 0
    detail = " ".join(m.value for m in at.markdown)
    assert f"**Income** R {d['spread_income_zar']:,.2f}" in detail
    assert f"**Bank quote** {d['quote_rate']:.6f}" in detail and f"**Client rate** {d['deal_rate']:.6f}" in detail
    assert f"**Spread** {d['spread_pips']:,} pips" in detail


def test_a_run_made_before_income_was_recorded_says_so(db_path: Path, open_page: OpenPage) -> None:
    open_page("pages/home.py")
    run_id = finished_run()
    cur = app_workbench().store.cursor()  # the columns a run made before migration v6 leaves empty
    cur.execute("UPDATE runs SET spread_income_zar = NULL, trade_date = NULL WHERE run_id = ?", [run_id])
    cur.execute("UPDATE run_trades SET spread_income_zar = NULL WHERE run_id = ?", [run_id])
    at = ok(open_page("pages/run.py"))
    assert metrics(at)["Spread income"] == "not recorded"
    assert not [c.value for c in at.caption if c.value.startswith("Trading date")]
    shown = figures(at)
    for title in ("Spread income by client (top 10)", "Spread income by pair"):
        assert not shown[title]["data"]
        assert "no spread income" in shown[title]["layout"]["annotations"][0]["text"]


def test_the_run_page_says_which_value_dates_its_trading_date_moved_and_which_trades_were_not_sent(
    db_path: Path, open_page: OpenPage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trading_day = date(2026, 12, 3)  # a Thursday, three days after the batch was loaded (TODAY, a Monday)
    monkeypatch.setenv("FXBATCH_TODAY", trading_day.isoformat())
    open_page("pages/home.py")
    csv = tmp_path / "monday.csv"
    rows = [
        good_row(1, delivery="SPOT"),  # Monday's SPOT (Wednesday) is derived again: the next Monday
        good_row(2, delivery="TOM"),  # Monday's TOM (Tuesday) too: Friday
        good_row(3, delivery="TOM", value_date="2026-12-01"),  # written: Tuesday has passed by Thursday
    ]
    csv.write_text("\n".join([HEADER, *rows]) + "\n")
    with Workbench.open(settings=Settings(db=db_path, today=TODAY)) as monday:  # loaded on Monday
        batch = monday.load(csv, name="Monday")
    wb = app_workbench()  # run on Thursday
    run_id = wb.run(batch.batch_id, success_rate=1.0).run_id
    summary = wb.run_summary(run_id)
    assert (summary.trade_date, summary.value_dates_moved, summary.value_dates_unsendable) == (trading_day, 2, 1)
    assert summary.failure_reasons == {"INVALID_VALUE_DATE": 1}

    at = ok(open_page("pages/run.py"))
    assert at.selectbox[0].value == run_id
    assert (
        "Trading date 2026-12-03: 2 value dates derived again from their delivery; 1 trade not sent: its value "
        "date had passed, or CASH fell on a closed day (INVALID_VALUE_DATE)."
    ) in [c.value for c in at.caption]


def test_whatif_shows_income_earned_and_lost_per_scenario_and_per_success_rate(
    db_path: Path, open_page: OpenPage
) -> None:
    open_page("pages/home.py")
    wb = app_workbench()
    sweep_id = wb.whatif.sweep(wb.batches()[0].batch_id, [0.5, 1.0], seeds=2, name="bad Monday").sweep_id
    sweep = wb.whatif.get(sweep_id)
    at = ok(open_page("pages/whatif.py"))
    assert at.selectbox(key="sweep_pick").value == sweep_id

    summary = table_with(at, "income_mean")
    assert labels(summary)["income_mean"] == "Income (mean, ZAR)"
    assert labels(summary)["income_lost_mean"] == "Income lost (mean, ZAR)"
    table = summary.value.sort_values("success_rate")
    assert table["income_mean"].tolist() == pytest.approx([r.income_mean for r in sweep.summary])
    assert table["income_lost_mean"].tolist() == pytest.approx([r.income_lost_mean for r in sweep.summary])
    assert table["income_lost_mean"].iloc[0] > 0 and table["income_lost_mean"].iloc[-1] == 0  # 50% loses, 100% not

    scenarios = table_with(at, "scenario")
    assert labels(scenarios)["spread_income_zar"] == "Income (ZAR)"
    assert labels(scenarios)["income_lost_zar"] == "Income lost (ZAR)"
    assert scenarios.value["spread_income_zar"].tolist() == pytest.approx(
        [s.spread_income_zar for s in sweep.scenarios]
    )
    half = scenarios.value[scenarios.value["success_rate"] == 0.5]
    assert all(isinstance(t, str) and t for t in half["failure_reasons"])  # "CODE n · ..." text, not a nested column

    chart = figures(at)["What a bad day costs: income earned and lost, and notional booked"]
    means = {t["name"]: t["y"] for t in chart["data"] if t.get("name", "").endswith("(mean)")}
    assert means["income earned (mean)"] == pytest.approx(table["income_mean"].tolist())
    assert means["income lost (failed trades) (mean)"] == pytest.approx(table["income_lost_mean"].tolist())


def test_a_finished_run_reads_money_first_booked_failed_income_and_income_lost(
    db_path: Path, open_page: OpenPage
) -> None:
    open_page("pages/home.py")
    wb = app_workbench()
    run_id = wb.run(wb.batches()[0].batch_id, seed=1, success_rate=0.8).run_id
    money = wb.run_money(run_id)
    at = AppTest.from_file(str(Path(__file__).parents[2] / "app.py"), default_timeout=30)
    at.query_params["run"] = str(run_id)
    at.run()
    at.switch_page("pages/run.py").run()
    first_row = [(m.label, m.value) for m in at.metric][:4]  # the first row is money, then the counts
    assert first_row == [
        ("Booked", zar_compact(money.booked_zar)),
        ("Failed", zar_compact(money.failed_zar)),
        ("Spread income", zar_compact(money.income_zar or 0.0)),
        ("Income lost", zar_compact(money.income_lost_zar)),
    ]
    assert money.income_lost_zar > 0 and money.failed_zar > 0
