"""Corrections typed in by the analyst: rows of a checked file, re-validated with new values.

A correction is ``{row: {field: text}}``: the file's row number (as in the rejections) and
the new cell text for some of its fields. The other mapped fields keep the file's text. The
corrected rows go through the same rules as the file (``build_checked`` over a small table)
and replace their originals in ``checked_data``; the duplicate check runs afterwards, over all
rows. Each check starts again from the file, so the same corrections can be re-applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import duckdb
import pyarrow as pa

from fxbatch.errors import BadFixError
from fxbatch.ingest.layout import FIELDS
from fxbatch.ingest.rules import RuleContext, build_checked, pin_rows
from fxbatch.models import RejectCode

Fixes = Mapping[int, Mapping[str, str | None]]
# Problems the reader marks on single cells (fxbatch.ingest.limits) or the rules find beyond the
# header: the cells a corrected row is rebuilt from do not show them.
_READER_CODES = "[" + ", ".join(
    f"'{c.value}'" for c in (RejectCode.CELL_TOO_LONG, RejectCode.BAD_QUOTES, RejectCode.EXCEL_ERROR, RejectCode.EXTRA_VALUES)
) + "]"  # fmt: skip


def cells_sql(alias: str, legacy: bool) -> str:
    """A row's cells as text in FIELDS order, rebuilt from its checked values.

    For rows that passed the rules (accepted rows, and rows rejected only as duplicates), which
    carry no ``fix_cells``. The legacy CurPair names the currency the client sells first.
    """
    a = alias
    pair = f"{a}.currency_pair"
    if legacy:
        pair = (
            f"CASE {a}.side WHEN 'BUY' THEN right({pair}, 3) || left({pair}, 3) "
            f"ELSE left({pair}, 3) || right({pair}, 3) END"
        )
    return (
        f"[{a}.tid, {a}.client_cif, {a}.account_number, {pair}, {a}.side, CAST({a}.amount AS VARCHAR), "
        f"{a}.amount_currency, CAST({a}.spread_pips AS VARCHAR), {a}.delivery, "
        f"CASE WHEN {a}.value_date_derived THEN NULL ELSE CAST({a}.value_date AS VARCHAR) END, "
        f"{a}.reference]"
    )


def check_fixes(fixes: Fixes, mapped: Mapping[str, int]) -> dict[int, dict[str, str | None]]:
    """The corrections with int rows, or BadFixError naming the row and field at fault."""
    clean: dict[int, dict[str, str | None]] = {}
    for row, values in fixes.items():
        try:
            number = int(row)
        except (TypeError, ValueError):
            raise BadFixError(f"Row {row!r}: a correction names a row by its number (as in the rejections).") from None
        for name, value in values.items():
            if name not in FIELDS:
                raise BadFixError(f"Row {row}: {name!r} is not a trade field; fields are: {', '.join(FIELDS)}.")
            if name not in mapped:
                raise BadFixError(
                    f"Row {row}: the file has no column for {name}, so it cannot be corrected; "
                    f"map one of the file's columns to {name} first."
                )
            if value is not None and not isinstance(value, str):
                raise BadFixError(f"Row {row}, {name}: a correction is text, not {type(value).__name__}.")
        clean[number] = dict(values)
    return clean


Correction = tuple[int, str, str | None, str | None]  # row, field, the file's text, the new text


def apply_fixes(
    cur: duckdb.DuckDBPyConnection, ctx: RuleContext, fixes: Fixes, row_offset: int | None, *, source: str
) -> list[Correction]:
    """Replace the corrected rows in ``checked_data``; returns each changed cell, in row order.

    ``source`` is the file's name, for messages. Raises BadFixError for a row the file does
    not have, a blank row, or a field the file has no column for.
    """
    legacy = ctx.plan.layout.value == "legacy"
    clean = check_fixes(fixes, ctx.plan.field_to_index)
    if not clean:
        return []
    pin_rows(cur, row_offset)
    rows = sorted(clean)
    cur.register("_fx_fix_rows", pa.table({"src_row": pa.array(rows, type=pa.int64())}))
    try:
        found = cur.execute(
            f"SELECT c.src_row, c.is_blank, coalesce(c.fix_cells, {cells_sql('c', legacy)}) "
            "FROM checked_data c WHERE c.src_row IN (SELECT src_row FROM _fx_fix_rows) ORDER BY c.src_row"
        ).fetchall()
    finally:
        cur.unregister("_fx_fix_rows")
    by_row = {int(r[0]): (bool(r[1]), list(r[2])) for r in found}
    for row in rows:
        if row not in by_row or by_row[row][0]:
            raise BadFixError(
                f"Row {row} of {source} holds no trade (it is blank, a title or header row, or past the end "
                "of the file), so there is nothing to correct."
            )
    columns: dict[str, list[str | None]] = {f"c{i}": [None] * len(rows) for i in range(ctx.width)}
    changes: list[Correction] = []
    for k, row in enumerate(rows):
        cells = by_row[row][1]
        for name, value in clean[row].items():
            changes.append((row, name, cells[FIELDS.index(name)], value))
            cells[FIELDS.index(name)] = value
        for name, index in ctx.plan.field_to_index.items():
            columns[f"c{index}"][k] = cells[FIELDS.index(name)]
    table = pa.table(
        {"src_row": pa.array(rows, type=pa.int64()), **{c: pa.array(v, type=pa.string()) for c, v in columns.items()}}
    )
    cur.register("_fx_raw_fix", table)
    fields = pa.table({"src_row": pa.array(rows, type=pa.int64()),
                       "fields": pa.array([sorted(clean[r]) for r in rows], type=pa.list_(pa.string()))})  # fmt: skip
    cur.register("_fx_fix_fields", fields)
    try:
        build_checked(cur, replace(ctx, row_offset=None), source="_fx_raw_fix", table="_fx_fixed", view=None)
        # What the reader found wrong in a cell (a value misread, emptied or beyond the header) is
        # not in the cells the row is rebuilt from: it stays the row's problem unless the analyst
        # typed that cell anew.
        cur.execute(f"""
        UPDATE _fx_fixed f SET is_blank = false, is_total = false,
            errors = list_concat(list_filter(f.errors, lambda e: NOT list_contains(o.cols, e.col)), o.kept),
            fix_cells = coalesce(f.fix_cells, {cells_sql("f", legacy)})
        FROM (SELECT src_row, kept, list_transform(kept, lambda e: e.col) AS cols
              FROM (SELECT c.src_row, list_filter(c.errors, lambda e: list_contains({_READER_CODES}, e.code)
                                                                      AND NOT list_contains(x.fields, e.col)) AS kept
                    FROM checked_data c JOIN _fx_fix_fields x USING (src_row))
              WHERE len(kept) > 0) o
        WHERE f.src_row = o.src_row
        """)
        cur.execute("DELETE FROM checked_data WHERE src_row IN (SELECT src_row FROM _fx_fixed)")
        cur.execute("INSERT INTO checked_data SELECT * FROM _fx_fixed")
    finally:
        cur.unregister("_fx_raw_fix")
        cur.unregister("_fx_fix_fields")
        cur.execute("DROP TABLE IF EXISTS _fx_fixed")
    return changes
