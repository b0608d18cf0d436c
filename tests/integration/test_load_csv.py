"""Loading CSV files end to end into a real DuckDB file."""

from __future__ import annotations

import pytest

from fxbatch import UnusableFileError, Workbench
from tests.conftest import DATA, HEADER, TODAY, good_row


def test_bundled_sample_loads_every_row(wb: Workbench) -> None:
    result = wb.load(DATA / "sample_trades.csv", today=TODAY)
    assert (result.rows, result.accepted, result.rejected, result.ignored) == (200, 200, 0, 0)
    trades = wb.trades(result.batch_id)
    assert len(trades) == 200
    assert trades["client_cif"].str.startswith("0").any(), "leading zeros must survive"


def test_every_row_of_the_messy_sample_ends_in_exactly_one_place(wb: Workbench) -> None:
    result = wb.load(DATA / "sample_with_errors.csv", today=TODAY)
    assert result.rows == result.accepted + result.rejected + result.ignored == 14
    codes = {(r.row, r.code) for r in result.rejections}
    assert (6, "SCIENTIFIC_NOTATION") in codes
    assert (7, "UNKNOWN_CURRENCY") in codes
    assert (15, "DUPLICATE_TRADE_ID") in codes
    assert (17, "TOTAL_ROW") in codes
    assert result.ignored == 1


def test_row_numbers_are_csv_line_numbers_with_blank_lines_and_title_rows(wb: Workbench, write_file) -> None:
    text = "\n".join(["Desk batch", "", HEADER, good_row(1), "", good_row(2, amount="abc"), "", "", good_row(3)]) + "\n"
    result = wb.load(write_file(text), today=TODAY)
    assert [r.row for r in result.rejections] == [6]
    assert result.rows == 6 and result.ignored == 3 and result.accepted == 2
    assert wb.trades(result.batch_id)["row"].tolist() == [4, 9]


def test_quoted_line_breaks_keep_row_numbers_right(wb: Workbench, write_file) -> None:
    text = "\n".join([HEADER, good_row(1, reference='"two\nlines"'), good_row(2, side="HOLD")]) + "\n"
    result = wb.load(write_file(text), today=TODAY)
    assert [(r.row, r.code) for r in result.rejections] == [(4, "INVALID_SIDE")]
    assert wb.trades(result.batch_id)["reference"].tolist() == ["two\nlines"]


def test_large_file_row_numbers_match_the_lines(wb: Workbench, write_file) -> None:
    # Several parallel read chunks: every accepted trade and every rejection keeps its own line.
    n = 120_000
    lines = [HEADER] + [good_row(i, amount="x" if i % 997 == 0 else "10.00") for i in range(1, n + 1)]
    result = wb.load(write_file("\n".join(lines) + "\n"), today=TODAY)
    assert result.accepted + result.rejected == n
    trades = wb.trades(result.batch_id)
    assert (trades["row"] == trades["trade_id"].str.slice(1).astype(int) + 1).all()
    assert all((r.row - 1) % 997 == 0 for r in result.rejections)


def test_header_only_file_creates_no_batch(wb: Workbench, write_file) -> None:
    with pytest.raises(UnusableFileError) as err:
        wb.load(write_file(HEADER + "\n"), today=TODAY)
    assert err.value.code == "NO_DATA_ROWS"
    assert wb.batches() == []


def test_loading_the_same_file_twice_says_so(wb: Workbench) -> None:
    first = wb.load(DATA / "sample_trades.csv", today=TODAY)
    second = wb.load(DATA / "sample_trades.csv", today=TODAY)
    assert second.previously_loaded_as == [first.batch_id]
    assert second.batch_id != first.batch_id
