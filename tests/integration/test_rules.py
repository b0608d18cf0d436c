"""One test per row rule (fxbatch/ingest/rules.py, DOMAIN.md 2.1 and 2.3), through a real load.

Every file has the header on line 1, so the first data row is row 2. A rejection is asserted
by its row, column and code; an acceptance by the stored, normalised trade.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from fxbatch import LoadResult, UnusableFileError, Workbench
from fxbatch.errors import SettingsError
from fxbatch.ingest.layout import column_label
from tests.conftest import HEADER, TODAY, good_row

WriteFile = Callable[..., Path]


def load_lines(wb: Workbench, write_file: WriteFile, *lines: str, today: date = TODAY) -> LoadResult:
    return wb.load(write_file("\n".join([HEADER, *lines]) + "\n"), today=today)


def problems(result: LoadResult) -> list[tuple[int, str, str]]:
    return [(r.row, r.column, r.code) for r in result.rejections]


def rejected_alone(wb: Workbench, write_file: WriteFile, **overrides: str) -> LoadResult:
    """Load one bad row between two good ones; the bad one is row 3."""
    result = load_lines(wb, write_file, good_row(1), good_row(2, **overrides), good_row(3))
    assert (result.rows, result.accepted, result.rejected, result.ignored) == (3, 2, 1, 0)
    assert wb.trades(result.batch_id)["row"].tolist() == [2, 4]
    return result


def accepted_trade(wb: Workbench, write_file: WriteFile, today: date = TODAY, **overrides: str) -> pd.Series:
    """Load one row that must be accepted and return it as stored."""
    result = load_lines(wb, write_file, good_row(1, **overrides), today=today)
    assert result.rejections == [], result.rejections
    trades = wb.trades(result.batch_id, unmask=True)  # the stored values, accounts unmasked
    assert len(trades) == 1
    return trades.iloc[0]


# ---------------------------------------------------------------- client_cif and account_number


@pytest.mark.parametrize("column", ["client_cif", "account_number"])
@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", "MISSING_VALUE"),
        ("   ", "MISSING_VALUE"),
        ("12A456", "INVALID_CIF"),
        ("123 456", "INVALID_CIF"),
        ("-123456", "INVALID_CIF"),
        ("123456.5", "INVALID_CIF"),
        ("1.23457E+09", "SCIENTIFIC_NOTATION"),
        ("1.23457e+09", "SCIENTIFIC_NOTATION"),
        ("1E9", "SCIENTIFIC_NOTATION"),
    ],
)
def test_an_identifier_that_is_not_plain_digits_is_rejected(
    wb: Workbench, write_file: WriteFile, column: str, value: str, code: str
) -> None:
    result = rejected_alone(wb, write_file, **{column: value})
    if column == "account_number" and code == "INVALID_CIF":
        code = "INVALID_ACCOUNT"
    [rejection] = result.rejections
    assert (rejection.row, rejection.column, rejection.code) == (3, column, code)
    assert rejection.value == (value.strip() or None)


def test_scientific_notation_is_never_fixed_and_the_message_says_why(wb: Workbench, write_file: WriteFile) -> None:
    [rejection] = rejected_alone(wb, write_file, client_cif="1.23457E+09").rejections
    assert rejection.value == "1.23457E+09"
    assert "scientific notation" in rejection.message and "lost digits" in rejection.message


@pytest.mark.parametrize("column", ["client_cif", "account_number"])
@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("0012345678", "0012345678"),
        ("000", "000"),
        ("123456789.0", "123456789"),
        ("123456789.00", "123456789"),
        (" 0123456789 ", "0123456789"),
        ("12345678901234567890", "12345678901234567890"),
    ],
)
def test_identifiers_are_kept_as_digit_text_with_leading_zeros(
    wb: Workbench, write_file: WriteFile, column: str, value: str, stored: str
) -> None:
    assert accepted_trade(wb, write_file, **{column: value})[column] == stored


# ---------------------------------------------------------------- currency_pair


@pytest.mark.parametrize("spelling", ["USD/ZAR", "USDZAR", "usd-zar", "USD ZAR", "usd_zar", "Usd/Zar", " USD/ZAR "])
def test_pair_spellings_are_normalised(wb: Workbench, write_file: WriteFile, spelling: str) -> None:
    assert accepted_trade(wb, write_file, currency_pair=spelling)["currency_pair"] == "USD/ZAR"


@pytest.mark.parametrize(
    ("value", "code", "in_message"),
    [
        ("", "MISSING_VALUE", "currency_pair is required"),
        ("XYZ/ZAR", "UNKNOWN_CURRENCY", "XYZ is not an ISO 4217"),
        ("usd/xyz", "UNKNOWN_CURRENCY", "XYZ is not an ISO 4217"),
        ("EUR/CHF", "UNSUPPORTED_PAIR", "supported pairs: AUD/USD"),
        ("ZAR/ZAR", "UNSUPPORTED_PAIR", "is not offered"),
        ("US/ZAR", "INVALID_PAIR", "not a pair of currency codes"),
        ("USD/ZAR/EUR", "INVALID_PAIR", "not a pair of currency codes"),
        ("USD//ZAR", "INVALID_PAIR", "not a pair of currency codes"),
        ("dollars", "INVALID_PAIR", "not a pair of currency codes"),
    ],
)
def test_a_bad_pair_is_rejected_with_the_right_code(
    wb: Workbench, write_file: WriteFile, value: str, code: str, in_message: str
) -> None:
    [rejection] = rejected_alone(wb, write_file, currency_pair=value).rejections
    assert (rejection.row, rejection.column, rejection.code) == (3, "currency_pair", code)
    assert in_message in rejection.message


# ---------------------------------------------------------------- side


@pytest.mark.parametrize(
    ("value", "side"), [("B", "BUY"), ("S", "SELL"), ("buy", "BUY"), ("sell", "SELL"), ("Buy", "BUY"), ("s", "SELL")]
)
def test_side_is_buy_or_sell_in_any_case_or_abbreviated(
    wb: Workbench, write_file: WriteFile, value: str, side: str
) -> None:
    assert accepted_trade(wb, write_file, side=value)["side"] == side


@pytest.mark.parametrize(("value", "code"), [("", "MISSING_VALUE"), ("HOLD", "INVALID_SIDE"), ("BS", "INVALID_SIDE")])
def test_a_missing_or_unknown_side_is_rejected(wb: Workbench, write_file: WriteFile, value: str, code: str) -> None:
    assert problems(rejected_alone(wb, write_file, side=value)) == [(3, "side", code)]


# ---------------------------------------------------------------- amount


@pytest.mark.parametrize(
    ("value", "amount"),
    [
        ('"1,250,000.00"', Decimal("1250000.00")),
        ("1 250 000.00", Decimal("1250000.00")),
        ("75 000.50", Decimal("75000.50")),
        ("1\u00a0250\u00a0000.00", Decimal("1250000.00")),
        ('"1,000"', Decimal("1000")),
        ("1000", Decimal("1000")),
        ("1000.5", Decimal("1000.50")),
        ("0.01", Decimal("0.01")),
        ("1000.500", Decimal("1000.50")),
        ("+250", Decimal("250")),
    ],
)
def test_amounts_with_thousands_separators_are_accepted(
    wb: Workbench, write_file: WriteFile, value: str, amount: Decimal
) -> None:
    assert accepted_trade(wb, write_file, amount=value)["amount"] == float(amount)


def test_amounts_are_stored_as_exact_decimals(wb: Workbench, write_file: WriteFile) -> None:
    result = load_lines(wb, write_file, good_row(1, amount="12345678901234.56"), good_row(2, amount="0.07"))
    stored = (
        wb.store.cursor()
        .execute("SELECT amount FROM trades WHERE batch_id = ? ORDER BY src_row", [result.batch_id])
        .fetchall()
    )
    assert stored == [(Decimal("12345678901234.56"),), (Decimal("0.07"),)]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", "MISSING_VALUE"),
        ('"12,34"', "INVALID_AMOUNT"),
        ('"1,2345.00"', "INVALID_AMOUNT"),
        ("abc", "INVALID_AMOUNT"),
        ("R1000", "INVALID_AMOUNT"),
        ("1.000.000", "INVALID_AMOUNT"),
        (".", "INVALID_AMOUNT"),
        ("NaN", "INVALID_AMOUNT"),
        ("inf", "INVALID_AMOUNT"),
        ("0", "NON_POSITIVE_AMOUNT"),
        ("0.00", "NON_POSITIVE_AMOUNT"),
        ("-5", "NON_POSITIVE_AMOUNT"),
        ('"-1,000.00"', "NON_POSITIVE_AMOUNT"),
        ("10000000000000000", "AMOUNT_TOO_LARGE"),
        ("1e23", "SCIENTIFIC_NOTATION"),
        ("1.234", "TOO_MANY_DECIMALS"),
        ("0.001", "TOO_MANY_DECIMALS"),
        ("1.23457E+06", "SCIENTIFIC_NOTATION"),
    ],
)
def test_a_bad_amount_is_rejected_with_the_right_code(
    wb: Workbench, write_file: WriteFile, value: str, code: str
) -> None:
    [rejection] = rejected_alone(wb, write_file, amount=value).rejections
    assert (rejection.row, rejection.column, rejection.code) == (3, "amount", code)
    assert rejection.value == (value.strip('"') or None), "the value is shown as it was in the file"


# ---------------------------------------------------------------- amount_currency


@pytest.mark.parametrize(
    ("pair", "given", "stored"),
    [
        ("USD/ZAR", "", "ZAR"),
        ("EUR/ZAR", "", "ZAR"),
        ("USD/ZAR", "USD", "USD"),
        ("USD/ZAR", "usd", "USD"),
        ("USD/ZAR", "zar", "ZAR"),
        ("EUR/USD", "EUR", "EUR"),
        ("EUR/USD", "usd", "USD"),
    ],
)
def test_amount_currency_defaults_to_zar_and_may_be_either_currency_of_the_pair(
    wb: Workbench, write_file: WriteFile, pair: str, given: str, stored: str
) -> None:
    trade = accepted_trade(wb, write_file, currency_pair=pair, amount_currency=given)
    assert (trade["currency_pair"], trade["amount_currency"]) == (pair, stored)


def test_a_cross_pair_without_amount_currency_is_rejected_as_missing(wb: Workbench, write_file: WriteFile) -> None:
    [rejection] = rejected_alone(wb, write_file, currency_pair="EUR/USD", amount_currency="").rejections
    assert (rejection.row, rejection.column, rejection.code) == (3, "amount_currency", "MISSING_VALUE")
    assert "EUR/USD" in rejection.message and "no ZAR" in rejection.message


@pytest.mark.parametrize(("pair", "given"), [("USD/ZAR", "EUR"), ("EUR/USD", "ZAR"), ("USD/ZAR", "XYZ")])
def test_an_amount_currency_outside_the_pair_is_rejected(
    wb: Workbench, write_file: WriteFile, pair: str, given: str
) -> None:
    [rejection] = rejected_alone(wb, write_file, currency_pair=pair, amount_currency=given).rejections
    assert (rejection.row, rejection.column, rejection.code) == (3, "amount_currency", "INVALID_AMOUNT_CURRENCY")
    assert rejection.value == given


def test_amount_currency_is_not_judged_when_the_pair_itself_is_bad(wb: Workbench, write_file: WriteFile) -> None:
    assert problems(rejected_alone(wb, write_file, currency_pair="EUR/CHF", amount_currency="")) == [
        (3, "currency_pair", "UNSUPPORTED_PAIR")
    ]


# ---------------------------------------------------------------- spread_pips


@pytest.mark.parametrize(("value", "spread"), [("0", 0), ("2000", 2000), ("385", 385), (" 385 ", 385), ("25.0", 25)])
def test_whole_spreads_from_0_to_2000_pips_are_accepted(
    wb: Workbench, write_file: WriteFile, value: str, spread: int
) -> None:
    assert accepted_trade(wb, write_file, spread_pips=value)["spread_pips"] == spread


def test_an_empty_spread_takes_the_default_setting(tmp_path: Path, write_file: WriteFile) -> None:
    from fxbatch import Settings

    with Workbench.open(settings=Settings(db=tmp_path / "spread.duckdb", default_spread_pips=42)) as wb:
        assert accepted_trade(wb, write_file, spread_pips="")["spread_pips"] == 42


@pytest.mark.parametrize("value", ["2001", "-1", "25.5", "1000.01", "abc", "25bps", "nan", "inf", "1e3"])
def test_a_spread_that_is_not_a_whole_number_of_pips_from_0_to_2000_is_rejected(
    wb: Workbench, write_file: WriteFile, value: str
) -> None:
    [rejection] = rejected_alone(wb, write_file, spread_pips=value).rejections
    assert (rejection.row, rejection.column, rejection.code, rejection.value) == (
        3,
        "spread_pips",
        "INVALID_SPREAD",
        value,
    )
    assert "whole number of pips from 0 to 2000" in rejection.message


def test_a_spread_of_half_the_pairs_rate_or_more_is_rejected_naming_the_widest_it_takes(
    wb: Workbench, write_file: WriteFile
) -> None:
    # JPY/ZAR at 0.1151 is 1,151 pips in all: 1,500 pips sold down would give a negative rate
    jpy = {"currency_pair": "JPY/ZAR", "side": "SELL", "amount_currency": "ZAR"}
    [rejection] = rejected_alone(wb, write_file, spread_pips="600", **jpy).rejections
    assert (rejection.row, rejection.column, rejection.code, rejection.value) == (
        3,
        "spread_pips",
        "SPREAD_TOO_WIDE",
        "600",
    )
    assert rejection.message == (
        "spread_pips 600 is half or more of the rate of JPY/ZAR, 0.1151 (1,151 pips): at most 575 pips on JPY/ZAR"
    )
    assert accepted_trade(wb, write_file, spread_pips="575", **jpy)["spread_pips"] == 575
    # over 2000 is the one rule's, not both
    [wide] = rejected_alone(wb, write_file, spread_pips="2001", **jpy).rejections
    assert wide.code == "INVALID_SPREAD"
    # the same spread is fine on a pair whose rate is large enough
    assert accepted_trade(wb, write_file, spread_pips="600", currency_pair="USD/ZAR")["spread_pips"] == 600


def test_a_default_spread_too_wide_for_a_pair_is_rejected_naming_the_setting(
    tmp_path: Path, write_file: WriteFile
) -> None:
    from fxbatch import Settings

    with Workbench.open(settings=Settings(db=tmp_path / "wide.duckdb", default_spread_pips=600)) as wb:
        jpy = {"currency_pair": "JPY/ZAR", "side": "BUY", "amount_currency": "ZAR"}
        [rejection] = rejected_alone(wb, write_file, spread_pips="", **jpy).rejections
        assert (rejection.code, rejection.value) == ("SPREAD_TOO_WIDE", None)
        assert rejection.message.startswith("the default spread of 600 pips (setting FXBATCH_DEFAULT_SPREAD_PIPS) is")


# ---------------------------------------------------------------- delivery and value_date


@pytest.mark.parametrize(
    ("value", "delivery", "value_date"),
    [
        ("", "SPOT", date(2026, 12, 2)),
        ("SPOT", "SPOT", date(2026, 12, 2)),
        ("tom", "TOM", date(2026, 12, 1)),
        ("Cash", "CASH", date(2026, 11, 30)),
    ],
)
def test_the_value_date_is_derived_from_the_delivery_when_absent(
    wb: Workbench, write_file: WriteFile, value: str, delivery: str, value_date: date
) -> None:
    trade = accepted_trade(wb, write_file, delivery=value)
    assert (trade["delivery"], trade["value_date"].date()) == (delivery, value_date)


@pytest.mark.parametrize(
    ("delivery", "value_date"), [("SPOT", date(2026, 12, 8)), ("TOM", date(2026, 12, 7)), ("CASH", date(2026, 12, 4))]
)
def test_derived_value_dates_skip_the_weekend(
    wb: Workbench, write_file: WriteFile, delivery: str, value_date: date
) -> None:
    friday = date(2026, 12, 4)
    trade = accepted_trade(wb, write_file, today=friday, delivery=delivery)
    assert trade["value_date"].date() == value_date


def test_an_unknown_delivery_is_rejected(wb: Workbench, write_file: WriteFile) -> None:
    assert problems(rejected_alone(wb, write_file, delivery="NEXT")) == [(3, "delivery", "INVALID_DELIVERY")]


@pytest.mark.parametrize(
    ("value", "delivery", "stored"),
    [
        ("2026-12-03", "SPOT", date(2026, 12, 3)),
        ("2026/12/03", "SPOT", date(2026, 12, 3)),
        ("20261203", "", date(2026, 12, 3)),
        ("03/12/2026", "SPOT", date(2026, 12, 3)),
        ("2026-12-03 00:00:00", "SPOT", date(2026, 12, 3)),
        ("2026-12-02", "SPOT", date(2026, 12, 2)),
        ("2026-12-01", "TOM", date(2026, 12, 1)),
        ("2026-11-30", "CASH", TODAY),
    ],
)
def test_a_given_value_date_today_or_later_is_kept(
    wb: Workbench, write_file: WriteFile, value: str, delivery: str, stored: date
) -> None:
    trade = accepted_trade(wb, write_file, value_date=value, delivery=delivery)
    assert trade["value_date"].date() == stored


@pytest.mark.parametrize(
    ("delivery", "value", "reason"),
    [
        ("CASH", "2026-12-01", "a CASH trade made on 2026-11-30 settles that day"),
        ("TOM", "2026-12-02", "a TOM trade made on 2026-11-30 settles on 2026-12-01"),
        ("TOM", "2026-11-30", "a TOM trade made on 2026-11-30 settles on 2026-12-01"),
        ("SPOT", "2026-12-01", "a SPOT trade made on 2026-11-30 settles on 2026-12-02 or later (a forward)"),
        ("SPOT", "2027-12-02", "it is more than 366 days ahead (the last date a bank takes is 2027-12-01)"),
    ],
)
def test_a_written_value_date_that_does_not_suit_the_delivery_is_rejected_saying_which_date_it_takes(
    wb: Workbench, write_file: WriteFile, delivery: str, value: str, reason: str
) -> None:
    [rejection] = rejected_alone(wb, write_file, value_date=value, delivery=delivery).rejections
    assert (rejection.row, rejection.column, rejection.code, rejection.value) == (
        3,
        "value_date",
        "VALUE_DATE_MISMATCH",
        value,
    )
    assert rejection.message == f"value_date {value} does not suit delivery {delivery}: {reason}"


def test_a_batch_prepared_the_day_before_is_checked_for_the_day_it_will_run(
    wb: Workbench, write_file: WriteFile
) -> None:
    """CASH and TOM dates written for tomorrow's run do not suit a load today; checked for tomorrow
    (``today``: the CLI's --trade-date, the Upload page's Trading date) they pass."""
    lines = [
        good_row(1, delivery="CASH", value_date="2026-12-01"),
        good_row(2, delivery="TOM", value_date="2026-12-02"),
    ]
    path = write_file("\n".join([HEADER, *lines]) + "\n")
    report = wb.check(path)
    assert (report.accepted, [r.row for r in report.rejected_rows]) == (0, [2, 3])
    assert all("does not suit delivery" in r.problems[0] for r in report.rejected_rows)
    loaded = wb.load(path, today=date(2026, 12, 1))
    assert (loaded.accepted, loaded.rejected) == (2, 0)
    for day, said in ((date(2026, 11, 27), "2026-11-27"), (date(2026, 12, 15), "2026-12-15")):
        with pytest.raises(SettingsError) as err:
            wb.check(path, today=day)
        assert err.value.message == (
            f"trading date {said}: a file is checked for today (2026-11-30) or a trading date up to 14 days ahead, "
            "when the batch will run."
        )


def test_an_empty_delivery_is_spot_and_says_so_when_the_written_date_is_before_spot(
    wb: Workbench, write_file: WriteFile
) -> None:
    [rejection] = rejected_alone(wb, write_file, value_date="2026-12-01", delivery="").rejections
    assert rejection.message == (
        "value_date 2026-12-01 does not suit delivery SPOT (SPOT when the delivery is empty): "
        "a SPOT trade made on 2026-11-30 settles on 2026-12-02 or later (a forward)"
    )


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("2026-11-27", "PAST_VALUE_DATE"),
        ("2020-01-02", "PAST_VALUE_DATE"),
        ("2026-02-30", "INVALID_DATE"),
        ("tomorrow", "INVALID_DATE"),
        ("12/31/2026", "INVALID_DATE"),
        ("2026121", "INVALID_DATE"),  # 1 December or 21 January? Compact dates have eight digits
        ("02/12/26", "INVALID_DATE"),  # a two-digit year (read as year 2, it said "in the past")
        ("2/12/26", "INVALID_DATE"),
    ],
)
def test_a_past_or_unreadable_value_date_is_rejected(
    wb: Workbench, write_file: WriteFile, value: str, code: str
) -> None:
    [rejection] = rejected_alone(wb, write_file, value_date=value).rejections
    assert (rejection.row, rejection.column, rejection.code, rejection.value) == (3, "value_date", code, value)


def test_the_past_value_date_message_says_what_today_is(wb: Workbench, write_file: WriteFile) -> None:
    [rejection] = rejected_alone(wb, write_file, value_date="2026-11-27").rejections
    assert "today is 2026-11-30" in rejection.message


# ---------------------------------------------------------------- reference


def test_a_reference_of_140_characters_is_accepted(wb: Workbench, write_file: WriteFile) -> None:
    assert accepted_trade(wb, write_file, reference="é" * 140)["reference"] == "é" * 140


def test_a_reference_over_140_characters_is_rejected(wb: Workbench, write_file: WriteFile) -> None:
    [rejection] = rejected_alone(wb, write_file, reference="x" * 141).rejections
    assert (rejection.row, rejection.column, rejection.code) == (3, "reference", "REFERENCE_TOO_LONG")
    assert "141 characters" in rejection.message


def test_an_empty_reference_is_stored_as_missing(wb: Workbench, write_file: WriteFile) -> None:
    assert accepted_trade(wb, write_file, reference="")["reference"] is None


# ---------------------------------------------------------------- trade_id


def test_a_repeated_trade_id_rejects_the_later_row(wb: Workbench, write_file: WriteFile) -> None:
    result = load_lines(
        wb, write_file, good_row(1), good_row(2), good_row(1, reference="again"), good_row(3), good_row(1)
    )
    assert problems(result) == [(4, "trade_id", "DUPLICATE_TRADE_ID"), (6, "trade_id", "DUPLICATE_TRADE_ID")]
    assert all(r.value == "T00001" and "already used on row 2" in r.message for r in result.rejections)
    assert wb.trades(result.batch_id)["row"].tolist() == [2, 3, 5]
    assert (result.accepted, result.rejected) == (3, 2)


def test_a_repeated_trade_id_is_found_in_a_file_read_in_parallel_chunks(wb: Workbench, write_file: WriteFile) -> None:
    lines = [good_row(i) for i in range(1, 60_001)] + [good_row(7, reference="late duplicate")]
    result = load_lines(wb, write_file, *lines)
    assert problems(result) == [(60_002, "trade_id", "DUPLICATE_TRADE_ID")]
    assert "already used on row 8" in result.rejections[0].message
    trades = wb.trades(result.batch_id)
    assert len(trades) == 60_000 and trades["row"].iloc[-1] == 60_001


def test_a_duplicate_of_a_rejected_row_is_still_a_duplicate(wb: Workbench, write_file: WriteFile) -> None:
    result = load_lines(wb, write_file, good_row(1, amount="abc"), good_row(1), good_row(2))
    assert problems(result) == [(2, "amount", "INVALID_AMOUNT"), (3, "trade_id", "DUPLICATE_TRADE_ID")]


def test_a_missing_trade_id_is_generated_from_the_row_number(wb: Workbench, write_file: WriteFile) -> None:
    result = load_lines(wb, write_file, good_row(1, trade_id=""), good_row(2), good_row(3, trade_id=""))
    assert wb.trades(result.batch_id)["trade_id"].tolist() == ["ROW0000002", "T00002", "ROW0000004"]


def test_a_made_trade_id_never_clashes_with_one_the_file_gives(wb: Workbench, write_file: WriteFile) -> None:
    # A re-upload of an export (ids made as ROW<row>) with new rows that have none: the analyst's
    # ids win and no row is rejected for an id it did not give.
    result = load_lines(
        wb, write_file, good_row(1, trade_id="ROW0000003"), good_row(2, trade_id=""), good_row(3, trade_id="ROW0000003")
    )
    assert problems(result) == [(4, "trade_id", "DUPLICATE_TRADE_ID")]  # given twice: still a duplicate
    assert "already used on row 2" in result.rejections[0].message
    assert wb.trades(result.batch_id)["trade_id"].tolist() == ["ROW0000003", "ROW0000003-1"]


def test_trade_ids_are_compared_after_trimming(wb: Workbench, write_file: WriteFile) -> None:
    result = load_lines(wb, write_file, good_row(1, trade_id="A1"), good_row(2, trade_id=" A1 "))
    assert problems(result) == [(3, "trade_id", "DUPLICATE_TRADE_ID")]


# ---------------------------------------------------------------- totals, blanks and extra values


@pytest.mark.parametrize(
    "line",
    [
        ',,,,TOTAL,"1,336,500.50",,,,,',
        "Total,,,,,2000,,,,,",
        "GRAND TOTAL,,,,,2000,,,,,",
        ",Sub total,,,,2000,,,,,",
        ",,,,,2000,,,,,",
    ],
)
def test_a_totals_row_is_rejected_as_a_totals_row(wb: Workbench, write_file: WriteFile, line: str) -> None:
    result = load_lines(wb, write_file, good_row(1), good_row(2), line)
    if line.startswith(",,,,,"):  # an amount alone is not labelled as a total: it is a broken trade row
        assert {r.code for r in result.rejections} == {"MISSING_VALUE"}
        return
    assert problems(result) == [(4, "(row)", "TOTAL_ROW")]
    assert result.rejected == 1


def test_a_trade_whose_id_is_total_is_still_a_trade(wb: Workbench, write_file: WriteFile) -> None:
    assert accepted_trade(wb, write_file, trade_id="TOTAL")["trade_id"] == "TOTAL"


@pytest.mark.parametrize("line", [",,,,,,,,,,", "", ",,,", " , , , ", "\t,\t,,,,,,,,,", ",,,,,,,,,,,,,,,,,,,,,,"])
def test_an_entirely_blank_row_is_ignored(wb: Workbench, write_file: WriteFile, line: str) -> None:
    result = load_lines(wb, write_file, good_row(1), line, good_row(2))
    assert (result.rows, result.accepted, result.rejected, result.ignored) == (3, 2, 0, 1)
    assert wb.trades(result.batch_id)["row"].tolist() == [2, 4]


@pytest.mark.parametrize("padding", [1, 4, 5, 12])
def test_values_right_of_the_last_header_column_reject_the_row(
    wb: Workbench, write_file: WriteFile, padding: int
) -> None:
    line = good_row(2) + "," * padding + "note"
    result = load_lines(wb, write_file, good_row(1), line, good_row(3))
    # Named as the spreadsheet shows the column: the header row has 11 columns (A-K).
    where = column_label(len(good_row(2).split(",")) + padding - 1)
    assert problems(result) == [(3, where, "EXTRA_VALUES")]
    assert where == {1: "column L", 4: "column O", 5: "column P", 12: "column W"}[padding]
    assert result.rejections[0].value == "note"
    assert result.rejections[0].message == "the row has values beyond column K, the last named one: note"


def test_empty_cells_right_of_the_header_are_fine(wb: Workbench, write_file: WriteFile) -> None:
    result = load_lines(wb, write_file, good_row(1) + ",,,,,,,,", good_row(2) + ", ,")
    assert (result.accepted, result.rejected) == (2, 0)


def test_a_value_in_an_unnamed_column_inside_the_header_is_not_an_extra_value(
    wb: Workbench, write_file: WriteFile
) -> None:
    header = HEADER.replace(",reference", ",,reference")
    row = good_row(1).rsplit(",", 1)
    text = f"{header}\n{row[0]},scribble,{row[1]}\n"
    result = wb.load(write_file(text), today=TODAY)
    assert (result.accepted, result.rejected) == (1, 0)


# ---------------------------------------------------------------- whitespace and several problems


def test_values_are_trimmed_of_spaces_and_non_breaking_spaces(wb: Workbench, write_file: WriteFile) -> None:
    trade = accepted_trade(
        wb,
        write_file,
        client_cif="\u00a00123456789\u00a0",
        account_number=" 0012345678 ",
        currency_pair=" usd/zar\u3000",
        side=" b ",
        amount="\u00a01000.00",
    )
    assert (trade["client_cif"], trade["account_number"], trade["currency_pair"], trade["side"]) == (
        "0123456789",
        "0012345678",
        "USD/ZAR",
        "BUY",
    )


def test_values_are_trimmed_of_tabs_at_their_edges(wb: Workbench, write_file: WriteFile) -> None:
    trade = accepted_trade(
        wb, write_file, trade_id="\tT9\t", client_cif="\t0123456789", side="SELL\t \t", amount="\t 5.00"
    )
    assert (trade["trade_id"], trade["client_cif"], trade["side"], str(trade["amount"])) == (
        "T9",
        "0123456789",
        "SELL",
        "5.0",
    )


def test_values_are_trimmed_of_line_breaks_at_their_edges(wb: Workbench, write_file: WriteFile) -> None:
    # A quoted cell can end in a line break (Alt+Enter in Excel, pasted text): it is no part of the value.
    trade = accepted_trade(
        wb, write_file, client_cif='"0123456789\n"', currency_pair='"USD/ZAR\r\n"', amount='"\n5.00"'
    )
    assert (trade["client_cif"], trade["currency_pair"], str(trade["amount"])) == ("0123456789", "USD/ZAR", "5.0")


def test_a_row_with_several_problems_lists_each_and_counts_once(wb: Workbench, write_file: WriteFile) -> None:
    result = load_lines(
        wb,
        write_file,
        good_row(1, client_cif="abc", currency_pair="XYZ/ZAR", side="HOLD", amount="-1", reference="r" * 200),
        good_row(2),
    )
    assert (result.rows, result.accepted, result.rejected) == (2, 1, 1)
    assert sorted(problems(result)) == [
        (2, "amount", "NON_POSITIVE_AMOUNT"),
        (2, "client_cif", "INVALID_CIF"),
        (2, "currency_pair", "UNKNOWN_CURRENCY"),
        (2, "reference", "REFERENCE_TOO_LONG"),
        (2, "side", "INVALID_SIDE"),
    ]


def test_rejections_are_stored_with_the_batch(wb: Workbench, write_file: WriteFile) -> None:
    result = load_lines(wb, write_file, good_row(1), good_row(2, side="HOLD"))
    stored = wb.rejections(result.batch_id)
    assert stored[["row", "column", "value", "code"]].values.tolist() == [[3, "side", "HOLD", "INVALID_SIDE"]]
    assert stored["message"].iloc[0] == result.rejections[0].message


def test_a_file_where_no_row_is_valid_creates_no_batch(wb: Workbench, write_file: WriteFile) -> None:
    with pytest.raises(UnusableFileError) as err:
        load_lines(wb, write_file, good_row(1, side="HOLD"), "", good_row(2, amount="0"))
    assert err.value.code == "NO_VALID_ROWS"
    assert "None of the 2 trade rows" in err.value.message
    assert "row 2 side" in err.value.message
    assert wb.batches() == []
