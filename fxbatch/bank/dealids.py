"""Deal transaction ids: the caller's unique reference for each booking (DOMAIN section 3).

A run's trades get UUIDs made in bulk, never one ``uuid4()`` per trade: the run draws one random
UUID when it is created and keeps its first 24 characters as the run's prefix
(``xxxxxxxx-xxxx-4xxx-yxxx-``); a trade's id is that prefix and its source row as 12 zero-padded
decimal digits (decimal digits are hex digits, so the id is a well-formed version-4 UUID). The id
is fixed before any booking, the same on every retry and on resume, and unique across runs
(74 random bits per run).

Runs created before fxbatch used UUIDs keep their ``FXB-<instance>-<run>-`` prefix and ids of
the form prefix || row, so they still resume and are still found in the bank's ledger.
"""

from __future__ import annotations

import re
import uuid

import pyarrow as pa
import pyarrow.compute as pc

ROW_DIGITS = 12
_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
_PREFIX = re.compile(_PATTERN)


def new_prefix() -> str:
    """A new run's prefix: the first 24 characters of a random UUID."""
    return str(uuid.uuid4())[:24]


def is_uuid_prefix(prefix: str) -> bool:
    return _PREFIX.fullmatch(prefix) is not None


def deal_ids(prefix: str, src_row: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The deal ids of the trades ``src_row`` of the run with ``prefix`` (vectorised)."""
    rows = pc.cast(src_row, pa.string())
    if is_uuid_prefix(prefix):
        rows = pc.utf8_lpad(rows, ROW_DIGITS, "0")
    ids = pc.binary_join_element_wise(prefix, rows, "")
    return ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids


def deal_id_sql(prefix: str, row: str) -> str:
    """SQL for the same id from a prefix column and a row column."""
    return (
        f"CASE WHEN regexp_full_match({prefix}, '{_PATTERN}') "
        f"THEN {prefix} || lpad(CAST({row} AS VARCHAR), {ROW_DIGITS}, '0') ELSE {prefix} || {row} END"
    )


def split(deal_id: str, src_row: int) -> str | None:
    """The prefix of ``deal_id`` when it is ``deal_ids(prefix, [src_row])`` for some prefix."""
    if len(deal_id) == 24 + ROW_DIGITS and is_uuid_prefix(deal_id[:24]):
        return deal_id[:24] if deal_id[24:] == str(src_row).zfill(ROW_DIGITS) else None
    tail = str(src_row)
    if not deal_id.endswith(tail) or len(deal_id) == len(tail):
        return None
    prefix = deal_id[: -len(tail)]
    return None if is_uuid_prefix(prefix) else prefix
