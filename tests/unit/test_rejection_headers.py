"""Rejections in the file's own words: the header the analyst sees ("Ccy Pair"), not the field (currency_pair)."""

from __future__ import annotations

from fxbatch.ingest import rejected_rows_in_file_terms, rejections_in_file_terms
from fxbatch.ingest.layout import field_headers, message_in_file_terms
from fxbatch.models import RejectCode, RejectedRow, Rejection

# File header -> field, as a CheckReport or LoadResult carries it.
DESK = {"Ccy Pair": "currency_pair", "Buy/Sell": "side", "Notional": "amount", "Settlement Date": "value_date"}


def make_rejection(**overrides: object) -> Rejection:
    fields: dict[str, object] = {
        "row": 4,
        "column": "currency_pair",
        "value": "XYZ/ZAR",
        "code": RejectCode.UNKNOWN_CURRENCY,
        "message": "currency_pair XYZ/ZAR: XYZ is not an ISO 4217 currency code",
    }
    return Rejection.model_validate({**fields, **overrides})


def test_field_headers_turn_the_column_map_round_and_skip_ignored_columns() -> None:
    assert field_headers({**DESK, "Comment": ""}) == {
        "currency_pair": "Ccy Pair",
        "side": "Buy/Sell",
        "amount": "Notional",
        "value_date": "Settlement Date",
    }


def test_a_rejection_names_the_files_header_in_its_column_and_its_message() -> None:
    [found] = rejections_in_file_terms([make_rejection()], DESK)
    assert found.column == "Ccy Pair"
    assert found.message == "Ccy Pair XYZ/ZAR: XYZ is not an ISO 4217 currency code"
    assert (found.row, found.value, found.code) == (4, "XYZ/ZAR", RejectCode.UNKNOWN_CURRENCY)


def test_the_original_rejection_is_left_as_it_was() -> None:
    original = make_rejection()
    rejections_in_file_terms([original], DESK)
    assert original.column == "currency_pair"


def test_a_message_that_spells_the_field_in_words_names_the_header_too() -> None:
    [found] = rejections_in_file_terms(
        [make_rejection(code=RejectCode.UNSUPPORTED_PAIR, message="currency pair NZD/ZAR is not offered")], DESK
    )
    assert found.message == "Ccy Pair NZD/ZAR is not offered"


def test_amount_currency_is_not_mistaken_for_amount() -> None:
    [found] = rejections_in_file_terms(
        [
            make_rejection(
                column="amount_currency",
                value="EUR",
                code=RejectCode.INVALID_AMOUNT_CURRENCY,
                message="amount currency EUR is not one of the currencies of USD/ZAR",
            )
        ],
        DESK,
    )
    # The file has no amount currency column: the field is named in words, never as "Notional currency".
    assert found.column == "amount currency"
    assert found.message == "amount currency EUR is not one of the currencies of USD/ZAR"


def test_a_field_named_inside_a_message_becomes_the_header_or_plain_words() -> None:
    headers = field_headers(DESK)
    assert message_in_file_terms("CASH settles on the trade date: give a value_date", headers) == (
        "CASH settles on the trade date: give a Settlement Date"
    )
    assert message_in_file_terms("amount_currency is required for EUR/USD (the pair has no ZAR)", headers) == (
        "amount currency is required for EUR/USD (the pair has no ZAR)"
    )


def test_row_level_markers_and_plain_english_stay_as_they_are() -> None:
    totals = make_rejection(
        column="(row)", value=None, code=RejectCode.TOTAL_ROW, message="this looks like a totals row; it is not a trade"
    )
    legacy = make_rejection(
        code=RejectCode.INVALID_AMOUNT_CURRENCY,
        message="legacy layout amounts are in ZAR but the pair EUR/USD has no ZAR",
    )
    found = rejections_in_file_terms([totals, legacy], {**DESK, "CurPair": "currency_pair"})
    assert [(r.column, r.message) for r in found] == [
        ("(row)", "this looks like a totals row; it is not a trade"),
        ("CurPair", "legacy layout amounts are in ZAR but the pair EUR/USD has no ZAR"),
    ]


def test_a_template_file_keeps_its_field_named_headers() -> None:
    [found] = rejections_in_file_terms([make_rejection()], {"currency_pair": "currency_pair"})
    assert (found.column, found.message) == ("currency_pair", make_rejection().message)


def test_rejected_rows_name_headers_in_their_problems_and_keep_their_values_by_field() -> None:
    row = RejectedRow(
        row=9,
        values={"side": "HOLD", "amount": "1000"},
        problems=["side HOLD must be BUY or SELL (or B/S)", "amount 1000.555 has more than 2 decimals"],
    )
    [found] = rejected_rows_in_file_terms([row], DESK)
    assert found.problems == [
        "Buy/Sell HOLD must be BUY or SELL (or B/S)",
        "Notional 1000.555 has more than 2 decimals",
    ]
    assert found.values == {"side": "HOLD", "amount": "1000"}
