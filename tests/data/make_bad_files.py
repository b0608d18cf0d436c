"""Regenerate the corpus in tests/data/bad_files (run once; the files are committed).

Each file is something an analyst could really upload that can never become a batch;
tests/integration/test_bad_files.py says which error each must give.

``hostile_files/`` holds the small hostile files of issue 15 (tests/integration/test_hostile_files.py);
the big ones (long cells, zip bombs, oversized files) are built at test time by the helpers below.
"""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import pandas as pd
import xlsxwriter

OUT = Path(__file__).resolve().parent / "bad_files"
HOSTILE = Path(__file__).resolve().parent / "hostile_files"
HEADER = "trade_id,client_cif,account_number,currency_pair,side,amount,amount_currency,spread_bps,delivery,value_date,reference"
ROW = "T1,0123456789,0012345678,USD/ZAR,BUY,1000.00,ZAR,25,SPOT,,ref"


def text(name: str, content: str) -> None:
    (OUT / name).write_text(content, encoding="utf-8", newline="")


def xlsx(name: str, rows: list[list[str]]) -> bytes:
    path = OUT / name
    with xlsxwriter.Workbook(str(path)) as book:
        ws = book.add_worksheet("Trades")
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                ws.write_string(r, c, value)
    return path.read_bytes()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    text("empty.csv", "")
    text("blank_lines_only.csv", "\n\n   \r\n\t\n")
    (OUT / "bom_only.csv").write_bytes(b"\xef\xbb\xbf\r\n")
    text("header_only.csv", HEADER + "\n")
    text("header_and_blank_rows.csv", HEADER + "\n,,,,,,,,,,\n\n , ,,\n")
    rng = random.Random(20261130)
    (OUT / "binary.csv").write_bytes(bytes(rng.randrange(256) for _ in range(2048)) + b"\x00\x00")
    text("not_really.xlsx", HEADER + "\n" + ROW + "\n")
    text("not_really.parquet", HEADER + "\n" + ROW + "\n")
    text(
        "web_export.xls",
        "<html><body><table><tr><td>Client CIF</td><td>Amount</td></tr></table></body></html>\n",
    )
    (OUT / "report.pdf.csv").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n\x00")
    text("no_header.csv", ROW + "\n" + ROW.replace("T1", "T2") + "\n")
    text("title_only.csv", "Morning batch 30 Nov\n\nNo trades today\n")
    text("json_named_csv.csv", '[{"client_cif": "0123456789", "amount": 1000}]\n')
    text(
        "missing_amount_column.csv",
        "trade_id,client_cif,account_number,currency_pair,side,reference\nT1,0123456789,0012345678,USD/ZAR,BUY,ref\n",
    )
    text(
        "legacy_without_curpair.csv",
        "Client CIF,Amount ZAR,Account Number,Spread\n123456789,50000.00,1234567890,385\n",
    )
    text("ambiguous_columns.csv", HEADER + ",Notional\n" + ROW + ",1000\n")
    text(
        "all_rows_invalid.csv",
        HEADER
        + "\n"
        + ROW.replace("BUY", "HOLD")
        + "\n\n"
        + ROW.replace("T1", "T2").replace("1000.00", "-5")
        + "\n"
        + ROW.replace("T1", "T3").replace("0123456789", "1.23457E+09")
        + "\n",
    )
    text("only_totals_row.csv", HEADER + "\n,,,,TOTAL,1000.00,,,,,\n")
    text("semicolons_everywhere.csv", "a;b;c\n1;2;3\n")
    xlsx("header_only.xlsx", [HEADER.split(",")])
    xlsx("no_header.xlsx", [["Morning batch"], [], ROW.split(",")])
    xlsx("empty_sheet.xlsx", [])
    (OUT / "truncated.xlsx").write_bytes(xlsx("truncated.xlsx", [HEADER.split(","), ROW.split(",")])[:300])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("trades.csv", HEADER + "\n" + ROW + "\n")
    (OUT / "zip_of_a_csv.xlsx").write_bytes(buffer.getvalue())
    pd.DataFrame({"date": ["2026-11-30"], "open": [17.6], "close": [17.7]}).to_parquet(OUT / "no_trade_columns.parquet")
    pd.DataFrame({c: pd.Series([], dtype="string") for c in HEADER.split(",")}).to_parquet(OUT / "no_rows.parquet")

    hostile(HOSTILE)


