"""Shared fixtures: a workbench on a temporary database, and small file factories."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest

from fxbatch import Settings, Workbench

DATA = Path(__file__).resolve().parent.parent / "data"
TODAY = date(2026, 11, 30)  # a Monday, a business day on every calendar: value-date rules never drift

# Every test trades on TODAY, module-scoped fixtures and child processes (CLI, app, browser) too: a
# run's value dates are derived again for its trading date, and a real today could be a holiday.
os.environ["FXBATCH_TODAY"] = TODAY.isoformat()
HEADER = "trade_id,client_cif,account_number,currency_pair,side,amount,amount_currency,spread_pips,delivery,value_date,reference"


def good_row(n: int = 1, **overrides: str) -> str:
    """One valid canonical CSV row; override any column by name."""
    values = {
        "trade_id": f"T{n:05d}",
        "client_cif": "0123456789",
        "account_number": "0012345678",
        "currency_pair": "USD/ZAR",
        "side": "BUY",
        "amount": "1000.00",
        "amount_currency": "ZAR",
        "spread_pips": "25",
        "delivery": "SPOT",
        "value_date": "",
        "reference": f"ref {n}",
    }
    values.update(overrides)
    return ",".join(values[c] for c in HEADER.split(","))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db=tmp_path / "test.duckdb")


@pytest.fixture
def wb(settings: Settings) -> Iterator[Workbench]:
    with Workbench.open(settings=settings) as workbench:
        yield workbench


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[..., Path]:
    """Write text (or bytes) to a file in tmp_path and return its path."""

    def _write(content: str | bytes, name: str = "trades.csv") -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return path

    return _write
