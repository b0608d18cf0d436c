"""File formats and layouts: delimiters, encodings, line endings, XLSX, Parquet, legacy sheets."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest
import xlsxwriter

from fxbatch import Settings, UnusableFileError, Workbench
from fxbatch.models import Layout
from tests.conftest import DATA, HEADER, TODAY, good_row

WriteFile = Callable[..., Path]
COLUMNS = HEADER.split(",")
LEGACY_HEADER = "Client CIF,Amount ZAR,Account Number,Spread,CurPair"
LEGACY_RESULTS = "Quote ID,Quote At,Quote Rate,Quote Expiry,Deal Reference,Spot Rate,Bank Rate,Deal Rate"


def row_values(n: int, **overrides: str) -> list[str]:
    """The cells of ``good_row`` (before CSV quoting), with overrides."""
    values = dict(zip(COLUMNS, good_row(n).split(","), strict=True))
    values.update(overrides)
    return [values[c] for c in COLUMNS]


def delimited(rows: Sequence[Sequence[str]], delimiter: str, newline: str = "\n") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator=newline).writerows(rows)
    return out.getvalue()


def write_xlsx(path: Path, sheets: dict[str, Sequence[Sequence[object]]], *, first_row: int = 0) -> Path:
    """One worksheet per entry; None leaves a cell empty, str is written as text, numbers as numbers."""
    with xlsxwriter.Workbook(str(path)) as book:
        date_format = book.add_format({"num_format": "yyyy-mm-dd"})
        for name, rows in sheets.items():
            ws = book.add_worksheet(name)
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    if value is None:
                        continue
                    if isinstance(value, str):
                        ws.write_string(first_row + r, c, value)
                    elif isinstance(value, date | datetime):
                        ws.write_datetime(first_row + r, c, value, date_format)
                    else:
                        ws.write_number(first_row + r, c, value)  # type: ignore[arg-type]
    return path


def patch_xlsx_values(path: Path, replacements: dict[str, str]) -> None:
    """Rewrite stored cell values the way Excel itself writes them (17 significant digits)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.startswith("xl/worksheets/"):
                text = data.decode()
                for old, new in replacements.items():
                    assert f"<v>{old}</v>" in text
                    text = text.replace(f"<v>{old}</v>", f"<v>{new}</v>")
                data = text.encode()
            dst.writestr(item, data)
    path.write_bytes(buffer.getvalue())


def counts(result: object) -> tuple[int, int, int, int]:
    return (result.rows, result.accepted, result.rejected, result.ignored)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- delimited text


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimited_text_loads_with_any_common_delimiter(wb: Workbench, write_file: WriteFile, delimiter: str) -> None:
    rows = [
        ["Morning batch"],
        COLUMNS,
        row_values(1, amount="1,250,000.00", reference="a, b; c | d"),
        row_values(2, side="HOLD"),
        [],
        row_values(3),
    ]
    result = wb.load(write_file(delimited(rows, delimiter)), today=TODAY)
    assert counts(result) == (4, 2, 1, 1)
    assert [(r.row, r.code) for r in result.rejections] == [(4, "INVALID_SIDE")]
    trades = wb.trades(result.batch_id)
    assert trades["row"].tolist() == [3, 6]
    assert trades["amount"].tolist() == [1250000.0, 1000.0]
    assert trades["reference"].iloc[0] == "a, b; c | d"


def test_a_semicolon_file_with_decimal_commas_rejects_those_amounts(wb: Workbench, write_file: WriteFile) -> None:
    rows = [COLUMNS, row_values(1, amount="1250,50"), row_values(2, amount="1250.50")]
    result = wb.load(write_file(delimited(rows, ";")), today=TODAY)
    assert [(r.row, r.column, r.code) for r in result.rejections] == [(2, "amount", "INVALID_AMOUNT")]


