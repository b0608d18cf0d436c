"""Header recognition: normalisation, aliases (DOMAIN.md 2.1), header row search, layouts."""

from __future__ import annotations

import pytest

from fxbatch import UnusableFileError
from fxbatch.ingest.layout import column_label, find_header_row, header_score, normalise_header, plan_columns
from fxbatch.models import Layout

CANONICAL = [
    "trade_id",
    "client_cif",
    "account_number",
    "currency_pair",
    "side",
    "amount",
    "amount_currency",
    "spread_pips",
    "delivery",
    "value_date",
    "reference",
]
LEGACY = ["Client CIF", "Amount ZAR", "Account Number", "Spread", "CurPair"]
LEGACY_RESULTS = [
    "Quote ID",
    "Quote At",
    "Quote Rate",
    "Quote Expiry",
    "Deal Reference",
    "Spot Rate",
    "Bank Rate",
    "Deal Rate",
]

# Copied from the "also accepted as header" column of DOMAIN.md 2.1, on purpose not taken
# from the code: removing an alias from the code must fail a test.
DOMAIN_ALIASES = [
    ("trade_id", "id"),
    ("trade_id", "trade ref"),
    ("client_cif", "cif"),
    ("client_cif", "cif no"),
    ("client_cif", "client cif"),
    ("client_cif", "customer cif"),
    ("client_cif", "client id"),
    ("account_number", "account"),
    ("account_number", "account no"),
    ("account_number", "acc no"),
    ("account_number", "settlement account"),
    ("currency_pair", "pair"),
    ("currency_pair", "ccy pair"),
    ("currency_pair", "curpair"),
    ("side", "direction"),
    ("side", "buy/sell"),
    ("side", "trade type"),
    ("amount", "notional"),
    ("amount", "deal amount"),
    ("amount", "amount zar"),
    ("amount_currency", "deal currency"),
    ("amount_currency", "ccy"),
    ("spread_pips", "spread"),
    ("spread_pips", "spread bips"),
    ("spread_pips", "fixed spread"),
    ("spread_pips", "spread bps"),
    ("spread_pips", "Spread_BPS"),
    ("spread_pips", "bips"),
    ("spread_pips", "pips"),
    ("delivery", "delivery type"),
    ("delivery", "deal type"),
    ("value_date", "settlement date"),
    ("reference", "external ref"),
    ("reference", "narrative"),
]


def with_header(field: str, spelling: str) -> list[str]:
    """The canonical header with one field spelled differently."""
    return [spelling if name == field else name for name in CANONICAL]


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "spelling",
    ["client_cif", "Client CIF", "CLIENT-CIF", " client cif ", "Client.CIF", "client__cif", "ClientCIF", "Client\tCIF"],
)
def test_header_matching_ignores_case_spaces_underscores_and_punctuation(spelling: str) -> None:
    assert normalise_header(spelling) == "clientcif"


def test_normalising_an_empty_or_missing_header_gives_an_empty_name() -> None:
    assert normalise_header(None) == ""
    assert normalise_header("  -- ") == ""


@pytest.mark.parametrize(("field", "alias"), DOMAIN_ALIASES)
def test_every_alias_in_the_domain_reference_names_its_field(field: str, alias: str) -> None:
    headers = with_header(field, alias)
    plan = plan_columns(headers)
    assert plan.field_to_index[field] == CANONICAL.index(field)
    assert plan.layout is Layout.CANONICAL


@pytest.mark.parametrize(("field", "alias"), DOMAIN_ALIASES)
def test_aliases_match_in_any_case_and_spacing(field: str, alias: str) -> None:
    shouted = alias.upper().replace(" ", "_")
    plan = plan_columns(with_header(field, f"  {shouted} "))
    assert plan.field_to_index[field] == CANONICAL.index(field)


def test_the_canonical_names_themselves_are_recognised() -> None:
    plan = plan_columns(CANONICAL)
    assert plan.field_to_index == {name: i for i, name in enumerate(CANONICAL)}
    assert plan.ignored_columns == []


def test_the_column_map_shows_the_files_own_header_names() -> None:
    plan = plan_columns(["Trade Ref", "CIF No", "Acc No", "Ccy Pair", "Buy/Sell", "Notional"])
    assert plan.column_map == {
        "Trade Ref": "trade_id",
        "CIF No": "client_cif",
        "Acc No": "account_number",
        "Ccy Pair": "currency_pair",
        "Buy/Sell": "side",
        "Notional": "amount",
    }


