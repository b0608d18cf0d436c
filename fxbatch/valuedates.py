"""Value dates in bulk: SQL expressions over a pair column and a date column.

Loading checks a million rows in one DuckDB pass that must keep the file's row order, so a
calendar cannot be a table joined in. Instead each pair's closed days (weekends and either
currency's holidays) over the next ``HORIZON_DAYS`` are bits of one constant looked up by
offset, and the holiday names for messages are constant lists read only for rejected rows.
Dates past the horizon are checked for weekends only.

The derivation itself (CASH = trade date, TOM and SPOT = first and second joint business day)
is ``fxbatch.calendars.value_dates``; both loading and a run on a later day use it.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta
from functools import lru_cache

from fxbatch import calendars

HORIZON_DAYS = 5 * 366
DELIVERIES = ("SPOT", "TOM", "CASH")
MAX_FORWARD_DAYS = 366  # a bank prices forwards up to a year out (the simulator refuses later ones)


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _d(day: date) -> str:
    return f"DATE '{day.isoformat()}'"


def _currencies(pairs: Iterable[str]) -> list[str]:
    return sorted({c for p in pairs for c in (p[:3], p[-3:])})


@lru_cache(maxsize=128)
def _currency_mask(ccy: str, start: date) -> int:
    """The currency's closed days from ``start`` as bits of an int (bit i: day i)."""
    return int(calendars.closed_days_mask(ccy, start, HORIZON_DAYS)[::-1] or "0", 2)


@lru_cache(maxsize=64)
def _pair_mask(pair: str, start: date) -> str:
    closed = _currency_mask(pair[:3], start) | _currency_mask(pair[-3:], start)
    return format(closed, f"0{HORIZON_DAYS}b")[::-1]


def closed_sql(pair: str, day: str, pairs: Iterable[str], start: date) -> str:
    """SQL: true when ``day`` (a DATE expression, not before ``start``) is not a business day of
    both currencies of ``pair`` (an expression naming one of ``pairs``); NULL for other pairs.

    Every pair's mask is one BIT constant read with get_bit at pair x horizon + offset: constant
    time per row (substr on a long VARCHAR scans it).
    """
    ordered = sorted(pairs)
    index = " ".join(f"WHEN {_q(p)} THEN {i * HORIZON_DAYS}" for i, p in enumerate(ordered))
    bits = "".join(_pair_mask(p, start) for p in ordered)
    end = start + timedelta(days=HORIZON_DAYS - 1)
    return (
        f"CASE WHEN {day} > {_d(end)} THEN isodow({day}) >= 6 "
        f"ELSE get_bit({_q(bits)}::BIT, CAST(CASE {pair} {index} END + ({day} - {_d(start)}) AS INTEGER)) = 1 END"
    )


def closed_reason_sql(pair: str, day: str, pairs: Iterable[str], start: date) -> str:
    """SQL: the message of ``fxbatch.calendars.not_business_day_reason`` for a closed ``day``:
    "2027-11-25 is Thanksgiving Day in the United States (USD)" or "2027-11-27 is a Saturday".

    A holiday's name is looked up in two constant lists per currency (its days, their names): a
    CASE with a branch per holiday would cost its setup on every chunk of a big file.
    """
    end = start + timedelta(days=HORIZON_DAYS - 1)

    def holiday(ccy_expr: str) -> str:
        whens = []
        for ccy in _currencies(pairs):
            names = calendars.holiday_names(ccy, start, end)
            if names:
                label = f" in {calendars.calendar_label(ccy)} ({ccy})"
                days = ", ".join(_d(d) for d in names)
                texts = ", ".join(_q(n + label) for n in names.values())
                whens.append(f"WHEN {_q(ccy)} THEN [{texts}][list_position([{days}], {day})]")
        return f"CASE {ccy_expr} {' '.join(whens)} END" if whens else "NULL::VARCHAR"

    weekend = f"CASE isodow({day}) WHEN 6 THEN 'a Saturday' WHEN 7 THEN 'a Sunday' END"
    return (
        f"CAST({day} AS VARCHAR) || ' is ' || "
        f"coalesce({holiday(f'left({pair}, 3)')}, {holiday(f'right({pair}, 3)')}, {weekend}, 'not a business day')"
    )