def test_quoted_values_keep_their_delimiters_and_doubled_quotes(wb: Workbench, write_file: WriteFile) -> None:
    text = HEADER + "\n" + good_row(1, reference='"Invoice 12, part ""A"""') + "\n"
    result = wb.load(write_file(text), today=TODAY)
    assert wb.trades(result.batch_id)["reference"].tolist() == ['Invoice 12, part "A"']


def test_a_utf8_bom_is_not_taken_into_the_first_header(wb: Workbench, write_file: WriteFile) -> None:
    text = "\ufeff" + HEADER + "\n" + good_row(1) + "\n" + good_row(2) + "\n"
    result = wb.load(write_file(text), today=TODAY)
    assert result.column_map["trade_id"] == "trade_id"
    assert wb.trades(result.batch_id)["trade_id"].tolist() == ["T00001", "T00002"]


def test_a_utf8_bom_before_a_title_row_keeps_the_row_numbers(wb: Workbench, write_file: WriteFile) -> None:
    text = "\ufeffDesk batch\n\n" + HEADER + "\n" + good_row(1) + "\n" + good_row(2, amount="x") + "\n"
    result = wb.load(write_file(text), today=TODAY)
    assert [r.row for r in result.rejections] == [5]
    assert wb.trades(result.batch_id)["row"].tolist() == [4]


def three_rows(blank_line: bool) -> list[str]:
    """The header and three rows, the second with a bad side; a blank line after the first."""
    lines = [HEADER, good_row(1, reference=""), good_row(2, side="X"), good_row(3, reference="last")]
    if blank_line:
        lines.insert(2, "")
    return lines


@pytest.mark.parametrize("blank_line", [False, True], ids=["no-blank-lines", "with-blank-line"])
def test_crlf_line_endings_keep_row_numbers_and_leave_no_carriage_returns(
    wb: Workbench, write_file: WriteFile, blank_line: bool
) -> None:
    lines = three_rows(blank_line)
    result = wb.load(write_file("\r\n".join(lines) + "\r\n"), today=TODAY)
    bad_row = 4 if blank_line else 3
    assert [(r.row, r.code) for r in result.rejections] == [(bad_row, "INVALID_SIDE")]
    trades = wb.trades(result.batch_id)
    assert trades["reference"].tolist()[-1] == "last"
    assert pd.isna(trades["reference"].iloc[0]), "an empty last cell must not become '\\r'"
    assert result.ignored == (1 if blank_line else 0)


def test_bare_cr_line_ends_from_excel_for_mac_are_read(wb: Workbench, write_file: WriteFile) -> None:
    # "CSV (Macintosh)": records end in CR; a line break inside a cell is LF.
    lines = [HEADER, good_row(1, reference='"two\nlines"'), good_row(2, side="HOLD"), good_row(3)]
    result = wb.load(write_file("\r".join(lines) + "\r"), today=TODAY)
    assert [(r.row, r.code) for r in result.rejections] == [(4, "INVALID_SIDE")]
    trades = wb.trades(result.batch_id)
    assert trades["row"].tolist() == [2, 5]
    assert trades["reference"].tolist() == ["two\nlines", "ref 3"]


@pytest.mark.parametrize("blank_line", [False, True], ids=["no-blank-lines", "with-blank-line"])
def test_cr_cr_lf_line_ends_from_a_script_writing_crlf_in_text_mode_are_read_as_excel_shows_them(
    wb: Workbench, write_file: WriteFile, blank_line: bool
) -> None:
    # Python's csv module on Windows without newline="": each row ends CR CR LF, which Excel
    # shows as the row, then a blank row. Every row loads, numbered as Excel numbers it.
    lines = three_rows(blank_line)
    result = wb.load(write_file("\r\r\n".join(lines) + "\r\r\n"), today=TODAY)
    assert [(r.row, r.code) for r in result.rejections] == [(7 if blank_line else 5, "INVALID_SIDE")]
    trades = wb.trades(result.batch_id)
    assert trades["row"].tolist() == ([3, 9] if blank_line else [3, 7])
    assert trades["client_cif"].tolist() == ["0123456789", "0123456789"]
    assert trades["reference"].tolist()[-1] == "last" and pd.isna(trades["reference"].iloc[0])


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_one_stray_cr_among_lf_lines_ends_a_line_as_a_spreadsheet_reads_it(
    wb: Workbench, write_file: WriteFile, crlf: bool
) -> None:
    # One row pasted from a Mac tool ends in a bare CR; the rest of the file ends lines in LF (or
    # CRLF). Excel starts a new row at the CR: so does the load, and numbers the rows as Excel does.
    end = "\r\n" if crlf else "\n"
    text = HEADER + end + good_row(1) + "\r" + good_row(2, side="X") + end + good_row(3) + end
    result = wb.load(write_file(text), today=TODAY)
    assert [(r.row, r.code) for r in result.rejections] == [(3, "INVALID_SIDE")]
    assert wb.trades(result.batch_id)["row"].tolist() == [2, 4]