def test_unknown_columns_are_listed_as_ignored_and_blank_headers_are_skipped() -> None:
    plan = plan_columns([*CANONICAL[:6], "", "Desk notes", "Approved by"])
    assert plan.ignored_columns == ["Desk notes", "Approved by"]
    assert "amount_currency" not in plan.field_to_index


# ---------------------------------------------------------------- header row search


def test_the_header_is_found_below_title_and_blank_rows() -> None:
    rows: list[list[object]] = [
        ["Morning batch 29 Nov", None, None],
        [],
        [None, "", None],
        ["Prepared by: desk", "", ""],
        list(CANONICAL),
        ["T1", "0123", "0456", "USD/ZAR", "BUY", "100"],
    ]
    assert find_header_row(rows) == 4


def test_a_title_naming_only_one_or_two_fields_is_not_taken_for_the_header() -> None:
    rows = [["Client CIF report"], ["Amount", "Spread"], ["Client CIF", "Account No", "CurPair"]]
    assert header_score(rows[1]) == 2
    assert find_header_row(rows) == 2


def test_a_row_repeating_one_field_under_several_spellings_counts_it_once() -> None:
    assert header_score(["cif", "client cif", "customer cif"]) == 1
    assert find_header_row([["cif", "client cif", "customer cif"]]) is None


def test_rows_without_any_header_give_none() -> None:
    assert find_header_row([["0123", "0456", "USD/ZAR", "BUY", "100"], []]) is None


def test_header_cells_that_are_numbers_or_missing_do_not_break_the_search() -> None:
    assert find_header_row([[1, 2.5, None], ["Client CIF", "Account No", "Pair", None, 7]]) == 1


# ---------------------------------------------------------------- layouts


def test_the_legacy_desk_header_is_the_legacy_layout() -> None:
    plan = plan_columns(LEGACY)
    assert plan.layout is Layout.LEGACY
    assert plan.field_to_index == {
        "client_cif": 0,
        "amount": 1,
        "account_number": 2,
        "spread_pips": 3,
        "currency_pair": 4,
    }


def test_legacy_result_columns_from_a_previous_run_are_ignored() -> None:
    plan = plan_columns(LEGACY + LEGACY_RESULTS)
    assert plan.layout is Layout.LEGACY
    assert plan.ignored_columns == LEGACY_RESULTS
    assert max(plan.field_to_index.values()) == 4


def test_legacy_is_recognised_in_any_column_order_and_case() -> None:
    plan = plan_columns(["CURPAIR", "client cif", "account number", "AMOUNT ZAR"])
    assert plan.layout is Layout.LEGACY
    assert plan.field_to_index["currency_pair"] == 0


def test_a_sheet_with_curpair_and_a_side_column_is_canonical() -> None:
    plan = plan_columns(with_header("currency_pair", "CurPair"))
    assert plan.layout is Layout.CANONICAL
    assert plan.field_to_index["side"] == CANONICAL.index("side")


def test_a_canonical_sheet_without_a_side_column_is_refused_naming_side() -> None:
    headers = [h for h in CANONICAL if h != "side"]
    with pytest.raises(UnusableFileError) as err:
        plan_columns(headers)
    assert err.value.code == "MISSING_COLUMN"
    assert "missing: side." in err.value.message


# ---------------------------------------------------------------- missing and ambiguous columns


@pytest.mark.parametrize("field", ["client_cif", "account_number", "currency_pair", "side", "amount"])
def test_a_missing_required_column_is_named_along_with_what_was_found(field: str) -> None:
    headers = [h for h in CANONICAL if h != field]
    with pytest.raises(UnusableFileError) as err:
        plan_columns(headers)
    assert err.value.code == "MISSING_COLUMN"
    message = err.value.message
    assert f"missing: {field}." in message
    assert "found 'trade_id'" in message
    assert "'reference'" in message
    assert "Client CIF, Amount ZAR, Account Number, Spread, CurPair" in message, "says what was expected"


def test_every_missing_column_is_named_at_once() -> None:
    with pytest.raises(UnusableFileError) as err:
        plan_columns(["trade_id", "client_cif", "currency_pair", "reference"])
    assert "missing: account_number, side, amount." in err.value.message


def test_a_legacy_sheet_without_its_amount_names_amount() -> None:
    with pytest.raises(UnusableFileError) as err:
        plan_columns(["Client CIF", "Account Number", "Spread", "CurPair"])
    assert err.value.code == "MISSING_COLUMN"
    assert "missing: amount." in err.value.message
    assert "'CurPair'" in err.value.message