def derived_sql(pair: str, delivery: str, pairs: Iterable[str], trade_date: date) -> str:
    """SQL: the value date of ``delivery`` (SPOT/TOM/CASH) for ``pair`` traded on ``trade_date``.

    Most pairs share their dates on most days: only the pairs whose date differs from the most
    common one get a branch of their own (a CASE over every pair costs a string compare each).
    Other pairs (not in ``pairs``) get the common date.
    """
    branches = []
    for kind in DELIVERIES:
        if kind == "CASH":
            branches.append(f"WHEN 'CASH' THEN {_d(trade_date)}")
            continue
        dates = {p: calendars.value_dates(p, trade_date)[kind] for p in sorted(pairs)}
        common = Counter(dates.values()).most_common(1)[0][0] if dates else trade_date
        odd = " ".join(f"WHEN {_q(p)} THEN {_d(d)}" for p, d in dates.items() if d != common)
        branches.append(f"WHEN {_q(kind)} THEN " + (f"CASE {pair} {odd} ELSE {_d(common)} END" if odd else _d(common)))
    return f"CASE {delivery} {' '.join(branches)} END"


def unsuited_sql(pair: str, delivery: str, day: str, pairs: Iterable[str], trade_date: date) -> str:
    """SQL: whether a value date written in the file (``day``, not before ``trade_date``) does not
    suit the trade's ``delivery`` on ``trade_date``, as a bank refuses it: CASH settles on the
    trade date, TOM on its date, SPOT on its date or later (a forward), nothing more than
    MAX_FORWARD_DAYS ahead."""
    due = derived_sql(pair, delivery, pairs, trade_date)
    last = _d(trade_date + timedelta(days=MAX_FORWARD_DAYS))
    return f"({day} > {last} OR CASE {delivery} WHEN 'SPOT' THEN {day} < {due} ELSE {day} <> {due} END)"


def unsuited_reason_sql(pair: str, delivery: str, day: str, pairs: Iterable[str], trade_date: date) -> str:
    """SQL: why ``unsuited_sql`` holds, for a message (NULL where it does not)."""
    due = f"CAST({derived_sql(pair, delivery, pairs, trade_date)} AS VARCHAR)"
    last = trade_date + timedelta(days=MAX_FORWARD_DAYS)
    return (
        f"CASE WHEN {day} > {_d(last)} THEN 'it is more than {MAX_FORWARD_DAYS} days ahead (the last date a bank "
        f"takes is {last.isoformat()})' ELSE CASE {delivery} "
        f"WHEN 'CASH' THEN 'a CASH trade made on {trade_date.isoformat()} settles that day' "
        f"WHEN 'TOM' THEN 'a TOM trade made on {trade_date.isoformat()} settles on ' || {due} "
        f"ELSE 'a SPOT trade made on {trade_date.isoformat()} settles on ' || {due} || ' or later (a forward)' END END"
    )


@lru_cache(maxsize=4096)
def unsendable_reason(pair: str, delivery: str, value_date: date | None, trade_date: date | None) -> str:
    """Why a trade cannot be sent on ``trade_date`` (``records.run_value_dates`` marked it), for
    its failure message; cached, since a batch run days late may have many such trades sharing a
    few (pair, delivery, date)."""
    if trade_date is None or value_date is None:
        return "not sent: its value date cannot settle"
    if value_date < trade_date:
        return f"not sent: its value date {value_date} had passed by the run's trading date {trade_date}"
    closed = calendars.not_business_day_reason(pair, value_date)
    if delivery == "CASH" and value_date == trade_date and closed:
        return f"not sent: CASH settles on the trading date {trade_date}, {closed}"
    due = calendars.value_dates(pair, trade_date)[delivery] if delivery in DELIVERIES else None
    if value_date > trade_date + timedelta(days=MAX_FORWARD_DAYS):
        why = f"it is more than {MAX_FORWARD_DAYS} days ahead"
    elif delivery == "SPOT" and due is not None:
        why = f"a SPOT trade made on {trade_date} settles on {due} or later"
    else:
        why = f"a {delivery} trade made on {trade_date} settles on {due}"
    return f"not sent: its value date {value_date} does not suit delivery {delivery} on the run's trading date: {why}"


def warm(pairs: Iterable[str], start: date) -> None:
    """Build and cache every calendar the value-date SQL of ``pairs`` from ``start`` reads.

    Building them (the ``holidays`` package, pure Python) takes 0.1-0.2 s in a fresh process:
    loading runs this in a thread while the file is read, which mostly holds no GIL (DuckDB's CSV
    reader, python-calamine's parse). Any error is left for the SQL builders to raise.
    """
    with contextlib.suppress(Exception):  # the same call on the loading thread raises it
        ordered = sorted(pairs)
        end = start + timedelta(days=HORIZON_DAYS - 1)
        for pair in ordered:
            _pair_mask(pair, start)
        for ccy in _currencies(ordered):
            calendars.holiday_names(ccy, start, end)


def closed_on(pairs: Iterable[str], day: date) -> frozenset[str]:
    """The pairs for which ``day`` is not a joint business day (a CASH trade cannot settle)."""
    return frozenset(p for p in pairs if not calendars.joint_business_day(p, day))
