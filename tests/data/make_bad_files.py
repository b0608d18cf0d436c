"""Regenerate the corpus in tests/data/bad_files (run once; the files are committed).

Each file is something an analyst could really upload that can never become a batch;
tests/integration/test_bad_files.py says which error each must give.
"""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import pandas as pd
import xlsxwriter

OUT = Path(__file__).resolve().parent / "bad_files"
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


if __name__ == "__main__":
    main()