def test_a_header_with_no_names_says_so() -> None:
    with pytest.raises(UnusableFileError) as err:
        plan_columns(["", None, "  "])
    assert "found no header names" in err.value.message


@pytest.mark.parametrize(
    ("first", "second", "field"),
    [
        ("trade_id", "ID", "trade_id"),
        ("amount", "Amount ZAR", "amount"),
        ("client_cif", "Customer CIF", "client_cif"),
        ("reference", "Narrative", "reference"),
    ],
)
def test_two_columns_meaning_the_same_field_are_refused_as_ambiguous(first: str, second: str, field: str) -> None:
    headers = [*CANONICAL]
    headers[CANONICAL.index(first)] = first
    headers.append(second)
    with pytest.raises(UnusableFileError) as err:
        plan_columns(headers)
    assert err.value.code == "AMBIGUOUS_COLUMNS"
    assert repr(first) in err.value.message and repr(second) in err.value.message
    assert f"both mean {field}" in err.value.message


def test_the_same_header_twice_is_ambiguous() -> None:
    with pytest.raises(UnusableFileError) as err:
        plan_columns([*CANONICAL, "Amount"])
    assert err.value.code == "AMBIGUOUS_COLUMNS"


# ---------------------------------------------------------------- column_map overrides


def test_a_column_map_names_a_column_the_aliases_do_not_know() -> None:
    headers = with_header("client_cif", "Kundennummer")
    with pytest.raises(UnusableFileError):
        plan_columns(headers)
    plan = plan_columns(headers, {"Kundennummer": "client_cif"})
    assert plan.field_to_index["client_cif"] == CANONICAL.index("client_cif")
    assert plan.column_map["Kundennummer"] == "client_cif"


def test_a_column_map_key_is_matched_like_a_header() -> None:
    plan = plan_columns(with_header("amount", "Betrag (EUR)"), {"betrag eur": "amount"})
    assert plan.field_to_index["amount"] == CANONICAL.index("amount")


def test_a_column_map_can_move_an_alias_to_another_field() -> None:
    # 'Deal Type' is an alias of delivery; this desk uses it for the side.
    headers = [h for h in CANONICAL if h not in ("side", "delivery")] + ["Deal Type"]
    plan = plan_columns(headers, {"Deal Type": "side"})
    assert plan.field_to_index["side"] == len(headers) - 1
    assert "delivery" not in plan.field_to_index


def test_a_column_map_to_the_empty_string_ignores_a_column_and_resolves_ambiguity() -> None:
    headers = [*CANONICAL, "Amount ZAR"]
    plan = plan_columns(headers, {"Amount ZAR": ""})
    assert plan.field_to_index["amount"] == CANONICAL.index("amount")
    assert plan.ignored_columns == ["Amount ZAR"]


def test_a_column_map_to_an_unknown_field_is_refused_naming_the_fields() -> None:
    with pytest.raises(UnusableFileError) as err:
        plan_columns(CANONICAL, {"amount": "notional_amount"})
    assert err.value.code == "BAD_MAPPING"
    assert "'notional_amount'" in err.value.message
    assert "client_cif" in err.value.message


def test_a_column_map_can_make_a_canonical_sheet_legacy_by_dropping_side() -> None:
    headers = ["Client CIF", "Amount ZAR", "Account Number", "CurPair", "Direction"]
    assert plan_columns(headers).layout is Layout.CANONICAL
    assert plan_columns(headers, {"Direction": ""}).layout is Layout.LEGACY


@pytest.mark.parametrize(
    ("index", "label"), [(0, "column A"), (25, "column Z"), (26, "column AA"), (51, "column AZ"), (52, "column BA"),
                         (701, "column ZZ"), (702, "column AAA"), (1023, "column AMJ")],
)  # fmt: skip
def test_a_column_is_named_by_its_spreadsheet_letters(index: int, label: str) -> None:
    assert column_label(index) == label


def test_a_mapping_naming_a_header_the_file_does_not_have_is_refused_naming_it() -> None:
    headers = [*CANONICAL[:6], "Margin"]
    with pytest.raises(UnusableFileError) as caught:
        plan_columns(headers, {"Margn": "spread_pips"})  # a typing mistake: not silently ignored
    assert (
        caught.value.code == "BAD_MAPPING" and "'Margn'" in caught.value.message and "'Margin'" in caught.value.message
    )
    assert plan_columns(headers, {" margin ": "spread_pips"}).column_map["Margin"] == "spread_pips"
