"""Synthetic trade sheets: the bundled samples, test fixtures and benchmark files.

Vectorised (numpy), so a million rows take about a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fxbatch.ingest.layout import FIELDS, LEGACY_RESULT_COLUMNS

CANONICAL_HEADER = FIELDS
ZAR_PAIRS = ("USD/ZAR", "EUR/ZAR", "GBP/ZAR", "CHF/ZAR", "JPY/ZAR", "AUD/ZAR", "CAD/ZAR", "CNY/ZAR")
_PAIR_WEIGHTS = np.array([0.45, 0.2, 0.15, 0.04, 0.04, 0.05, 0.03, 0.04])


def make_trades(n: int, seed: int = 7, *, clients: int | None = None, prefix: str = "T") -> pd.DataFrame:
    """``n`` valid canonical trades as text columns (value dates left to the delivery rule)."""
    rng = np.random.default_rng(seed)
    n_clients = clients or max(5, min(n // 20, 50_000))
    client_ids = rng.integers(10_000_000, 999_999_999, size=n_clients)
    cifs = np.char.zfill(client_ids.astype(str), 10)  # leading zero kept on purpose
    accounts = np.char.zfill((client_ids * 7 % 10_000_000_000).astype(str), 10)
    pick = rng.integers(0, n_clients, size=n)
    pairs = np.array(ZAR_PAIRS)[rng.choice(len(ZAR_PAIRS), size=n, p=_PAIR_WEIGHTS)]
    amounts = np.round(rng.lognormal(mean=11.5, sigma=1.2, size=n), 2) + 1000
    return pd.DataFrame(
        {
            "trade_id": np.char.add(prefix, np.char.zfill(np.arange(1, n + 1).astype(str), 7)),
            "client_cif": cifs[pick],
            "account_number": accounts[pick],
            "currency_pair": pairs,
            "side": np.where(rng.random(n) < 0.6, "BUY", "SELL"),
            "amount": np.char.mod("%.2f", amounts),
            "amount_currency": "ZAR",
            "spread_pips": rng.choice(np.array(["25", "50", "75", "100", "150", "385"]), size=n),
            "delivery": rng.choice(np.array(["SPOT", "TOM", "CASH"]), size=n, p=[0.8, 0.15, 0.05]),
            "value_date": "",
            "reference": np.char.add("INV ", rng.integers(10_000, 99_999, size=n).astype(str)),
        },
        dtype="string[python]",
    )


def write_csv(df: pd.DataFrame, path: Path, *, sep: str = ",") -> Path:
    df.to_csv(path, index=False, sep=sep)
    return path


def make_legacy(n: int, seed: int = 11) -> pd.DataFrame:
    """The desk's legacy layout: Client CIF, Amount ZAR, Account Number, Spread, CurPair (+ results)."""
    base = make_trades(n, seed)
    ccy = base["currency_pair"].str.slice(0, 3)
    cur_pair = np.where(base["side"] == "BUY", "ZAR" + ccy, ccy + "ZAR")
    df = pd.DataFrame(
        {
            "Client CIF": base["client_cif"],
            "Amount ZAR": base["amount"],
            "Account Number": base["account_number"],
            "Spread": base["spread_pips"],
            "CurPair": cur_pair,
        },
        dtype="string[python]",
    )
    for col in LEGACY_RESULT_COLUMNS:
        df[col] = ""
    return df


def write_xlsx(df: pd.DataFrame, path: Path, *, title: str | None = None, sheet: str = "Trades") -> Path:
    """Write ``df`` as an XLSX sheet with every cell as text (identifiers keep leading zeros)."""
    import xlsxwriter

    with xlsxwriter.Workbook(str(path), {"constant_memory": True}) as book:
        ws = book.add_worksheet(sheet)
        row = 0
        if title:
            ws.write_string(row, 0, title)
            row += 2
        for col, name in enumerate(df.columns):
            ws.write_string(row, col, str(name))
        values = df.to_numpy(dtype=object)
        for r in range(len(values)):
            row += 1
            for col, value in enumerate(values[r]):
                if value is not None and value == value and value != "":
                    ws.write_string(row, col, str(value))
    return path


TEMPLATE_NOTES = (
    ("trade_id", "no", "Your own id, unique within the file; generated when empty", "T0000001"),
    ("client_cif", "yes", "Client number (CIF), digits only; keep leading zeros", "0123456789"),
    ("account_number", "yes", "Settlement account, digits only; keep leading zeros", "0012345678"),
    ("currency_pair", "yes", "USD/ZAR (also USDZAR, usd-zar)", "USD/ZAR"),
    ("side", "yes", "BUY or SELL of the base currency (B/S)", "BUY"),
    ("amount", "yes", "Positive, at most 2 decimals, in amount_currency", "50000.00"),
    ("amount_currency", "no", "One of the pair's currencies; ZAR by default when the pair has ZAR", "ZAR"),
    (
        "spread_pips",
        "no",
        "Desk margin in pips ('bips'), whole numbers 0 to 2000: 1 pip = 0.0001 of the rate "
        "(0.01 for JPY-quoted pairs), so 385 on USD/ZAR moves the client's rate by 0.0385",
        "385",
    ),
    ("delivery", "no", "SPOT, TOM or CASH (also: same day, today = CASH; tomorrow = TOM); SPOT by default", "SPOT"),
    (
        "value_date",
        "no",
        "YYYY-MM-DD, not in the past, a business day of both currencies "
        "(holidays of each currency's settlement calendar); from delivery when empty",
        "",
    ),
    ("reference", "no", "Text for the client's statement, at most 140 characters", "INV 10001"),
)


def write_template(path: Path) -> Path:
    """The XLSX template offered for download: text-formatted id columns and a notes sheet."""
    import xlsxwriter

    with xlsxwriter.Workbook(str(path)) as book:
        text = book.add_format({"num_format": "@"})
        bold = book.add_format({"bold": True, "bg_color": "#DDEBF7"})
        ws = book.add_worksheet("Trades")
        for col, (name, _req, _note, example) in enumerate(TEMPLATE_NOTES):
            ws.write_string(0, col, name, bold)
            ws.set_column(col, col, max(14, len(name) + 2), text)
            if example:
                ws.write_string(1, col, example, text)
        ws.freeze_panes(1, 0)
        notes = book.add_worksheet("Columns")
        for col, title in enumerate(("column", "required", "rules", "example")):
            notes.write_string(0, col, title, bold)
        for row, values in enumerate(TEMPLATE_NOTES, start=1):
            for col, value in enumerate(values):
                notes.write_string(row, col, value)
        notes.set_column(0, 0, 18)
        notes.set_column(2, 2, 70)
    return path