def test_a_bare_cr_inside_an_unquoted_cell_splits_the_row_and_the_rest_is_rejected_not_lost(
    wb: Workbench, write_file: WriteFile
) -> None:
    text = HEADER + "\n" + good_row(1, reference="first\rsecond") + "\n" + good_row(2) + "\n"
    result = wb.load(write_file(text), today=TODAY)
    assert wb.trades(result.batch_id)["reference"].tolist() == ["first", "ref 2"]
    assert {(r.row, r.code) for r in result.rejections} >= {(3, "MISSING_VALUE")}
    assert {r.row for r in result.rejections} == {3}


def test_a_title_row_spanning_lines_keeps_the_header_and_the_row_numbers(wb: Workbench, write_file: WriteFile) -> None:
    text = '"Morning batch\n30 Nov",,\n\n' + HEADER + "\n" + good_row(1) + "\n" + good_row(2, side="Q") + "\n"
    result = wb.load(write_file(text), today=TODAY)
    assert counts(result) == (2, 1, 1, 0)
    assert [(r.row, r.code) for r in result.rejections] == [(6, "INVALID_SIDE")]
    assert wb.trades(result.batch_id)["row"].tolist() == [5]


def test_an_excel_sep_hint_line_above_the_header_is_skipped(wb: Workbench, write_file: WriteFile) -> None:
    result = wb.load(write_file("sep=;\n" + delimited([COLUMNS, row_values(1)], ";")), today=TODAY)
    assert wb.trades(result.batch_id)["row"].tolist() == [3]


def test_a_file_without_a_final_line_break_loses_no_row(wb: Workbench, write_file: WriteFile) -> None:
    result = wb.load(write_file(HEADER + "\n" + good_row(1) + "\n" + good_row(2)), today=TODAY)
    assert counts(result) == (2, 2, 0, 0)


def test_trailing_blank_lines_are_ignored_rows(wb: Workbench, write_file: WriteFile) -> None:
    result = wb.load(write_file(HEADER + "\n" + good_row(1) + "\n\n\n"), today=TODAY)
    assert counts(result) == (3, 1, 0, 2)


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_a_latin1_or_windows_1252_file_keeps_its_accents(wb: Workbench, write_file: WriteFile, encoding: str) -> None:
    text = HEADER + "\n" + good_row(1, reference="Café Zürich") + "\n" + good_row(2, reference="Señor") + "\n"
    result = wb.load(write_file(text.encode(encoding)), today=TODAY)
    assert wb.trades(result.batch_id)["reference"].tolist() == ["Café Zürich", "Señor"]


def test_a_windows_1252_file_keeps_euro_signs_and_curly_quotes(wb: Workbench, write_file: WriteFile) -> None:
    # What Excel on Windows writes for "CSV (Comma delimited)".
    text = HEADER + "\r\n" + good_row(1, reference="\u2018Deposit\u2019 \u20ac500 \u2013 ok") + "\r\n"
    result = wb.load(write_file(text.encode("cp1252")), today=TODAY)
    assert wb.trades(result.batch_id)["reference"].tolist() == ["\u2018Deposit\u2019 \u20ac500 \u2013 ok"]