def rows_text(count: int, start: int = 2, reference: str = "ref") -> list[str]:
    return [ROW.replace("T1,", f"T{i},").replace(",ref", f",{reference}") for i in range(start, start + count)]


def csv_with_long_cell(path: Path, line: int, column: str, chars: int, rows: int = 60) -> Path:
    """A good CSV whose cell in ``column`` on ``line`` holds ``chars`` characters."""
    lines = [HEADER, *rows_text(rows)]
    cells = lines[line - 1].split(",")
    cells[HEADER.split(",").index(column)] = "x" * chars
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def zip_bomb(path: Path, unzipped_mb: int = 40) -> Path:
    """A small XLSX whose sheet unzips to ``unzipped_mb`` MB of blanks (a ratio near 1000)."""
    sheet = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        + " " * (unzipped_mb * 1024 * 1024)
        + "</sheetData></worksheet>"
    )
    return _replace_sheet(path, sheet.encode())


def claims_to_unzip_to(path: Path, claimed: int) -> Path:
    """A small XLSX whose zip directory says its sheet unzips to ``claimed`` bytes (no data behind it)."""
    _replace_sheet(path, b"<worksheet/>")
    data = bytearray(path.read_bytes())
    member = b"xl/worksheets/sheet1.xml"
    at = data.rfind(b"PK\x01\x02", 0, data.rfind(member))  # its central directory entry
    data[at + 24 : at + 28] = claimed.to_bytes(4, "little")  # uncompressed size
    path.write_bytes(bytes(data))
    return path


def _replace_sheet(path: Path, sheet: bytes) -> Path:
    template = io.BytesIO()
    with xlsxwriter.Workbook(template, {"in_memory": True}) as book:
        book.add_worksheet("Trades").write_string(0, 0, "trade_id")
    with zipfile.ZipFile(template) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = sheet if item.filename == "xl/worksheets/sheet1.xml" else src.read(item)
            dst.writestr(item.filename, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return path


def hostile(out: Path) -> None:
    """The small hostile files of issue 15."""
    out.mkdir(exist_ok=True)
    head = (HEADER + "\n").encode()
    mixed = [r.encode() for r in rows_text(8)]
    mixed[2] = rows_text(1, 4, "Jos\xe9")[0].encode("cp1252")  # line 4: Windows-1252
    mixed[5] = rows_text(1, 7, "José")[0].encode("utf-8")  # line 7: UTF-8
    (out / "mixed_encodings.csv").write_bytes(head + b"\n".join(mixed) + b"\n")
    (out / "windows_1252.csv").write_bytes(
        head + "\n".join(rows_text(3, reference="Jos\xe9 €")).encode("cp1252") + b"\n"
    )
    late = rows_text(400)
    late[298] = late[298].replace(",ref", ",r\x00ef")  # line 300, far past the first 8 KB
    (out / "nul_on_line_300.csv").write_text(HEADER + "\n" + "\n".join(late) + "\n", encoding="utf-8", newline="")
    unclosed = rows_text(58)
    unclosed[40] = unclosed[40].replace(",ref", ',"ref')  # line 42
    (out / "unclosed_quote.csv").write_text(HEADER + "\n" + "\n".join(unclosed) + "\n", encoding="utf-8")
    with xlsxwriter.Workbook(str(out / "far_cell.xlsx")) as book:
        ws = book.add_worksheet("Trades")
        for c, name in enumerate(HEADER.split(",")):
            ws.write_string(0, c, name)
        for c, value in enumerate(ROW.split(",")):
            ws.write_string(1, c, value)
        ws.write_string(1_048_575, 16_383, "stray")  # XFD1048576: 17 billion cells to a dense reader


if __name__ == "__main__":
    main()
