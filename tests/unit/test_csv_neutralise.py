"""The one function every CSV download goes through: text a spreadsheet would run as a formula gets
an apostrophe (issue 15, item 5); numbers, empty cells and harmless text are written as they are."""

from __future__ import annotations

import csv
import io

import pandas as pd

from fxbatch.export import csv_bytes

RISKY = ['=HYPERLINK("http://evil.example","x")', "+1+2", "-5", "@SUM(A1:A9)", "\tTAB", "\rCR"]


def read(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def test_text_cells_starting_like_a_formula_get_an_apostrophe() -> None:
    rows = read(csv_bytes(pd.DataFrame({"value": RISKY})))
    assert [r["value"] for r in rows] == ["'" + text for text in RISKY]


def test_numbers_empty_cells_and_harmless_text_are_kept() -> None:
    df = pd.DataFrame(
        {"row": [2, 3, 4], "amount": [-5.25, 0.0, 7.0], "value": [None, "plain = text", "a-b"], "code": ["X", "", "Y"]}
    )
    rows = read(csv_bytes(df))
    assert [r["row"] for r in rows] == ["2", "3", "4"]
    assert [r["amount"] for r in rows] == ["-5.25", "0.0", "7.0"]
    assert [r["value"] for r in rows] == ["", "plain = text", "a-b"]
    assert [r["code"] for r in rows] == ["X", "", "Y"]


def test_a_batchs_rejections_keep_their_columns_in_order() -> None:
    df = pd.DataFrame(
        {"row": [7], "column": ["amount"], "value": ["-5"], "code": ["BAD_AMOUNT"], "message": ["must be positive"]}
    )
    data = csv_bytes(df)
    assert data.decode().splitlines()[0] == "row,column,value,code,message"
    assert read(data) == [
        {"row": "7", "column": "amount", "value": "'-5", "code": "BAD_AMOUNT", "message": "must be positive"}
    ]
