"""Settlement calendars and value dates (DOMAIN.md section 6).

A value date must be a business day in both currencies of the pair, and the trade date is today in
Johannesburg, not UTC. Getting either wrong sends a trade that settles on a closed day, so the rules live
here once, for the validators, the engine and the bulk SQL checks alike. Holiday dates come from the
`holidays` package; a currency missing from CALENDARS is treated as closed on weekends only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays

JOHANNESBURG = ZoneInfo("Africa/Johannesburg")
NO_CALENDAR = "no holiday calendar: weekends only"

# Currency -> (calendar, label for messages). The calendar is an ISO 3166-1 country ("ZA"), an ISO 3166-2
# subdivision ("GB-ENG") or an ISO 10383 market code ("XECB", the ECB's TARGET calendar).
# CHF, AUD and CAD use their financial centre's subdivision: the national calendars in `holidays` leave out
# days those banks close (Switzerland's has no Good Friday or Easter Monday).
# ILS and SAR banks also close on Fridays; this module knows Saturday and Sunday weekends only.
CALENDARS: dict[str, tuple[str, str]] = {
    "ZAR": ("ZA", "South Africa"),
    "USD": ("US", "the United States"),
    "EUR": ("XECB", "the TARGET calendar"),
    "GBP": ("GB-ENG", "England"),
    "JPY": ("JP", "Japan"),
    "CHF": ("CH-ZH", "Zurich"),
    "AUD": ("AU-NSW", "New South Wales"),
    "CAD": ("CA-ON", "Ontario"),
    "CNY": ("CN", "China"),
    "NZD": ("NZ", "New Zealand"),
    "HKD": ("HK", "Hong Kong"),
    "SGD": ("SG", "Singapore"),
    "SEK": ("SE", "Sweden"),
    "NOK": ("NO", "Norway"),
    "DKK": ("DK", "Denmark"),
    "PLN": ("PL", "Poland"),
    "CZK": ("CZ", "Czechia"),
    "HUF": ("HU", "Hungary"),
    "RON": ("RO", "Romania"),
    "INR": ("IN", "India"),
    "BRL": ("BR", "Brazil"),
    "MXN": ("MX", "Mexico"),
    "KES": ("KE", "Kenya"),
    "NGN": ("NG", "Nigeria"),
    "BWP": ("BW", "Botswana"),
    "NAD": ("NA", "Namibia"),
    "LSL": ("LS", "Lesotho"),
    "SZL": ("SZ", "Eswatini"),
    "MZN": ("MZ", "Mozambique"),
    "ZMW": ("ZM", "Zambia"),
    "MUR": ("MU", "Mauritius"),
    "GHS": ("GH", "Ghana"),
    "ILS": ("IL", "Israel"),
    "TRY": ("TR", "Türkiye"),
    "AED": ("AE", "the United Arab Emirates"),
    "SAR": ("SA", "Saudi Arabia"),
    "KRW": ("KR", "South Korea"),
    "THB": ("TH", "Thailand"),
    "IDR": ("ID", "Indonesia"),
    "MYR": ("MY", "Malaysia"),
    "PHP": ("PH", "the Philippines"),
    "TWD": ("TW", "Taiwan"),
}

_WEEKEND = ("Saturday", "Sunday")


@functools.lru_cache(maxsize=4096)  # bounded: currency codes can come from uploaded files
def _year(ccy: str, year: int) -> dict[date, str]:
    """One currency's holidays for one year; cached because building a holidays object is slow."""
    spec = CALENDARS.get(ccy.upper())
    if spec is None:
        return {}
    how = spec[0]
    # Names default to the process locale (Japanese under LANG=ja_JP); messages must not depend on it.
    if len(how) == 4:
        cal = holidays.financial_holidays(how, years=year, language="en_US")
    else:
        country, _, subdiv = how.partition("-")
        cal = holidays.country_holidays(country, subdiv=subdiv or None, years=year, language="en_US")
    days = dict(cal.items())
    if how == "US":
        # USD settles through Fedwire: the Federal Reserve does not close on the Friday before a
        # Saturday holiday, as federal offices do (2027-12-31 is a USD settlement day).
        days = {d: n for d, n in days.items() if not (d.weekday() == 4 and "(observed)" in n)}
    return days


