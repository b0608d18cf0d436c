"""Property: every data row of a file ends in exactly one place (DOMAIN.md 2.3).

Hypothesis writes files mixing valid rows, rows with random bad values in random columns,
repeated trade ids, totals rows, blank rows (",,,,", spaces, empty lines) and title rows
above the header, as CSV (any delimiter, LF, CRLF or CR, values spanning lines) or XLSX, and
checks that rows = accepted + rejected + ignored, that accepted and rejected row numbers
are exactly the valid and the invalid rows, and that the blank ones are the ignored count.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import xlsxwriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxbatch import Settings, UnusableFileError, Workbench
from tests.conftest import HEADER, TODAY

COLUMNS = HEADER.split(",")
PAIRS = ["USD/ZAR", "usdzar", "EUR-ZAR", "GBP ZAR", "CHF/ZAR", "EUR/USD"]
SUITED = {"SPOT": ["", "2026-12-03", "2027-01-15", "20261231"], "TOM": ["", "2026-12-01"], "CASH": ["", "20261130"]}
BAD_VALUES: dict[str, list[str]] = {
    "client_cif": ["", "12A4", "1.23457E+09", "-1", "12 34"],
    "account_number": ["", "00A1", "1.2E+10", "12.5"],
    "currency_pair": ["", "XYZ/ZAR", "EUR/CHF", "USD", "US/ZAR"],
    "side": ["", "HOLD", "X"],
    "amount": ["", "abc", "0", "-5", "1.234", "12,34", "1e5"],
    "amount_currency": ["XYZ", "JPY"],
    "spread_pips": ["2001", "-1", "abc", "25.5"],
    "delivery": ["NEXT", "T+2"],
    "value_date": ["2020-01-01", "2026-02-30", "soon"],
    "reference": ["x" * 141],
}
TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), include_characters=",;|\t\n\"'"),
    max_size=12,
)


@dataclass
class Row:
    kind: str  # valid | invalid | blank
    cells: list[str]


@st.composite
def valid_cells(draw: st.DrawFn, ident: str) -> list[str]:
    pair = draw(st.sampled_from(PAIRS))
    base = pair[:3].upper()
    cross = "ZAR" not in pair.upper()
    amount = draw(st.decimals(min_value="0.01", max_value="999999999", places=2, allow_nan=False))
    amount_text = draw(st.sampled_from(["{:.2f}", "{:,.2f}", "{:,}"])).format(amount)
    if draw(st.booleans()) and "," in amount_text:
        amount_text = amount_text.replace(",", " ")
    delivery = draw(st.sampled_from(["", "SPOT", "tom", "CASH"]))
    values = {
        "trade_id": draw(st.sampled_from([ident, ""])),
        "client_cif": draw(st.from_regex(r"0[0-9]{5,9}", fullmatch=True)),
        "account_number": draw(st.from_regex(r"[0-9]{6,11}(\.0)?", fullmatch=True)),
        "currency_pair": pair,
        "side": draw(st.sampled_from(["BUY", "SELL", "b", "s", "Sell"])),
        "amount": amount_text,
        "amount_currency": base if cross else draw(st.sampled_from(["", "ZAR", base, base.lower()])),
        "spread_pips": draw(st.sampled_from(["", "0", "25", "385", "2000", "25.0"])),
        "delivery": delivery,
        # a written date suits the delivery (on 2026-11-30: TOM is 12-01, SPOT 12-02 or later)
        "value_date": draw(st.sampled_from(SUITED[delivery.upper() or "SPOT"])),
        "reference": draw(TEXT),
    }
    return [values[c] for c in COLUMNS]


@st.composite
def rows(draw: st.DrawFn) -> list[Row]:
    kinds = draw(
        st.lists(
            st.sampled_from(
                ["valid", "valid", "valid", "invalid", "invalid", "dup", "extra", "total", "blank", "empty"]
            ),
            min_size=1,
            max_size=14,
        )
    )
    out: list[Row] = []
    used_ids: list[str] = []
    for i, kind in enumerate(kinds):
        if kind == "blank":
            width = draw(st.integers(1, len(COLUMNS)))
            out.append(Row("blank", [draw(st.sampled_from(["", " ", "\u00a0", "\t", " \t "])) for _ in range(width)]))
        elif kind == "empty":
            out.append(Row("blank", []))
        elif kind == "total":
            cells = [""] * len(COLUMNS)
            cells[draw(st.sampled_from([0, 4]))] = draw(st.sampled_from(["TOTAL", "Total", "Grand Total"]))
            cells[5] = "123456.00"
            out.append(Row("invalid", cells))
        else:
            cells = draw(valid_cells(f"T{i}"))
            if kind == "dup" and used_ids:
                cells[0] = draw(st.sampled_from(used_ids))
                out.append(Row("invalid", cells))
                continue
            if kind == "extra":  # a value some columns right of the header's last one
                cells += [""] * draw(st.integers(0, 8)) + ["Z" + draw(TEXT)]
                kind = "invalid"
            elif kind in ("invalid", "dup"):
                for column in draw(st.lists(st.sampled_from(COLUMNS[1:]), min_size=1, max_size=3, unique=True)):
                    bad = st.sampled_from(BAD_VALUES[column])
                    if column not in ("amount_currency", "reference"):
                        bad = bad | TEXT.map(lambda t: "Z" + t)  # letters are never a valid value there
                    cells[COLUMNS.index(column)] = draw(bad)
                kind = "invalid"
            if cells[0]:
                used_ids.append(cells[0])
            out.append(Row(kind, cells))
    return out


@dataclass
class Sheet:
    fmt: str  # csv | xlsx
    delimiter: str
    newline: str
    titles: list[list[str]]
    rows: list[Row]


SHEETS = st.builds(
    Sheet,
    fmt=st.sampled_from(["csv", "csv", "csv", "xlsx"]),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    titles=st.lists(
        st.sampled_from([["Morning batch"], [], ["", "", ""], ["Desk", "FX"], ["Batch\n30 Nov", "x"]]), max_size=3
    ),
    rows=rows(),
)


def write(sheet: Sheet, folder: Path) -> tuple[Path, list[tuple[int, Row]]]:
    """Write the sheet; returns the file and each data row with the row number it starts on."""
    records = [*sheet.titles, COLUMNS, *(r.cells for r in sheet.rows)]
    numbered: list[tuple[int, Row]] = []
    if sheet.fmt == "xlsx":
        path = folder / "trades.xlsx"
        with xlsxwriter.Workbook(str(path)) as book:
            ws = book.add_worksheet("Trades")
            for r, record in enumerate(records):
                for c, value in enumerate(record):
                    if value:
                        ws.write_string(r, c, value)
        first = len(sheet.titles) + 2
        numbered = [(first + i, row) for i, row in enumerate(sheet.rows)]
        while numbered and not any(numbered[-1][1].cells):  # a sheet ends at its last written cell
            numbered.pop()
        return path, numbered
    out = io.StringIO()
    # CRLF so that cells holding a line break are quoted (the writer only quotes for the
    # terminator's own characters); cells never hold a CR, so it can be swapped afterwards.
    writer = csv.writer(out, delimiter=sheet.delimiter, lineterminator="\r\n")
    line = 1
    for i, record in enumerate(records):
        if i >= len(sheet.titles) + 1:
            numbered.append((line, sheet.rows[i - len(sheet.titles) - 1]))
        writer.writerow(record)
        line += 1 + sum(cell.count("\n") for cell in record)
    path = folder / "trades.csv"
    path.write_bytes(out.getvalue().replace("\r\n", sheet.newline).encode("utf-8"))
    return path, numbered


@pytest.fixture(scope="module")
def shared_wb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    folder = tmp_path_factory.mktemp("no_row_lost")
    with Workbench.open(settings=Settings(db=folder / "property.duckdb")) as wb:
        yield wb


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sheet=SHEETS)
def test_no_row_is_ever_lost_or_counted_twice(
    shared_wb: Workbench, tmp_path_factory: pytest.TempPathFactory, sheet: Sheet
) -> None:
    wb = shared_wb
    path, numbered = write(sheet, tmp_path_factory.mktemp("sheet"))
    valid = {n for n, row in numbered if row.kind == "valid"}
    invalid = {n for n, row in numbered if row.kind == "invalid"}
    blank = sum(1 for _, row in numbered if row.kind == "blank")
    batches_before = len(wb.batches())
    if not valid:
        with pytest.raises(UnusableFileError) as err:
            wb.load(path, today=TODAY)
        assert err.value.code == ("NO_VALID_ROWS" if invalid else "NO_DATA_ROWS")
        assert len(wb.batches()) == batches_before
        return
    result = wb.load(path, today=TODAY)
    accepted = set(wb.trades(result.batch_id)["row"])
    rejected = {r.row for r in result.rejections}
    assert result.rows == result.accepted + result.rejected + result.ignored == len(numbered)
    assert accepted == valid, "accepted trades are exactly the valid rows"
    assert rejected == invalid, "every invalid row is rejected with its own row number"
    assert result.accepted == len(accepted) and result.rejected == len(rejected)
    assert result.ignored == blank
    assert not accepted & rejected
    assert len(wb.batches()) == batches_before + 1
