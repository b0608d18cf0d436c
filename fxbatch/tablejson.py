"""Tables as JSON records, one way for the HTTP API and the command line's ``--json``.

pandas' ``to_json(orient="records", date_format="iso")``: NaN and missing values become null,
timestamps ISO-8601. DuckDB's DATE columns arrive in pandas as timestamps at midnight; those a
desk reads as dates (``DATE_COLUMNS``) are written as dates, ``2026-12-02``, not
``2026-12-02T00:00:00.000``.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

DATE_COLUMNS = frozenset({"value_date", "trade_date"})


def records_json(df: pd.DataFrame) -> str:
    dated = {
        c: df[c].dt.strftime("%Y-%m-%d")
        for c in sorted(DATE_COLUMNS & set(df.columns))
        if pd.api.types.is_datetime64_any_dtype(df[c])
    }
    return (df.assign(**dated) if dated else df).to_json(orient="records", date_format="iso") or "[]"


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The table as JSON-ready records (the same values as ``records_json``)."""
    loaded: list[dict[str, Any]] = json.loads(records_json(df))
    return loaded