def test_a_non_utf8_character_far_below_the_top_of_the_file_is_read(wb: Workbench, write_file: WriteFile) -> None:
    lines = [HEADER] + [good_row(i) for i in range(1, 5001)] + [good_row(5001, reference="Crème", side="Q")]
    text = "\n".join(lines) + "\n"
    assert len(text) > 300_000, "beyond the 256 KiB the reader sniffs"
    result = wb.load(write_file(text.encode("cp1252")), today=TODAY)
    assert counts(result) == (5001, 5000, 1, 0)
    assert [(r.row, r.code) for r in result.rejections] == [(5002, "INVALID_SIDE")]


def test_a_utf16_unicode_text_export_from_excel_is_read(wb: Workbench, write_file: WriteFile) -> None:
    rows = [COLUMNS, row_values(1, reference="Zoë"), row_values(2, amount="0")]
    text = delimited(rows, "\t", "\r\n")
    result = wb.load(write_file(text.encode("utf-16")), today=TODAY)
    assert [(r.row, r.code) for r in result.rejections] == [(3, "NON_POSITIVE_AMOUNT")]
    assert wb.trades(result.batch_id)["reference"].tolist() == ["Zoë"]


def test_a_value_on_a_continuation_line_far_right_of_the_header_is_reported(
    wb: Workbench, write_file: WriteFile
) -> None:
    # A record spanning two lines is wider than either line: the exact reader must widen.
    multi_line = good_row(2, reference='"first\nsecond"') + ",,,,,,,,stray"
    text = "\n".join([HEADER, good_row(1), multi_line, good_row(3)]) + "\n"
    result = wb.load(write_file(text), today=TODAY)
    assert [(r.row, r.code, r.value) for r in result.rejections] == [(3, "EXTRA_VALUES", "stray")]
    assert wb.trades(result.batch_id)["row"].tolist() == [2, 5]


def test_a_header_below_the_search_window_is_not_found_unless_the_window_is_widened(
    tmp_path: Path, write_file: WriteFile
) -> None:
    text = "".join(f"note {i}\n" for i in range(35)) + HEADER + "\n" + good_row(1) + "\n"
    path = write_file(text)
    with Workbench.open(settings=Settings(db=tmp_path / "a.duckdb")) as wb:
        with pytest.raises(UnusableFileError) as err:
            wb.load(path, today=TODAY)
        assert err.value.code == "NO_HEADER"
        assert "first 30 rows" in err.value.message
    with Workbench.open(settings=Settings(db=tmp_path / "b.duckdb", header_search_rows=50)) as wb:
        result = wb.load(path, today=TODAY)
        assert wb.trades(result.batch_id)["row"].tolist() == [37]


def test_a_sheet_name_for_a_csv_file_is_refused(wb: Workbench, write_file: WriteFile) -> None:
    with pytest.raises(UnusableFileError) as err:
        wb.load(write_file(HEADER + "\n" + good_row(1) + "\n"), sheet="Trades", today=TODAY)
    assert err.value.code == "BAD_OPTION"


# ---------------------------------------------------------------- XLSX


def xlsx_trade(n: int, **overrides: object) -> list[object]:
    values: dict[str, object] = dict(zip(COLUMNS, row_values(n), strict=True))
    values.update(overrides)
    return [values[c] or None for c in COLUMNS]  # type: ignore[misc]


def test_numeric_identifier_cells_in_a_workbook_become_digit_text(wb: Workbench, tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "numbers.xlsx",
        {
            "Trades": [
                COLUMNS,
                xlsx_trade(1, client_cif=123456789, account_number=1234567890, amount=1000, spread_pips=25),
            ]
        },
    )
    result = wb.load(path, today=TODAY)
    trade = wb.trades(result.batch_id, unmask=True).iloc[0]  # the stored account, not the masked view
    assert (trade["client_cif"], trade["account_number"], trade["amount"], trade["spread_pips"]) == (
        "123456789",
        "1234567890",
        1000.0,
        25.0,
    )


