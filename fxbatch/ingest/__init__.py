"""Files -> accepted trades + rejections, validated in bulk inside DuckDB.

``check_file`` leaves a temp table ``checked`` on the given cursor (one row per data row
with its problems) and returns the counts; ``fxbatch.batches`` turns it into a batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from functools import partial
from pathlib import Path

import duckdb

from fxbatch import money, valuedates
from fxbatch.errors import UnusableFileError
from fxbatch.ingest.fixes import Correction, Fixes, apply_fixes, cells_sql
from fxbatch.ingest.layout import (
    FIELDS,
    ColumnPlan,
    normalise_header,
    plan_columns,
    rejected_rows_in_file_terms,
    rejections_in_file_terms,
)
from fxbatch.ingest.limits import Limits, mark_badly_quoted, mark_error_cells, mark_long_cells
from fxbatch.ingest.readers import RawFile, csv_error, csv_exact, read_into, refuse_open_quote_at_end
from fxbatch.ingest.rules import RuleContext, build_checked, mark_duplicates, pin_rows
from fxbatch.models import Layout, RejectedRow, Rejection

__all__ = [
    "CheckedFile",
    "Fixes",
    "Limits",
    "check_file",
    "fetch_rejected_rows",
    "fetch_rejections",
    "normalise_header",
    "rejected_rows_in_file_terms",
    "rejections_in_file_terms",
]


@dataclass
class CheckedFile:
    raw: RawFile
    plan: ColumnPlan
    rows: int
    accepted: int
    rejected: int
    ignored: int
    corrections: list[Correction]  # (row, field, the file's text, the new text), in row order

    @property
    def fixed(self) -> list[int]:
        """Rows replaced by the analyst's corrections."""
        return sorted({c[0] for c in self.corrections})


def check_file(
    cur: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    pairs: frozenset[str],
    today: date,
    default_spread_pips: int = 0,
    mids: Mapping[str, float] | None = None,
    sheet: str | None = None,
    column_map: Mapping[str, str] | None = None,
    search_rows: int = 30,
    fixes: Fixes | None = None,
    source: str | None = None,
    limits: Limits | None = None,
) -> CheckedFile:
    """Read and validate ``path``, with the analyst's ``fixes`` applied to their rows.

    Raises UnusableFileError when no batch can come of it (with ``headers`` set when the header
    row was found but its columns could not be mapped), BadFixError for a correction that cannot
    apply. ``source`` names the file in messages (default: its name). ``limits`` bound the file's
    size (default: the settings' defaults); a cell over its limit rejects its row.
    """
    limits = limits or Limits()
    raw = read_into(
        cur,
        path,
        sheet=sheet,
        search_rows=search_rows,
        column_map=column_map,
        limits=limits,
        meanwhile=partial(valuedates.warm, pairs, today),  # the calendars the rules read
    )
    header_width = len(raw.headers)
    while header_width and not raw.headers[header_width - 1]:
        header_width -= 1
    try:
        plan = plan_columns(raw.headers[:header_width], column_map)
    except UnusableFileError as exc:
        exc.headers = [h for h in raw.headers[:header_width] if h]
        raise
    ctx = RuleContext(
        plan, len(raw.headers), header_width, pairs, today, default_spread_pips,
        spread_caps=money.spread_caps(mids or {}),
    )  # fmt: skip
    raw, row_offset = _build(cur, raw, ctx)
    names = {i: name for name, i in plan.field_to_index.items()}
    columns = [names.get(i) or header for i, header in enumerate(raw.headers)]
    fix_cells = cells_sql("c", plan.layout is Layout.LEGACY)
    if raw.long_cells or raw.badly_quoted or raw.error_cells:
        pin_rows(cur, row_offset)  # the marks find rows by number; the fast path numbers them lazily
        mark_long_cells(cur, raw.long_cells, columns, limits.max_cell_chars, fix_cells)
        mark_badly_quoted(cur, raw.badly_quoted, columns, fix_cells)
        mark_error_cells(cur, raw.error_cells, names, fix_cells)
    corrections = apply_fixes(cur, ctx, fixes or {}, row_offset, source=source or path.name)
    mark_duplicates(cur, row_offset, fix_cells)  # pinning twice is a no-op
    total, blank, bad = cur.execute(
        "SELECT count(*), count(*) FILTER (WHERE is_blank), "
        "count(*) FILTER (WHERE NOT is_blank AND len(errors) > 0) FROM checked"
    ).fetchall()[0]
    ignored = int(blank) + raw.blank_lines
    rows = int(total) + raw.blank_lines
    accepted = int(total) - int(blank) - int(bad)
    if rows == ignored:
        raise UnusableFileError(
            f"{path.name} has a header row (row {raw.header_row}) but no trade rows below it.",
            code="NO_DATA_ROWS",
        )
    return CheckedFile(raw, plan, rows, accepted, int(bad), ignored, corrections)


def _build(cur: duckdb.DuckDBPyConnection, raw: RawFile, ctx: RuleContext) -> tuple[RawFile, int | None]:
    """Run the rules; for CSV, fall back to the exact reader when the fast path cannot hold.

    Returns the reader's final state and the rowid offset of the fast path (None otherwise).
    """
    if raw.expected_records is None:
        build_checked(cur, ctx)
        return raw, None
    fast = replace(ctx, row_offset=raw.header_row + 1)
    try:
        build_checked(cur, fast)
    except duckdb.Error as exc:
        text = str(exc).lower()
        if "parallel" not in text and "quoted new line" not in text:
            raise csv_error(raw, exc) from exc
        raw = csv_exact(cur, raw)
        try:
            build_checked(cur, replace(ctx, width=len(raw.headers)))
        except duckdb.Error as again:
            raise csv_error(raw, again) from again
        return raw, None
    records = cur.execute("SELECT count(*) FROM checked_data").fetchall()[0][0]
    if records != raw.expected_records:  # quoted line breaks: number the records exactly
        raw = csv_exact(cur, raw)
        build_checked(cur, replace(ctx, width=len(raw.headers)))
        return raw, None
    refuse_open_quote_at_end(raw)  # one record per line: only the last can open a quote the file ends in
    return raw, fast.row_offset


def fetch_rejections(cur: duckdb.DuckDBPyConnection, limit: int | None = None) -> list[Rejection]:
    """Problems in ``checked``, in row order."""
    sql = (
        "SELECT src_row, e.col, e.value, e.code, e.message FROM "
        "(SELECT src_row, unnest(errors) AS e FROM checked WHERE len(errors) > 0) ORDER BY src_row"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [Rejection(row=r[0], column=r[1], value=r[2], code=r[3], message=r[4]) for r in cur.execute(sql).fetchall()]


def fetch_rejected_rows(cur: duckdb.DuckDBPyConnection, plan: ColumnPlan, limit: int) -> list[RejectedRow]:
    """The first ``limit`` rejected rows of ``checked``, with the mapped fields' cell texts to fix."""
    mapped = [(name, FIELDS.index(name)) for name in FIELDS if name in plan.field_to_index]
    found = cur.execute(
        "SELECT src_row, fix_cells, [e.message FOR e IN errors] FROM checked "
        f"WHERE len(errors) > 0 ORDER BY src_row LIMIT {int(limit)}"
    ).fetchall()
    return [
        RejectedRow(row=row, values={name: (cells[i] if cells else None) for name, i in mapped}, problems=problems)
        for row, cells, problems in found
    ]
