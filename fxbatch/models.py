"""Enums and pydantic models shared by every part of fxbatch."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Delivery(StrEnum):
    SPOT = "SPOT"
    TOM = "TOM"
    CASH = "CASH"


class Layout(StrEnum):
    CANONICAL = "canonical"
    LEGACY = "legacy"


class RejectCode(StrEnum):
    """Why a spreadsheet row was refused at load time."""

    MISSING_VALUE = "MISSING_VALUE"
    INVALID_CIF = "INVALID_CIF"
    INVALID_ACCOUNT = "INVALID_ACCOUNT"
    SCIENTIFIC_NOTATION = "SCIENTIFIC_NOTATION"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    TOO_MANY_DECIMALS = "TOO_MANY_DECIMALS"
    NON_POSITIVE_AMOUNT = "NON_POSITIVE_AMOUNT"
    INVALID_PAIR = "INVALID_PAIR"
    UNKNOWN_CURRENCY = "UNKNOWN_CURRENCY"
    UNSUPPORTED_PAIR = "UNSUPPORTED_PAIR"
    INVALID_SIDE = "INVALID_SIDE"
    INVALID_AMOUNT_CURRENCY = "INVALID_AMOUNT_CURRENCY"
    INVALID_SPREAD = "INVALID_SPREAD"
    INVALID_DELIVERY = "INVALID_DELIVERY"
    INVALID_DATE = "INVALID_DATE"
    PAST_VALUE_DATE = "PAST_VALUE_DATE"
    REFERENCE_TOO_LONG = "REFERENCE_TOO_LONG"
    DUPLICATE_TRADE_ID = "DUPLICATE_TRADE_ID"
    TOTAL_ROW = "TOTAL_ROW"
    EXTRA_VALUES = "EXTRA_VALUES"


class Rejection(BaseModel):
    """One problem with one cell (or row) of an uploaded file."""

    row: int = Field(description="Row number as the analyst sees it (Excel row / CSV line).")
    column: str = Field(description="Canonical column name, or the file's header for extras.")
    value: str | None = Field(description="The offending value as it was in the file.")
    code: RejectCode
    message: str


class LoadResult(BaseModel):
    """Outcome of loading one file into a new batch."""

    batch_id: int
    name: str
    source_file: str
    layout: Layout
    rows: int = Field(description="Data rows below the header: accepted + rejected + ignored.")
    accepted: int
    rejected: int
    ignored: int
    fingerprint: str
    previously_loaded_as: list[int] = Field(default_factory=list)
    column_map: dict[str, str] = Field(default_factory=dict)
    ignored_columns: list[str] = Field(default_factory=list)
    rejections: list[Rejection] = Field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """The JSON contract of ``python -m fxbatch load --json``."""
        return {
            "batch_id": self.batch_id,
            "name": self.name,
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "ignored": self.ignored,
            "layout": self.layout.value,
            "source_file": self.source_file,
            "fingerprint": self.fingerprint,
            "previously_loaded_as": self.previously_loaded_as,
            "rejections": [r.model_dump(mode="json") for r in self.rejections],
        }


class BatchInfo(BaseModel):
    batch_id: int
    name: str
    status: str
    trades: int
    rows: int
    rejected: int
    ignored: int
    source_file: str
    layout: str
    fingerprint: str
    created_at: datetime
