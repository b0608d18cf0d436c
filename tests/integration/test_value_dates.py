"""Value dates on the settlement calendars, at load and again when a batch runs on a later day.

The 2027 cases are the issue's: Freedom Day (ZA), Thanksgiving (US), 31 May (UK and US), and SPOT
from a Wednesday before a holiday.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest

from fxbatch import Settings, Workbench, calendars
from fxbatch.models import LoadResult, RunStatus
from tests.conftest import HEADER, good_row

WriteFile = Callable[..., Path]

FREEDOM_DAY, THANKSGIVING, MAY_31 = date(2027, 4, 27), date(2027, 11, 25), date(2027, 5, 31)
WEEK_BEFORE = date(2027, 4, 19)


@pytest.fixture
def wb_on(tmp_path: Path) -> Iterator[object]:
    """Open workbenches on one database, each trading on the date it is given."""
    opened: list[Workbench] = []

    def open_on(day: date) -> Workbench:
        for wb in opened:
            wb.close()
        opened.clear()
        wb = Workbench.open(settings=Settings(db=tmp_path / "dates.duckdb", today=day))
        opened.append(wb)
        return wb

    yield open_on
    for wb in opened:
        wb.close()


def load(wb: Workbench, write_file: WriteFile, *rows: str) -> LoadResult:
    return wb.load(write_file("\n".join([HEADER, *rows]) + "\n"))


def one_rejection(result: LoadResult) -> tuple[int, str, str | None, str, str]:
    [r] = result.rejections
    return r.row, r.column, r.value, r.code, r.message


@pytest.mark.parametrize(
    ("pair", "day", "holiday"),
    [
        ("USD/ZAR", FREEDOM_DAY, "2027-04-27 is Freedom Day in South Africa (ZAR)"),
        ("EUR/ZAR", FREEDOM_DAY, "2027-04-27 is Freedom Day in South Africa (ZAR)"),
        ("USD/ZAR", THANKSGIVING, "2027-11-25 is Thanksgiving Day in the United States (USD)"),
        ("GBP/ZAR", MAY_31, "2027-05-31 is Spring Bank Holiday in England (GBP)"),
        ("USD/ZAR", MAY_31, "2027-05-31 is Memorial Day in the United States (USD)"),
        ("USD/ZAR", date(2027, 11, 27), "2027-11-27 is a Saturday"),
    ],
)
def test_a_value_date_on_a_holiday_or_weekend_of_either_currency_is_rejected_naming_the_day(
    wb_on: object, write_file: WriteFile, pair: str, day: date, holiday: str
) -> None:
    wb = wb_on(WEEK_BEFORE)  # type: ignore[operator]
    result = load(wb, write_file, good_row(1), good_row(2, currency_pair=pair, value_date=day.isoformat()))
    row, column, value, code, message = one_rejection(result)
    assert (row, column, value, code) == (3, "value_date", day.isoformat(), "NOT_A_BUSINESS_DAY")
    assert message.startswith(holiday)
    assert message.startswith(calendars.not_business_day_reason(pair, day) or "?")  # one wording, SQL and Python
    assert f"business day in both {pair[:3]} and {pair[4:]}" in message
    assert result.accepted == 1


@pytest.mark.parametrize("day", [THANKSGIVING, MAY_31])
def test_a_holiday_of_neither_currency_is_a_good_value_date(wb_on: object, write_file: WriteFile, day: date) -> None:
    wb = wb_on(WEEK_BEFORE)  # type: ignore[operator]
    result = load(wb, write_file, good_row(1, currency_pair="EUR/ZAR", value_date=day.isoformat()))
    assert result.rejections == []
    assert wb.trades(result.batch_id)["value_date"].iloc[0].date() == day


def test_spot_from_a_wednesday_before_a_holiday_skips_it(wb_on: object, write_file: WriteFile) -> None:
    wb = wb_on(date(2027, 11, 24))  # type: ignore[operator]
    rows = [
        good_row(1, currency_pair="USD/ZAR", delivery="SPOT"),
        good_row(2, currency_pair="USD/ZAR", delivery="TOM"),
        good_row(3, currency_pair="EUR/ZAR", delivery="SPOT"),
    ]
    trades = wb.trades(load(wb, write_file, *rows).batch_id)
    assert [d.date() for d in trades["value_date"]] == [date(2027, 11, 29), date(2027, 11, 26), date(2027, 11, 26)]


def test_cash_on_a_day_one_currency_is_closed_is_rejected_and_tom_is_not(wb_on: object, write_file: WriteFile) -> None:
    wb = wb_on(THANKSGIVING)  # type: ignore[operator]
    result = load(
        wb, write_file, good_row(1, delivery="TOM"), good_row(2, delivery="same day"),
        good_row(3, currency_pair="EUR/ZAR", delivery="CASH"),
    )  # fmt: skip
    row, column, value, code, message = one_rejection(result)
    assert (row, column, value, code) == (3, "delivery", "same day", "NOT_A_BUSINESS_DAY")
    assert "2027-11-25 is Thanksgiving Day in the United States (USD)" in message and "use TOM or SPOT" in message
    assert result.accepted == 2


@pytest.mark.parametrize(
    ("word", "delivery"),
    [("same day", "CASH"), ("same_day", "CASH"), ("SameDay", "CASH"), ("Today", "CASH"), ("tomorrow", "TOM")],
)
def test_the_desks_delivery_words_mean_cash_and_tom(
    wb_on: object, write_file: WriteFile, word: str, delivery: str
) -> None:
    wb = wb_on(date(2026, 11, 30))  # type: ignore[operator]
    trades = wb.trades(load(wb, write_file, good_row(1, delivery=word)).batch_id)
    expected = calendars.value_dates("USD/ZAR", date(2026, 11, 30))[delivery]
    assert (trades["delivery"].iloc[0], trades["value_date"].iloc[0].date()) == (delivery, expected)


def test_an_unknown_delivery_word_says_what_would_be_accepted(wb_on: object, write_file: WriteFile) -> None:
    wb = wb_on(date(2026, 11, 30))  # type: ignore[operator]
    result = load(wb, write_file, good_row(1), good_row(2, delivery="next week"))
    row, column, value, code, message = one_rejection(result)
    assert (row, column, value, code) == (3, "delivery", "next week", "INVALID_DELIVERY")
    assert "SPOT, TOM or CASH" in message and "same day" in message and "tomorrow" in message


def test_a_batch_run_two_business_days_later_gets_fresh_spot_dates_and_a_passed_date_fails_unsent(
    wb_on: object, write_file: WriteFile
) -> None:
    loaded_on, run_on = date(2026, 11, 30), date(2026, 12, 2)
    wb = wb_on(loaded_on)  # type: ignore[operator]
    rows = [good_row(n, delivery=d) for n, d in ((1, "SPOT"), (2, "TOM"), (3, "CASH"))]
    rows.append(good_row(4, delivery="TOM", value_date="2026-12-01"))  # written in the file: kept, passed by run_on
    rows.append(good_row(5, value_date="2026-12-09"))
    # Written for a SPOT on the load day (12-02), which is no SPOT date by run_on (12-04 or later)
    rows.append(good_row(6, value_date="2026-12-02"))
    batch = load(wb, write_file, *rows).batch_id
    wb = wb_on(run_on)  # type: ignore[operator]
    summary = wb.run(batch, success_rate=1.0)
    assert summary.error is None, summary.error
    assert summary.trade_date == run_on
    assert (summary.value_dates_moved, summary.value_dates_unsendable) == (3, 2)
    fresh = calendars.value_dates("USD/ZAR", run_on)
    recorded = wb.store.cursor().execute(
        "SELECT src_row, status, failure_code, attempts, quote_id IS NOT NULL, value_date FROM run_trades WHERE run_id = ? "
        "ORDER BY src_row",
        [summary.run_id],
    )
    assert recorded.fetchall() == [
        (2, "SUCCESS", None, 1, True, fresh["SPOT"]),
        (3, "SUCCESS", None, 1, True, fresh["TOM"]),
        (4, "SUCCESS", None, 1, True, fresh["CASH"]),
        (5, "FAILED", "INVALID_VALUE_DATE", 0, False, date(2026, 12, 1)),
        (6, "SUCCESS", None, 1, True, date(2026, 12, 9)),
        (7, "FAILED", "INVALID_VALUE_DATE", 0, False, date(2026, 12, 2)),
    ]
    ledger = wb.store.cursor().execute("SELECT src_row FROM sim_ledger WHERE run_id = ?", [summary.run_id])
    assert sorted(r[0] for r in ledger.fetchall()) == [2, 3, 4, 6]  # rows 5 and 7 never reached the bank
    said = wb.store.cursor().execute(
        "SELECT src_row, failure_message FROM run_trades WHERE run_id = ? AND status = 'FAILED' ORDER BY src_row",
        [summary.run_id],
    )
    assert said.fetchall() == [
        (5, "not sent: its value date 2026-12-01 had passed by the run's trading date 2026-12-02"),
        (7, "not sent: its value date 2026-12-02 does not suit delivery SPOT on the run's trading date: a SPOT trade "
            f"made on 2026-12-02 settles on {fresh['SPOT']} or later"),
    ]  # fmt: skip
    # The batch itself keeps what was loaded; a what-if on the same day agrees with the run.
    assert wb.trades(batch)["value_date"].iloc[0].date() == calendars.value_dates("USD/ZAR", loaded_on)["SPOT"]
    [scenario] = wb.whatif.sweep(batch, [1.0], seeds=[42], workers=1).scenarios
    assert scenario.failure_reasons == {"INVALID_VALUE_DATE": 2}


def test_a_run_on_the_load_day_moves_no_value_date(wb_on: object, write_file: WriteFile) -> None:
    wb = wb_on(date(2026, 11, 30))  # type: ignore[operator]
    batch = load(wb, write_file, good_row(1), good_row(2, delivery="TOM")).batch_id
    summary = wb.run(batch, success_rate=1.0)
    assert (summary.value_dates_moved, summary.value_dates_unsendable, summary.counts["SUCCESS"]) == (0, 0, 2)


def test_a_wave_whose_trades_could_none_be_sent_does_not_end_the_run(
    wb_on: object, write_file: WriteFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waves of one trade (an HTTP bank's first wave is one round): the first trade's value date
    # has passed, so its wave sends nothing, and the run goes on with the next.
    from fxbatch.engine import worker

    monkeypatch.setattr(worker, "WAVE_ROUNDS", 1)
    monkeypatch.setattr(worker, "MIN_WAVE_ROUNDS", 1)
    wb = wb_on(date(2026, 11, 30))  # type: ignore[operator]
    rows = [good_row(1, delivery="TOM", value_date="2026-12-01"), good_row(2), good_row(3, delivery="TOM")]
    batch = load(wb, write_file, *rows).batch_id
    wb = wb_on(date(2026, 12, 2))  # type: ignore[operator]
    summary = wb.run(batch, success_rate=1.0, latency_ms=1, concurrency=1)
    assert summary.status is RunStatus.PARTIAL, summary.error
    assert (summary.counts["SUCCESS"], summary.counts["FAILED"], summary.value_dates_unsendable) == (2, 1, 1)