def test_text_cells_keep_leading_zeros(wb: Workbench, tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "text.xlsx", {"Trades": [COLUMNS, xlsx_trade(1)]})
    trade = wb.trades(wb.load(path, today=TODAY).batch_id, unmask=True).iloc[0]
    assert (trade["client_cif"], trade["account_number"]) == ("0123456789", "0012345678")


def test_workbook_rejections_carry_excel_row_numbers(wb: Workbench, tmp_path: Path) -> None:
    rows: list[list[object]] = [
        ["Morning batch 30 Nov"],
        [],
        COLUMNS,
        xlsx_trade(1),
        [],  # blank row in the middle
        xlsx_trade(2, side="HOLD"),
        xlsx_trade(3),
    ]
    result = wb.load(write_xlsx(tmp_path / "rows.xlsx", {"Trades": rows}), today=TODAY)
    assert counts(result) == (4, 2, 1, 1)
    assert [(r.row, r.column, r.code) for r in result.rejections] == [(6, "side", "INVALID_SIDE")]
    assert wb.trades(result.batch_id)["row"].tolist() == [4, 7]


def test_a_table_that_does_not_start_in_a1_keeps_excel_row_numbers(wb: Workbench, tmp_path: Path) -> None:
    path = tmp_path / "offset.xlsx"
    with xlsxwriter.Workbook(str(path)) as book:
        ws = book.add_worksheet("Trades")
        ws.write_string(1, 2, "Desk batch")  # C2
        for c, name in enumerate(COLUMNS):
            ws.write_string(4, 2 + c, name)  # header on row 5 from column C
        for r, trade in enumerate([xlsx_trade(1, amount="abc"), xlsx_trade(2)]):
            for c, value in enumerate(trade):
                if value is not None:
                    ws.write_string(5 + r, 2 + c, str(value))
    result = wb.load(path, today=TODAY)
    assert [(r.row, r.code) for r in result.rejections] == [(6, "INVALID_AMOUNT")]
    assert wb.trades(result.batch_id)["row"].tolist() == [7]


def test_date_cells_are_value_dates(wb: Workbench, tmp_path: Path) -> None:
    rows = [COLUMNS, xlsx_trade(1, value_date=date(2026, 12, 3)), xlsx_trade(2, value_date=datetime(2026, 11, 2))]
    result = wb.load(write_xlsx(tmp_path / "dates.xlsx", {"Trades": rows}), today=TODAY)
    assert [(r.row, r.code, r.value) for r in result.rejections] == [(3, "PAST_VALUE_DATE", "2026-11-02")]
    assert wb.trades(result.batch_id)["value_date"].dt.date.tolist() == [date(2026, 12, 3)]


def test_a_formula_cell_loads_as_the_value_it_shows(wb: Workbench, tmp_path: Path) -> None:
    path = tmp_path / "formula.xlsx"
    with xlsxwriter.Workbook(str(path)) as book:
        ws = book.add_worksheet()
        ws.write_row(0, 0, COLUMNS)
        ws.write_row(1, 0, [v if v is not None else "" for v in xlsx_trade(1)])
        ws.write_formula(1, COLUMNS.index("amount"), "=1000*2.5", None, 2500)
    trade = wb.trades(wb.load(path, today=TODAY).batch_id).iloc[0]
    assert trade["amount"] == 2500.0


def test_float_noise_excel_stores_is_read_as_the_15_digits_it_shows(wb: Workbench, tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "noise.xlsx",
        {"Trades": [COLUMNS, xlsx_trade(1, amount=1210.25), xlsx_trade(2, amount=0.75), xlsx_trade(3, amount=2.125)]},
    )
    # =1100*1.1 is stored by Excel as 1210.0000000000002; shown as 1210.
    patch_xlsx_values(path, {"1210.25": "1210.0000000000002", "0.75": "0.30000000000000004"})
    result = wb.load(path, today=TODAY)
    assert [(r.row, r.code) for r in result.rejections] == [(4, "TOO_MANY_DECIMALS")]
    assert wb.trades(result.batch_id)["amount"].tolist() == [1210.0, 0.3]