def warm(currencies: Iterable[str], years: Iterable[int]) -> None:
    """Build the holiday calendars of ``currencies`` for ``years`` now. The first one imports every
    country's rules (about 0.1 s) and each new one takes up to a few ms: a server that left them to
    its first requests would hold its event loop, and every call in flight, that long."""
    years = tuple(years)
    for ccy in currencies:
        holidays_of(ccy, years)  # cached: later calls for these years find them built


def holidays_of(ccy: str, years: Iterable[int]) -> dict[date, str]:
    """Holiday date -> name for `ccy` in `years` (empty for a currency without a calendar)."""
    out: dict[date, str] = {}
    for year in years:
        out.update(_year(ccy, year))
    return out


def calendar_label(ccy: str) -> str:
    spec = CALENDARS.get(ccy.upper())
    return spec[1] if spec else NO_CALENDAR


def trading_date(override: date | None = None, now: datetime | None = None) -> date:
    """The override if given, else today's date in Johannesburg (from `now`, an aware datetime, or the clock)."""
    if override is not None:
        return override
    if now is None:
        now = datetime.now(JOHANNESBURG)
    elif now.tzinfo is None:
        # A naive time could be UTC or local; guessing would shift the trade date by a day after 22:00 UTC.
        raise ValueError("now must be timezone-aware")
    return now.astimezone(JOHANNESBURG).date()


def _legs(pair: str) -> tuple[str, str]:
    base, sep, quote = pair.upper().partition("/")
    if not sep or len(base) != 3 or len(quote) != 3:
        raise ValueError(f"not a currency pair like USD/ZAR: {pair!r}")
    return base, quote


def is_business_day(ccy: str, d: date) -> bool:
    return d.weekday() < 5 and d not in _year(ccy, d.year)


def joint_business_day(pair: str, d: date) -> bool:
    return all(is_business_day(ccy, d) for ccy in _legs(pair))


def not_business_day_reason(pair: str, d: date) -> str | None:
    """Why `d` cannot be a value date for `pair`, or None when it can.

    A holiday wins over the weekend it falls on (naming it is more informative), and the base currency's
    holiday wins over the quote's.
    """
    for ccy in _legs(pair):
        name = _year(ccy, d.year).get(d)
        if name is not None:
            return f"{d.isoformat()} is {name} in {calendar_label(ccy)} ({ccy})"
    if d.weekday() >= 5:
        return f"{d.isoformat()} is a {_WEEKEND[d.weekday() - 5]}"
    return None


def next_business_day(pair: str, d: date, n: int = 1) -> date:
    """The n-th joint business day after `d`."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    while n:
        d += timedelta(days=1)
        if joint_business_day(pair, d):
            n -= 1
    return d


def value_dates(pair: str, trade_date: date) -> dict[str, date]:
    """CASH is the trade date even on a closed day: callers reject it with not_business_day_reason."""
    return {
        "CASH": trade_date,
        "TOM": next_business_day(pair, trade_date, 1),
        "SPOT": next_business_day(pair, trade_date, 2),
    }


def closed_days_mask(ccy: str, start: date, days: int) -> str:
    """'1' at i when start + i days is closed for `ccy`, else '0'.

    Bulk checks in DuckDB index this with substr() instead of joining a calendar table, because a join
    would not keep the row order.
    """
    if days < 0:
        raise ValueError(f"days must not be negative, got {days}")
    end = start + timedelta(days=max(days - 1, 0))
    closed = holidays_of(ccy, range(start.year, end.year + 1))
    day = start.toordinal()
    # weekday() of an ordinal: 1 is a Monday, so Saturday and Sunday are 6 and 0 modulo 7.
    return "".join("1" if (day + i) % 7 in (6, 0) or date.fromordinal(day + i) in closed else "0" for i in range(days))


def holiday_names(ccy: str, start: date, end: date) -> dict[date, str]:
    """Holidays of `ccy` from `start` to `end` inclusive (weekends are not listed)."""
    found = holidays_of(ccy, range(start.year, end.year + 1))
    return {d: name for d, name in sorted(found.items()) if start <= d <= end}
