"""The value-date rule is written three times, each for its own caller: as SQL for the million-row
load and the run's unsendable trades (``fxbatch.valuedates``, ``records.run_value_dates``), per
trade for messages (``valuedates.unsendable_reason``), and in the bank simulator's own words
(``banksim.checks.value_date_problem``). A table of cases holds them to one answer."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pytest

from fxbatch import calendars, valuedates
from fxbatch.banksim.checks import value_date_problem
from fxbatch.valuedates import MAX_FORWARD_DAYS

PAIRS = frozenset({"USD/ZAR", "EUR/ZAR", "GBP/USD", "USD/JPY", "JPY/ZAR", "EUR/USD"})
TRADE_DATES = [
    date(2026, 11, 30),  # a Monday
    date(2026, 12, 4),  # a Friday: TOM and SPOT over the weekend
    date(2026, 12, 15),  # before South Africa's Day of Reconciliation (16 December)
    date(2026, 12, 23),  # Christmas in the way
    date(2026, 11, 25),  # before Thanksgiving (USD)
]
OFFSETS = [-1, 0, 1, 2, 3, 4, 5, 6, 7, 10, MAX_FORWARD_DAYS - 1, MAX_FORWARD_DAYS, MAX_FORWARD_DAYS + 1]


def _cases(trade_date: date) -> list[tuple[str, str, date]]:
    return [
        (pair, delivery, trade_date + timedelta(days=offset))
        for pair in sorted(PAIRS)
        for delivery in ("CASH", "TOM", "SPOT")
        for offset in OFFSETS
    ]


def _sql(trade_date: date, cases: list[tuple[str, str, date]]) -> list[tuple[bool, bool]]:
    """(closed, unsendable at a run on ``trade_date``) per case, as the load and the run compute them."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (n INTEGER, currency_pair VARCHAR, delivery VARCHAR, value_date DATE)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(i, p, d, v) for i, (p, d, v) in enumerate(cases)])
    closed = valuedates.closed_sql("t.currency_pair", "t.value_date", PAIRS, trade_date - timedelta(days=1))
    past = f"t.value_date < DATE '{trade_date.isoformat()}'"
    unsuited = valuedates.unsuited_sql("t.currency_pair", "t.delivery", "t.value_date", PAIRS, trade_date)
    rows = con.execute(f"SELECT {closed}, {past} OR {unsuited} FROM t ORDER BY n").fetchall()
    return [(bool(c), bool(u)) for c, u in rows]


@pytest.mark.parametrize("trade_date", TRADE_DATES, ids=str)
def test_the_load_the_run_and_the_bank_simulator_agree_on_every_value_date(trade_date: date) -> None:
    cases = _cases(trade_date)
    answers = _sql(trade_date, cases)
    kinds = {(closed, unsendable) for closed, unsendable in answers}
    assert {(True, True), (False, True), (False, False)} <= kinds, "closed, unsuited and good dates alike"
    disagree = []
    for (pair, delivery, value_date), (closed, unsendable) in zip(cases, answers, strict=True):
        python_closed = calendars.not_business_day_reason(pair, value_date) is not None
        bank = value_date_problem(pair, delivery.title(), value_date, trade_date)
        # The bank refuses a date that is closed or does not suit; the load rejects the closed ones
        # (NOT_A_BUSINESS_DAY) and the rest as the run does (PAST_VALUE_DATE, VALUE_DATE_MISMATCH).
        if closed != python_closed or (bank is not None) != (closed or unsendable):
            disagree.append((pair, delivery, value_date, closed, unsendable, bank))
        if unsendable and not closed:
            reason = valuedates.unsendable_reason(pair, delivery, value_date, trade_date)
            said = "had passed" if value_date < trade_date else "does not suit delivery"
            if said not in reason:
                disagree.append((pair, delivery, value_date, reason))
    assert disagree == []


def test_every_derived_date_suits_its_delivery_everywhere() -> None:
    """A date derived from the delivery is one the rule takes (the load derives, the run checks)."""
    for trade_date in TRADE_DATES:
        for pair in sorted(PAIRS):
            due = calendars.value_dates(pair, trade_date)
            for delivery in ("TOM", "SPOT"):
                assert value_date_problem(pair, delivery.title(), due[delivery], trade_date) is None, (pair, delivery)
                cases = [(pair, delivery, due[delivery])]
                assert _sql(trade_date, cases) == [(False, False)], (pair, delivery, trade_date)