def test_a_16_digit_number_cell_has_lost_digits_and_is_rejected(wb: Workbench, tmp_path: Path) -> None:
    rows = [COLUMNS, xlsx_trade(1, account_number=1234567890123456), xlsx_trade(2, account_number=123456789012345)]
    result = wb.load(write_xlsx(tmp_path / "long.xlsx", {"Trades": rows}), today=TODAY)
    assert [(r.row, r.column, r.code) for r in result.rejections] == [(2, "account_number", "SCIENTIFIC_NOTATION")]
    assert wb.trades(result.batch_id, unmask=True)["account_number"].tolist() == ["123456789012345"]


def test_values_right_of_the_header_in_a_sheet_are_reported(wb: Workbench, tmp_path: Path) -> None:
    rows = [COLUMNS, xlsx_trade(1), [*xlsx_trade(2), None, None, None, None, None, None, "see me"]]
    result = wb.load(write_xlsx(tmp_path / "extra.xlsx", {"Trades": rows}), today=TODAY)
    assert [(r.row, r.code, r.value) for r in result.rejections] == [(3, "EXTRA_VALUES", "see me")]


def test_the_first_sheet_is_read_unless_one_is_named(wb: Workbench, tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "two.xlsx",
        {
            "Monday": [COLUMNS, xlsx_trade(1)],
            "Tuesday": [["Tuesday orders"], COLUMNS, xlsx_trade(2), xlsx_trade(3), xlsx_trade(4, amount="x")],
        },
    )
    first = wb.load(path, today=TODAY)
    assert counts(first) == (1, 1, 0, 0)
    second = wb.load(path, sheet="Tuesday", today=TODAY)
    assert counts(second) == (3, 2, 1, 0)
    assert [r.row for r in second.rejections] == [5]
    assert wb.trades(second.batch_id)["trade_id"].tolist() == ["T00002", "T00003"]


def test_a_missing_sheet_name_is_refused_listing_the_sheets(wb: Workbench, tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "two.xlsx", {"Monday": [COLUMNS, xlsx_trade(1)], "Tuesday": [COLUMNS]})
    with pytest.raises(UnusableFileError) as err:
        wb.load(path, sheet="Wednesday", today=TODAY)
    assert err.value.code == "NO_SUCH_SHEET"
    assert "'Wednesday'" in err.value.message and "Monday, Tuesday" in err.value.message
    assert wb.batches() == []


def test_the_bundled_template_loads_its_example_row(wb: Workbench) -> None:
    result = wb.load(DATA / "template.xlsx", today=TODAY)
    assert counts(result) == (1, 1, 0, 0)
    assert wb.trades(result.batch_id)["client_cif"].tolist() == ["0123456789"]


# ---------------------------------------------------------------- Parquet


def test_a_parquet_file_loads_with_row_numbers_counted_from_a_header_row(wb: Workbench, tmp_path: Path) -> None:
    df = pd.DataFrame([row_values(i) for i in range(1, 4)], columns=COLUMNS)
    df.loc[1, "currency_pair"] = "XYZ/ZAR"
    df.to_parquet(tmp_path / "t.parquet")
    result = wb.load(tmp_path / "t.parquet", today=TODAY)
    assert counts(result) == (3, 2, 1, 0)
    assert [(r.row, r.code) for r in result.rejections] == [(3, "UNKNOWN_CURRENCY")]
    trades = wb.trades(result.batch_id)
    assert trades["row"].tolist() == [2, 4]
    assert trades["client_cif"].tolist() == ["0123456789", "0123456789"]


