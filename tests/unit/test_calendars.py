"""Settlement calendars and value dates (DOMAIN.md section 6); the 2027 cases come from the issue."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from fxbatch.calendars import (
    CALENDARS,
    JOHANNESBURG,
    NO_CALENDAR,
    calendar_label,
    closed_days_mask,
    holiday_names,
    holidays_of,
    is_business_day,
    joint_business_day,
    next_business_day,
    not_business_day_reason,
    trading_date,
    value_dates,
)

FREEDOM_DAY = date(2027, 4, 27)  # Tuesday
THANKSGIVING = date(2027, 11, 25)  # Thursday
MAY_31 = date(2027, 5, 31)  # Monday: Spring Bank Holiday in England, Memorial Day in the US
GOOD_FRIDAY = date(2027, 3, 26)
EASTER_MONDAY = date(2027, 3, 29)
UNKNOWN = "XAF"  # a real currency with no calendar in the table


def test_freedom_day_is_not_a_joint_business_day_for_either_pair_against_zar() -> None:
    for pair in ("USD/ZAR", "EUR/ZAR"):
        assert not joint_business_day(pair, FREEDOM_DAY)
        assert not_business_day_reason(pair, FREEDOM_DAY) == "2027-04-27 is Freedom Day in South Africa (ZAR)"


def test_thanksgiving_is_refused_for_usd_zar_but_accepted_for_eur_zar() -> None:
    assert not joint_business_day("USD/ZAR", THANKSGIVING)
    assert (
        not_business_day_reason("USD/ZAR", THANKSGIVING) == "2027-11-25 is Thanksgiving Day in the United States (USD)"
    )
    assert joint_business_day("EUR/ZAR", THANKSGIVING)
    assert not_business_day_reason("EUR/ZAR", THANKSGIVING) is None


def test_the_last_monday_of_may_is_refused_for_gbp_and_usd_but_accepted_for_eur() -> None:
    assert not_business_day_reason("GBP/ZAR", MAY_31) == "2027-05-31 is Spring Bank Holiday in England (GBP)"
    assert not_business_day_reason("USD/ZAR", MAY_31) == "2027-05-31 is Memorial Day in the United States (USD)"
    assert joint_business_day("EUR/ZAR", MAY_31)


def test_the_quote_currency_holiday_is_named_when_the_base_is_open() -> None:
    assert (
        not_business_day_reason("ZAR/USD", THANKSGIVING) == "2027-11-25 is Thanksgiving Day in the United States (USD)"
    )


def test_when_both_currencies_have_a_holiday_the_base_currency_is_named() -> None:
    christmas = date(2027, 12, 25)
    assert not_business_day_reason("USD/ZAR", christmas) == "2027-12-25 is Christmas Day in the United States (USD)"
    assert not_business_day_reason("ZAR/USD", christmas) == "2027-12-25 is Christmas Day in South Africa (ZAR)"


def test_target_good_friday_and_easter_monday_are_refused_for_eur_zar() -> None:
    assert not_business_day_reason("EUR/ZAR", GOOD_FRIDAY) == "2027-03-26 is Good Friday in the TARGET calendar (EUR)"
    assert (
        not_business_day_reason("EUR/USD", EASTER_MONDAY) == "2027-03-29 is Easter Monday in the TARGET calendar (EUR)"
    )
    assert joint_business_day("USD/JPY", EASTER_MONDAY)  # neither the US nor Japan closes then


def test_weekends_are_refused_by_day_name() -> None:
    assert not_business_day_reason("EUR/ZAR", date(2027, 11, 27)) == "2027-11-27 is a Saturday"
    assert not_business_day_reason("EUR/ZAR", date(2027, 11, 28)) == "2027-11-28 is a Sunday"
    assert not is_business_day("ZAR", date(2027, 11, 27))
    assert is_business_day("ZAR", date(2027, 11, 29))


def test_a_holiday_on_a_weekend_is_named_rather_than_the_weekend() -> None:
    assert (
        not_business_day_reason("EUR/ZAR", date(2027, 5, 1)) == "2027-05-01 is Labour Day in the TARGET calendar (EUR)"
    )
    assert not_business_day_reason("GBP/ZAR", date(2027, 5, 1)) == "2027-05-01 is Workers' Day in South Africa (ZAR)"


def test_an_observed_holiday_closes_the_monday_after_a_sunday_holiday() -> None:
    assert not_business_day_reason("EUR/ZAR", date(2027, 3, 22)) == (
        "2027-03-22 is Human Rights Day (observed) in South Africa (ZAR)"
    )


def test_spot_from_a_wednesday_before_a_holiday_skips_it() -> None:
    wednesday = date(2027, 11, 24)
    assert value_dates("USD/ZAR", wednesday) == {
        "CASH": wednesday,
        "TOM": date(2027, 11, 26),
        "SPOT": date(2027, 11, 29),
    }
    # The same days are open in the eurozone and South Africa, so EUR/ZAR settles straight through.
    assert value_dates("EUR/ZAR", wednesday)["SPOT"] == date(2027, 11, 26)


def test_spot_from_a_thursday_skips_the_weekend_and_easter() -> None:
    assert value_dates("EUR/ZAR", date(2027, 3, 25)) == {
        "CASH": date(2027, 3, 25),
        "TOM": date(2027, 3, 30),
        "SPOT": date(2027, 3, 31),
    }


def test_cash_is_the_trade_date_even_on_a_closed_day() -> None:
    dates = value_dates("USD/ZAR", THANKSGIVING)
    assert dates["CASH"] == THANKSGIVING
    assert dates["TOM"] == date(2027, 11, 26)
    assert not_business_day_reason("USD/ZAR", dates["CASH"]) is not None


def test_next_business_day_counts_only_joint_business_days() -> None:
    # Christmas 2027 is a Saturday: the Fed stays open on Friday 24th; England closes 27th and 28th.
    assert next_business_day("GBP/USD", date(2027, 12, 23)) == date(2027, 12, 24)
    assert next_business_day("GBP/USD", date(2027, 12, 23), 2) == date(2027, 12, 29)
    assert next_business_day("GBP/USD", date(2027, 12, 23), 3) == date(2027, 12, 30)


def test_next_business_day_refuses_a_count_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        next_business_day("USD/ZAR", FREEDOM_DAY, 0)


def test_a_malformed_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="USDZAR"):
        joint_business_day("USDZAR", FREEDOM_DAY)


def test_after_22_utc_the_johannesburg_trading_date_is_the_next_day() -> None:
    now = datetime(2026, 12, 3, 22, 30, tzinfo=UTC)
    assert trading_date(now=now) == date(2026, 12, 4)
    assert trading_date(now=datetime(2026, 12, 3, 21, 59, tzinfo=UTC)) == date(2026, 12, 3)


def test_an_override_wins_over_the_clock() -> None:
    now = datetime(2026, 12, 3, 22, 30, tzinfo=UTC)
    assert trading_date(date(2027, 1, 5), now=now) == date(2027, 1, 5)


def test_without_arguments_the_trading_date_is_today_in_johannesburg() -> None:
    before = datetime.now(JOHANNESBURG).date()
    got = trading_date()
    after = datetime.now(JOHANNESBURG).date()
    assert got in {before, after}  # the two reads straddle midnight at most once


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        trading_date(now=datetime(2026, 12, 3, 22, 30))


def test_an_unknown_currency_is_closed_on_weekends_only() -> None:
    assert UNKNOWN not in CALENDARS
    assert calendar_label(UNKNOWN) == NO_CALENDAR == "no holiday calendar: weekends only"
    assert holidays_of(UNKNOWN, [2027]) == {}
    start = date(2027, 1, 1)  # a Friday
    assert closed_days_mask(UNKNOWN, start, 10) == "0110000011"
    assert is_business_day(UNKNOWN, date(2027, 12, 24))


def test_a_pair_with_an_unknown_leg_still_uses_the_known_calendar() -> None:
    assert not_business_day_reason(f"USD/{UNKNOWN}", THANKSGIVING) == (
        "2027-11-25 is Thanksgiving Day in the United States (USD)"
    )
    assert joint_business_day(f"EUR/{UNKNOWN}", THANKSGIVING)


@pytest.mark.parametrize("ccy", ["ZAR", "USD", "EUR", "GBP"])
def test_closed_days_mask_agrees_with_is_business_day_over_a_year(ccy: str) -> None:
    start = date(2027, 1, 1)
    mask = closed_days_mask(ccy, start, 366)  # runs into 2028 to cross a year boundary
    assert len(mask) == 366
    expected = "".join("0" if is_business_day(ccy, start + timedelta(days=i)) else "1" for i in range(366))
    assert mask == expected
    weekends = sum((start + timedelta(days=i)).weekday() >= 5 for i in range(366))
    assert mask.count("1") > weekends  # holidays on weekdays are closed too, not just weekends


def test_closed_days_mask_marks_the_issue_dates() -> None:
    start = date(2027, 1, 1)
    zar = closed_days_mask("ZAR", start, 365)
    usd = closed_days_mask("USD", start, 365)
    assert zar[(FREEDOM_DAY - start).days] == "1"
    assert usd[(FREEDOM_DAY - start).days] == "0"
    assert usd[(THANKSGIVING - start).days] == "1"
    assert zar[(THANKSGIVING - start).days] == "0"


def test_holiday_names_lists_only_holidays_in_the_inclusive_range() -> None:
    names = holiday_names("ZAR", date(2027, 4, 27), date(2027, 5, 1))
    assert names == {FREEDOM_DAY: "Freedom Day", date(2027, 5, 1): "Workers' Day"}
    across = holiday_names("GBP", date(2027, 12, 27), date(2028, 1, 3))
    assert list(across) == [date(2027, 12, 27), date(2027, 12, 28), date(2028, 1, 1), date(2028, 1, 3)]


def test_holidays_of_merges_years_and_reads_the_same_day_again_from_the_cache() -> None:
    got = holidays_of("USD", [2027, 2028])
    assert got[THANKSGIVING] == "Thanksgiving Day"
    assert got[date(2028, 11, 23)] == "Thanksgiving Day"
    got.clear()  # callers get their own dict: clearing it must not empty the cached calendar
    assert holidays_of("USD", [2027])[THANKSGIVING] == "Thanksgiving Day"


def test_holiday_names_are_english_whatever_the_process_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    from fxbatch import calendars

    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):  # the variables gettext reads
        monkeypatch.setenv(var, "ja_JP.UTF-8")
    calendars._year.cache_clear()
    try:
        assert holidays_of("JPY", [2027])[date(2027, 1, 1)] == "New Year's Day"
    finally:
        calendars._year.cache_clear()


@pytest.mark.parametrize("ccy", sorted(CALENDARS))
def test_every_calendar_in_the_table_builds_with_holidays(ccy: str) -> None:
    found = holidays_of(ccy, [2027])
    assert 0 < len(found) < 40
    assert all(d.year == 2027 for d in found)
    assert calendar_label(ccy) != NO_CALENDAR


def test_usd_settles_on_the_friday_before_a_saturday_holiday_as_fedwire_does() -> None:
    # New Year's Day 2028 is a Saturday: federal offices close on Friday 2027-12-31, the Fed does not.
    assert is_business_day("USD", date(2027, 12, 31))
    assert joint_business_day("USD/ZAR", date(2027, 12, 31))
    # A Sunday holiday's Monday is still closed.
    assert not is_business_day("USD", date(2027, 7, 5))


def test_warming_builds_every_calendar_the_value_date_sql_reads() -> None:
    from fxbatch import calendars, valuedates

    pairs = frozenset({"USDZAR", "EURZAR", "GBPUSD"})
    start = date(2031, 3, 3)  # a start no other test uses: nothing of it is cached yet
    valuedates.warm(pairs, start)
    built = calendars._year.cache_info().misses
    valuedates.closed_sql("pair_n", "vdate_d", pairs, start)
    valuedates.closed_reason_sql("pair_n", "vdate_d", pairs, start)
    assert calendars._year.cache_info().misses == built  # nothing left to build on the loading thread
    assert valuedates._pair_mask.cache_info().currsize >= len(pairs)


def test_warming_leaves_a_failure_to_the_loading_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from fxbatch import calendars, valuedates

    def broken(*_: object) -> None:
        raise RuntimeError("calendar data damaged")

    monkeypatch.setattr(calendars, "holiday_names", broken)
    valuedates.warm(frozenset({"USDZAR"}), date(2031, 3, 4))  # no exception escapes the thread's work
    with pytest.raises(RuntimeError, match="damaged"):
        valuedates.closed_reason_sql("pair_n", "vdate_d", frozenset({"USDZAR"}), date(2031, 3, 4))