def test_parquet_numeric_and_date_columns_are_read_as_a_sheet_shows_them(wb: Workbench, tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "Client CIF": [123456789, 22, 33],
            "Account No": [1234567890.0, None, 3.0],
            "Ccy Pair": ["USD/ZAR", "EUR/ZAR", "GBP/ZAR"],
            "Buy/Sell": ["B", "S", "B"],
            "Notional": [0.1 + 0.2, 10.0, 1e20],
            "Settlement Date": pd.to_datetime(["2026-12-03", "2026-12-04", "2026-12-04"]),
        }
    )
    df.to_parquet(tmp_path / "typed.parquet")
    result = wb.load(tmp_path / "typed.parquet", today=TODAY)
    assert [(r.row, r.column, r.code) for r in result.rejections] == [
        (3, "account_number", "MISSING_VALUE"),
        (4, "amount", "SCIENTIFIC_NOTATION"),
    ]
    trade = wb.trades(result.batch_id, unmask=True).iloc[0]
    assert (trade["client_cif"], trade["account_number"], trade["amount"]) == ("123456789", "1234567890", 0.3)
    assert trade["value_date"].date() == date(2026, 12, 3)


# ---------------------------------------------------------------- legacy desk layout


def test_the_bundled_legacy_sample_loads_with_sides_and_pairs_from_curpair(wb: Workbench) -> None:
    with (DATA / "legacy_sample.csv").open(newline="") as fh:
        source = list(csv.DictReader(fh))
    result = wb.load(DATA / "legacy_sample.csv", today=TODAY)
    assert result.layout is Layout.LEGACY
    assert counts(result) == (len(source), len(source), 0, 0)
    assert set(result.ignored_columns) == set(LEGACY_RESULTS.split(","))
    trades = wb.trades(result.batch_id, unmask=True)
    for row, trade in zip(source, trades.to_dict("records"), strict=True):
        cur = row["CurPair"]
        other = cur[3:] if cur.startswith("ZAR") else cur[:3]
        assert trade["currency_pair"] == f"{other}/ZAR"
        assert trade["side"] == ("BUY" if cur.startswith("ZAR") else "SELL")
        assert trade["amount_currency"] == "ZAR"
        assert trade["amount"] == float(row["Amount ZAR"])
        assert (trade["client_cif"], trade["account_number"]) == (row["Client CIF"], row["Account Number"])
        assert trade["spread_pips"] == float(row["Spread"])


def test_legacy_zarusd_is_a_usd_zar_buy_and_usdzar_a_sell_with_amounts_in_zar(
    wb: Workbench, write_file: WriteFile
) -> None:
    text = "\n".join(
        [
            LEGACY_HEADER,
            "123456789,50000.00,1234567890,385,ZARUSD",
            "0123456789,75000.50,0012345678,25,USDZAR",
            "0123456789,100,0012345678,,zareur",
        ]
    )
    result = wb.load(write_file(text + "\n"), today=TODAY)
    assert result.layout is Layout.LEGACY
    trades = wb.trades(result.batch_id)
    assert trades[["currency_pair", "side", "amount", "amount_currency"]].values.tolist() == [
        ["USD/ZAR", "BUY", 50000.0, "ZAR"],
        ["USD/ZAR", "SELL", 75000.5, "ZAR"],
        ["EUR/ZAR", "BUY", 100.0, "ZAR"],
    ]
    assert trades["spread_pips"].tolist() == [385.0, 25.0, 0.0]
    assert trades["trade_id"].tolist() == ["ROW0000002", "ROW0000003", "ROW0000004"]


def test_legacy_result_columns_from_a_previous_run_are_ignored_even_when_filled(
    wb: Workbench, write_file: WriteFile
) -> None:
    text = (
        f"{LEGACY_HEADER},{LEGACY_RESULTS}\n"
        "123456789,50000.00,1234567890,385,ZARUSD,98765,2026-11-27 09:00,17.61,2026-11-27 09:00:30,D1,17.60,17.61,17.62\n"
    )
    result = wb.load(write_file(text), today=TODAY)
    assert counts(result) == (1, 1, 0, 0)
    assert result.rejections == []


@pytest.mark.parametrize(
    ("cur_pair", "code"),
    [
        ("EURUSD", "INVALID_AMOUNT_CURRENCY"),
        ("ZARXYZ", "UNKNOWN_CURRENCY"),
        ("ZARUS", "INVALID_PAIR"),
        ("", "MISSING_VALUE"),
    ],
)
def test_a_bad_legacy_curpair_is_rejected_once_on_the_pair(
    wb: Workbench, write_file: WriteFile, cur_pair: str, code: str
) -> None:
    text = f"{LEGACY_HEADER}\n123456789,500,1234567890,25,ZARUSD\n123456789,500,1234567890,25,{cur_pair}\n"
    result = wb.load(write_file(text), today=TODAY)
    assert [(r.row, r.column, r.code) for r in result.rejections] == [(3, "currency_pair", code)]


def test_a_legacy_workbook_with_numeric_cifs_loads(wb: Workbench, tmp_path: Path) -> None:
    rows = [LEGACY_HEADER.split(","), [123456789, 50000, 1234567890, 385, "ZARGBP"], [1, 2.5, 3, 0, "GBPZAR"]]
    result = wb.load(write_xlsx(tmp_path / "legacy.xlsx", {"Sheet1": rows}), today=TODAY)
    assert result.layout is Layout.LEGACY
    trades = wb.trades(result.batch_id)
    assert trades[["client_cif", "currency_pair", "side", "amount"]].values.tolist() == [
        ["123456789", "GBP/ZAR", "BUY", 50000.0],
        ["1", "GBP/ZAR", "SELL", 2.5],
    ]


@pytest.mark.parametrize("blank_line", [False, True], ids=["fast-path", "exact-path"])
def test_a_value_that_goes_on_after_its_closing_quote_rejects_its_row_naming_the_column(
    wb: Workbench, write_file: WriteFile, blank_line: bool
) -> None:
    # DuckDB's lenient reader drops a character of "0012"345678 and reads "1"500.00 as 150.00:
    # such a row is rejected, never loaded altered. Doubled quotes inside a quoted value
    # and a quote inside an unquoted one are read as written.
    lines = [
        HEADER,
        good_row(1).replace(",0012345678,", ',"0012"345678,'),
        good_row(2, amount='"1"500.00'),
        good_row(3, reference='"say ""hi"""'),
        good_row(4, reference='ab"c'),
    ]
    if blank_line:
        lines.insert(2, "")
    result = wb.load(write_file("\n".join(lines) + "\n"), today=TODAY)
    shift = 1 if blank_line else 0
    assert [(r.row, r.column, r.code) for r in result.rejections] == [
        (2, "account_number", "BAD_QUOTES"), (3 + shift, "amount", "BAD_QUOTES")
    ]  # fmt: skip
    assert "written twice" in result.rejections[0].message
    trades = wb.trades(result.batch_id)
    assert trades["reference"].tolist() == ['say "hi"', 'ab"c']


def test_an_excel_error_in_a_workbook_cell_rejects_its_row_naming_the_column(wb: Workbench, tmp_path: Path) -> None:
    # The workbook reader reads a cell showing #N/A as empty: a spread or a value date, which have
    # defaults, would load as "not given". Such a row is rejected, naming the column and the error.
    from fxbatch import samples

    good = samples.write_xlsx(samples.make_trades(3, seed=3), tmp_path / "good.xlsx")
    broken = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(broken, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(
                    rb'<c r="H2" t="inlineStr">.*?</c>',
                    b'<c r="H2" t="e"><f>VLOOKUP(A2,X!A:B,2,0)</f><v>#N/A</v></c>',
                    data,
                )
                data = re.sub(rb'<c r="F3" t="inlineStr">.*?</c>', b'<c r="F3" s="1" t="e"><v>#DIV/0!</v></c>', data)
            dst.writestr(item, data)
    result = wb.load(broken, today=TODAY)
    assert [(r.row, r.column, r.value, r.code) for r in result.rejections] == [
        (2, "spread_pips", "#N/A", "EXCEL_ERROR"), (3, "amount", "#DIV/0!", "EXCEL_ERROR")
    ]  # fmt: skip
    assert "formula failed" in result.rejections[0].message
    assert wb.trades(result.batch_id)["row"].tolist() == [4]
