"""Row rules, evaluated in bulk by DuckDB over the ``raw`` table into ``checked``.

Each rule is one SQL expression that yields either NULL (fine) or a problem struct
``{column, value, code, message}``; a row's ``errors`` is the list of its problems. A row is
blank (ignored) when every cell is empty, rejected when it has problems, accepted otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

import duckdb
import pyarrow as pa

from fxbatch import valuedates
from fxbatch.currencies import ISO_4217
from fxbatch.ingest.layout import ColumnPlan, column_label
from fxbatch.models import Layout
from fxbatch.money import MAX_SPREAD_PIPS, pip_size

MAX_REFERENCE = 140
_WS = "' ' || chr(9) || chr(10) || chr(13) || chr(160)"
_SCI = r"'[+-]?[0-9]+([.][0-9]+)?[eE][+-]?[0-9]+'"
_TOTAL_WORDS = ("TOTAL", "TOTALS", "GRAND TOTAL", "SUBTOTAL", "SUB TOTAL", "SUM")


@dataclass(frozen=True)
class RuleContext:
    plan: ColumnPlan
    width: int  # number of c* columns in raw
    header_width: int  # columns that carry a header name; the rest are overflow
    pairs: frozenset[str]
    today: date  # the trading date (Africa/Johannesburg): value dates are derived from it
    default_spread_pips: int
    row_offset: int | None = None  # fast CSV path: src_row = rowid + row_offset
    # Pairs whose rate caps the spread below MAX_SPREAD_PIPS: pair -> (widest spread, rate).
    spread_caps: Mapping[str, tuple[int, float]] = field(default_factory=dict)


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _one_of(expr: str, values: frozenset[str]) -> str:
    """``expr`` is one of ``values`` (letters, digits and '/' only).

    A regex alternation, not IN or list_contains: DuckDB plans those as a join, and a join
    does not keep the file's row order, which the fast CSV path relies on for row numbers.
    """
    assert all(re.fullmatch(r"[A-Z0-9/]+", v) for v in values)
    return f"regexp_full_match({expr}, {_q('|'.join(sorted(values)))})"


@dataclass(frozen=True)
class Rule:
    """One check: when ``cond`` holds, the row gets problem ``code`` on ``column``."""

    cond: str
    column: str  # a field, or (``column_sql``) an SQL expression naming the column
    value: str
    code: str
    message: str
    column_sql: bool = False

    def problem(self) -> str:
        column = self.column if self.column_sql else _q(self.column)
        return (
            f"CASE WHEN {self.cond} THEN struct_pack(col := {column}, value := {self.value}, "
            f"code := {_q(self.code)}, message := {self.message}) END"
        )


_DIGITS = "'0123456789'"
_LETTERS = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
_NBSP = "chr(160)"


def _ident(col: str) -> str:
    """Digits only; ``'123.0'`` (a numeric cell exported as text) is the lossless ``'123'``."""
    return (
        f"CASE WHEN {col} IS NULL THEN NULL WHEN regexp_full_match({col}, '[0-9]+') THEN {col} "
        f"WHEN regexp_full_match({col}, '[0-9]+[.]0+') THEN split_part({col}, '.', 1) END"
    )


def _sci(col: str) -> str:
    return (
        f"CASE WHEN contains({col}, 'E') OR contains({col}, 'e') THEN regexp_full_match({col}, {_SCI}) ELSE false END"
    )


def _spread_cap_rules(ctx: RuleContext) -> list[Rule]:
    """A spread of half the pair's rate or more (``money.spread_caps``): a fat finger, and at the
    rate itself the client's rate would be zero or below."""
    if not ctx.spread_caps:
        return []
    caps = sorted(ctx.spread_caps.items())
    cap = "CASE pair_n " + " ".join(f"WHEN {_q(p)} THEN {int(c)}" for p, (c, _) in caps) + " END"
    rate = (
        "CASE pair_n "
        + " ".join(f"WHEN {_q(p)} THEN {_q(f'{m:g} ({m / pip_size(p):,.0f} pips)')}" for p, (_, m) in caps)
        + " END"
    )
    default = int(ctx.default_spread_pips)
    said = (
        f"CASE WHEN spread_raw IS NULL THEN 'the default spread of {default} pips (setting "
        "FXBATCH_DEFAULT_SPREAD_PIPS)' ELSE 'spread_pips ' || spread_raw END"
    )
    return [
        Rule(
            f"pair_n IS NOT NULL AND (spread_n IS NOT NULL OR spread_raw IS NULL) "
            f"AND coalesce(spread_n, {default}) BETWEEN {cap} + 1 AND {MAX_SPREAD_PIPS}",
            "spread_pips",
            "spread_raw",
            "SPREAD_TOO_WIDE",
            f"{said} || ' is half or more of the rate of ' || pair_n || ', ' || {rate} "
            f"|| ': at most ' || {cap} || ' pips on ' || pair_n",
        )
    ]


def _rules(ctx: RuleContext, accy: str, legacy: bool, extra_value: str, extra_column: str) -> list[Rule]:
    delivery = "coalesce(deliv_n, 'SPOT')"
    sci_note = "is in scientific notation: Excel has lost digits; re-export the column as text"
    rules = [
        Rule("cif IS NULL", "client_cif", "cif", "MISSING_VALUE", "'client_cif is required'"),
        Rule("cif_sci", "client_cif", "cif", "SCIENTIFIC_NOTATION", f"'client_cif ' || cif || ' {sci_note}'"),
        Rule(
            "cif IS NOT NULL AND cif_n IS NULL AND NOT cif_sci",
            "client_cif",
            "cif",
            "INVALID_CIF",
            "'client_cif ' || cif || ' must contain digits only'",
        ),
        Rule("acc IS NULL", "account_number", "acc", "MISSING_VALUE", "'account_number is required'"),
        Rule("acc_sci", "account_number", "acc", "SCIENTIFIC_NOTATION", f"'account_number ' || acc || ' {sci_note}'"),
        Rule(
            "acc IS NOT NULL AND acc_n IS NULL AND NOT acc_sci",
            "account_number",
            "acc",
            "INVALID_ACCOUNT",
            "'account_number ' || acc || ' must contain digits only'",
        ),
        Rule("pair_raw IS NULL", "currency_pair", "pair_raw", "MISSING_VALUE", "'currency_pair is required'"),
        Rule(
            "pair_raw IS NOT NULL AND NOT pair_shape_ok",
            "currency_pair",
            "pair_raw",
            "INVALID_PAIR",
            "'currency_pair ' || pair_raw || ' is not a pair of currency codes like USD/ZAR'",
        ),
        Rule(
            "pair_shape_ok AND NOT (ccy1_iso AND ccy2_iso)",
            "currency_pair",
            "pair_raw",
            "UNKNOWN_CURRENCY",
            "'currency_pair ' || pair_raw || ': ' || CASE WHEN NOT ccy1_iso THEN ccy1 ELSE ccy2 END "
            "|| ' is not an ISO 4217 currency code'",
        ),
        Rule(
            "pair_shape_ok AND ccy1_iso AND ccy2_iso AND pair_n IS NULL",
            "currency_pair",
            "pair_raw",
            "UNSUPPORTED_PAIR",
            f"'currency pair ' || pair_raw || ' is not offered; supported pairs: ' || {_q(', '.join(sorted(ctx.pairs)))}",
        ),
        Rule("amt_raw IS NULL", "amount", "amt_raw", "MISSING_VALUE", "'amount is required'"),
        Rule(
            "amt_sci",
            "amount",
            "amt_raw",
            "SCIENTIFIC_NOTATION",
            "'amount ' || amt_raw || ' is in scientific notation: Excel may have rounded it; "
            "re-export it as a number with 2 decimals'",
        ),
        Rule(
            "amt_raw IS NOT NULL AND NOT amt_sci AND amt_d IS NULL",
            "amount",
            "amt_raw",
            "INVALID_AMOUNT",
            "'amount ' || amt_raw || ' is not a number (use . for decimals and optionally , or a space "
            "between thousands)'",
        ),
        Rule(
            "amt_d IS NOT NULL AND amt_decimals > 2",
            "amount",
            "amt_raw",
            "TOO_MANY_DECIMALS",
            "'amount ' || amt_raw || ' has more than 2 decimals'",
        ),
        Rule(
            "amt_d IS NOT NULL AND amt_decimals <= 2 AND NOT amt_d > 0",
            "amount",
            "amt_raw",
            "NON_POSITIVE_AMOUNT",
            "'amount ' || amt_raw || ' must be greater than zero'",
        ),
        Rule(
            "amt_d IS NOT NULL AND amt_decimals <= 2 AND amt_d >= 1e16",
            "amount",
            "amt_raw",
            "AMOUNT_TOO_LARGE",
            "'amount ' || amt_raw || ' is too large: an amount must be below 10^16 (10 000 000 000 000 000)'",
        ),
        Rule(
            f"pair_n IS NOT NULL AND {accy} IS NULL",
            "amount_currency",
            "accy_raw",
            "MISSING_VALUE",
            "'amount_currency is required for ' || pair_n || ' (the pair has no ZAR)'",
        ),
        Rule(
            # Legacy amounts are in ZAR by definition: the legacy rule below covers pairs without ZAR.
            f"{'accy_raw IS NOT NULL AND ' if legacy else ''}pair_n IS NOT NULL AND {accy} IS NOT NULL "
            f"AND {accy} <> left(pair_n, 3) AND {accy} <> right(pair_n, 3)",
            "amount_currency",
            "coalesce(accy_raw, 'ZAR')",
            "INVALID_AMOUNT_CURRENCY",
            f"'amount currency ' || {accy} || ' is not one of the currencies of ' || pair_n",
        ),
        Rule(
            f"spread_raw IS NOT NULL AND (spread_n IS NULL OR spread_n > {MAX_SPREAD_PIPS})",
            "spread_pips",
            "spread_raw",
            "INVALID_SPREAD",
            f"'spread_pips ' || spread_raw || ' must be a whole number of pips from 0 to {MAX_SPREAD_PIPS} "
            "(1 pip = 0.0001 of the rate, 0.01 for pairs quoted in JPY: 385 on USD/ZAR is 0.0385)'",
        ),
        *_spread_cap_rules(ctx),
        Rule(
            "deliv_raw IS NOT NULL AND deliv_n IS NULL",
            "delivery",
            "deliv_raw",
            "INVALID_DELIVERY",
            "'delivery ' || deliv_raw || ' must be SPOT, TOM or CASH (also: same day or today for CASH, "
            "tomorrow for TOM)'",
        ),
        Rule(
            "vdate_raw IS NOT NULL AND vdate_d IS NULL",
            "value_date",
            "vdate_raw",
            "INVALID_DATE",
            "'value_date ' || vdate_raw || ' is not a date (use YYYY-MM-DD)'",
        ),
        Rule(
            f"vdate_d < DATE {_q(ctx.today.isoformat())}",
            "value_date",
            "vdate_raw",
            "PAST_VALUE_DATE",
            f"'value_date ' || vdate_raw || ' is in the past (today is {ctx.today.isoformat()})'",
        ),
        Rule(
            # A CASE, not AND: DuckDB evaluates every operand of an AND for every row, and only
            # the rows that give a value date need the calendar lookup.
            f"CASE WHEN vdate_d >= DATE {_q(ctx.today.isoformat())} AND pair_n IS NOT NULL "
            f"THEN {valuedates.closed_sql('pair_n', 'vdate_d', ctx.pairs, ctx.today)} END",
            "value_date",
            "vdate_raw",
            "NOT_A_BUSINESS_DAY",
            f"{valuedates.closed_reason_sql('pair_n', 'vdate_d', ctx.pairs, ctx.today)} "
            "|| ': a value date must be a business day in both ' || left(pair_n, 3) || ' and ' || right(pair_n, 3)",
        ),
        Rule(
            f"CASE WHEN vdate_d >= DATE {_q(ctx.today.isoformat())} AND pair_n IS NOT NULL "
            f"THEN {valuedates.unsuited_sql('pair_n', delivery, 'vdate_d', ctx.pairs, ctx.today)} END",
            "value_date",
            "vdate_raw",
            "VALUE_DATE_MISMATCH",
            f"'value_date ' || vdate_raw || ' does not suit delivery ' || {delivery} || "
            "CASE WHEN deliv_raw IS NULL THEN ' (SPOT when the delivery is empty)' ELSE '' END || ': ' || "
            f"{valuedates.unsuited_reason_sql('pair_n', delivery, 'vdate_d', ctx.pairs, ctx.today)}",
        ),
        Rule(
            f"length(ref) > {MAX_REFERENCE}",
            "reference",
            "ref",
            "REFERENCE_TOO_LONG",
            f"'reference has ' || length(ref) || ' characters; at most {MAX_REFERENCE} are allowed'",
        ),
        Rule(
            "has_extra",
            extra_column,
            extra_value,
            "EXTRA_VALUES",
            f"'the row has values beyond {column_label(ctx.header_width - 1)}, the last named one: ' || {extra_value}",
            column_sql=True,
        ),
    ]
    closed_today = valuedates.closed_on(ctx.pairs, ctx.today)
    if closed_today:
        today_sql = f"DATE {_q(ctx.today.isoformat())}"
        rules.append(
            Rule(
                f"vdate_d IS NULL AND deliv_n = 'CASH' AND pair_n IS NOT NULL AND {_one_of('pair_n', closed_today)}",
                "delivery",
                "deliv_raw",
                "NOT_A_BUSINESS_DAY",
                f"'CASH settles on the trade date, and ' || "
                f"{valuedates.closed_reason_sql('pair_n', today_sql, ctx.pairs, ctx.today)} "
                "|| ': use TOM or SPOT, or give a value_date'",
            )
        )
    if legacy:
        rules.append(
            Rule(
                "pair_n IS NOT NULL AND left(pair_n, 3) <> 'ZAR' AND right(pair_n, 3) <> 'ZAR'",
                "currency_pair",
                "pair_raw",
                "INVALID_AMOUNT_CURRENCY",
                "'legacy layout amounts are in ZAR but the pair ' || pair_n || ' has no ZAR'",
            )
        )
    else:
        rules[10:10] = [
            Rule("side_raw IS NULL", "side", "side_raw", "MISSING_VALUE", "'side is required'"),
            Rule(
                "side_raw IS NOT NULL AND side_n IS NULL",
                "side",
                "side_raw",
                "INVALID_SIDE",
                "'side ' || side_raw || ' must be BUY or SELL (or B/S)'",
            ),
        ]
    return rules


# What the analyst sees of a rejected row to fix it, in FIELDS order: the file's cell texts.
_FIX_SOURCES = ("tid", "cif", "acc", "pair_raw", "side_raw", "amt_raw", "accy_raw", "spread_raw", "deliv_raw",
                "vdate_raw", "ref")  # fmt: skip


def build_checked(
    con: duckdb.DuckDBPyConnection,
    ctx: RuleContext,
    *,
    source: str = "raw",
    table: str = "checked_data",
    view: str | None = "checked",
) -> None:
    """Create temp table ``checked_data`` (and view ``checked``) from ``raw``: normalised values
    + problems per row, and for rejected rows ``fix_cells``, the cells as the file had them.

    ``source``/``table``/``view`` name other tables to check a few corrected rows the same way
    (``view=None``: no view).
    """
    idx = ctx.plan.field_to_index
    legacy = ctx.plan.layout is Layout.LEGACY

    def cell(name: str) -> str:
        if name not in idx:
            return "NULL::VARCHAR"
        # trim() takes spaces (NBSP too) but not tabs or line breaks; trim(x, chars) is slow: only for
        # those. The fast CSV path has one record per line: no cell of it holds a line break.
        c = f"c{idx[name]}"
        breaks = f"contains({c}, chr(9))"
        if ctx.row_offset is None:
            breaks += f" OR contains({c}, chr(10)) OR contains({c}, chr(13))"
        return f"NULLIF(CASE WHEN {breaks} THEN trim({c}, {_WS}) ELSE trim({c}) END, '')"

    raw_cols = [f"c{i}" for i in range(ctx.width)]
    header_cells = [f"NULLIF(trim(c{i}), '')" for i in range(ctx.header_width)]
    overflow_raw = [f"c{i}" for i in range(ctx.header_width, ctx.width)]
    overflow = [f"NULLIF(trim(c{i}, {_WS}), '')" for i in range(ctx.header_width, ctx.width)]
    # A row with a valid CIF is not blank; only the rest (blank or rejected rows) pay for the
    # full check, which also takes cells holding nothing but tabs or spaces as empty.
    blank = (
        "CASE WHEN cif_n IS NOT NULL THEN false ELSE "
        + " AND ".join(f"coalesce(regexp_full_match({c}, '[\\s\\p{{Z}}]*'), true)" for c in raw_cols)
        + " END"
    )
    total = (
        f"CASE WHEN cif_n IS NOT NULL AND acc_n IS NOT NULL THEN false "
        f"ELSE coalesce(regexp_full_match(upper(coalesce({', '.join(header_cells)})), "
        f"'(GRAND |SUB ?)?TOTALS?|SUM'), false) END"
    )
    extra = (
        f"CASE WHEN coalesce({', '.join(overflow_raw)}) IS NULL THEN false "
        f"ELSE {' OR '.join(f'{c} IS NOT NULL' for c in overflow)} END"
        if overflow
        else "false"
    )
    extra_value = "concat_ws(' | ', " + ", ".join(overflow) + ")" if overflow else "NULL::VARCHAR"
    # The first column holding an extra value, as the spreadsheet shows it ("column H").
    extra_column = (
        "CASE " + " ".join(f"WHEN {c} IS NOT NULL THEN {_q(column_label(ctx.header_width + i))}"
                           for i, c in enumerate(overflow)) + " END"
        if overflow
        else "NULL::VARCHAR"
    )  # fmt: skip

    s1 = f"""
    SELECT src_row, {", ".join(raw_cols)},
      {cell("trade_id")} AS tid, {cell("client_cif")} AS cif, {cell("account_number")} AS acc,
      {cell("currency_pair")} AS pair_raw, {cell("side")} AS side_raw,
      {cell("amount")} AS amt_raw, {cell("amount_currency")} AS accy_raw,
      {cell("spread_pips")} AS spread_raw, {cell("delivery")} AS deliv_raw,
      {cell("value_date")} AS vdate_raw, {cell("reference")} AS ref
    FROM {source}"""
    grouped = (
        f"CASE WHEN contains(amt_raw, ',') OR contains(amt_raw, ' ') OR contains(amt_raw, {_NBSP}) "
        "THEN regexp_full_match(amt_raw, '[+-]?[0-9]{1,3}((,[0-9]{3})+|([ \\x{00A0}][0-9]{3})+)([.][0-9]*)?') END"
    )
    s2 = f"""
    SELECT *,
      {_ident("cif")} AS cif_n, {_ident("acc")} AS acc_n, {_sci("cif")} AS cif_sci, {_sci("acc")} AS acc_sci,
      upper(replace(replace(replace(replace(pair_raw, '/', ''), '-', ''), ' ', ''), '_', '')) AS letters,
      CASE upper(side_raw) WHEN 'BUY' THEN 'BUY' WHEN 'B' THEN 'BUY'
                           WHEN 'SELL' THEN 'SELL' WHEN 'S' THEN 'SELL' END AS side_n,
      {_sci("amt_raw")} AS amt_sci,
      CASE WHEN ({grouped}) THEN regexp_replace(amt_raw, '[, \\x{{00A0}}]', '', 'g')
           WHEN ({grouped}) IS NULL THEN amt_raw END AS amt_clean,
      -- Plain digits (nearly every cell) by a cast that round-trips; '25.0' and the like by the pattern.
      CASE WHEN CAST(TRY_CAST(spread_raw AS USMALLINT) AS VARCHAR) = spread_raw THEN TRY_CAST(spread_raw AS USMALLINT)
           WHEN regexp_full_match(spread_raw, '[0-9]{{1,6}}([.]0*)?')
           THEN CAST(split_part(spread_raw, '.', 1) AS INTEGER) END AS spread_n,
      CASE upper(deliv_raw) WHEN 'SPOT' THEN 'SPOT' WHEN 'TOM' THEN 'TOM' WHEN 'TOMORROW' THEN 'TOM'
           WHEN 'CASH' THEN 'CASH' WHEN 'TODAY' THEN 'CASH' WHEN 'SAME DAY' THEN 'CASH'
           WHEN 'SAME_DAY' THEN 'CASH' WHEN 'SAMEDAY' THEN 'CASH' WHEN 'SAME-DAY' THEN 'CASH' END AS deliv_n,
      -- A four-digit year, or eight digits: 2026121 (Dec 1 or Jan 21?) and 02/12/26 (year 2?) are no dates.
      CASE WHEN regexp_full_match(vdate_raw, '[0-9]{{8}}|[0-9]{{4}}[-/][0-9]{{1,2}}[-/][0-9]{{1,2}}([ T].*)?|[0-9]{{1,2}}/[0-9]{{1,2}}/[0-9]{{4}}')
           THEN try_strptime(vdate_raw, ['%Y-%m-%d', '%Y/%m/%d', '%Y%m%d', '%d/%m/%Y', '%Y-%m-%d %H:%M:%S',
                                         '%Y-%m-%dT%H:%M:%S'])::DATE END AS vdate_d,
      upper(accy_raw) AS accy_u
    FROM s1"""
    fwd_ok = _one_of("ccy1 || '/' || ccy2", ctx.pairs)
    rev_ok = _one_of("ccy2 || '/' || ccy1", ctx.pairs)
    if legacy:
        # CurPair names the currency the client sells first: ZARUSD = sell ZAR, buy USD = USD/ZAR BUY.
        pair_side = f"""
      CASE WHEN {rev_ok} THEN ccy2 || '/' || ccy1
           WHEN {fwd_ok} THEN ccy1 || '/' || ccy2 END AS pair_n,
      CASE WHEN {rev_ok} THEN 'BUY'
           WHEN {fwd_ok} THEN 'SELL' END AS side_f,
      'ZAR' AS accy_default"""
    else:
        pair_side = f"""
      CASE WHEN {fwd_ok} THEN ccy1 || '/' || ccy2 END AS pair_n,
      side_n AS side_f,
      CASE WHEN ccy1 = 'ZAR' OR ccy2 = 'ZAR' THEN 'ZAR' END AS accy_default"""
    s3 = """
    SELECT *,
      regexp_full_match(upper(pair_raw), '[A-Z]{3}[ /_-]?[A-Z]{3}') AS pair_shape_ok,
      left(letters, 3) AS ccy1, right(letters, 3) AS ccy2,
      CASE WHEN regexp_full_match(amt_clean, '[+-]?[0-9]*[.]?[0-9]*') THEN TRY_CAST(amt_clean AS DOUBLE) END AS amt_d,
      CASE WHEN contains(amt_clean, '.') THEN length(rtrim(split_part(amt_clean, '.', 2), '0')) ELSE 0 END
        AS amt_decimals
    FROM s2"""
    s4 = f"""
    SELECT *, {pair_side},
      {_one_of("ccy1", ISO_4217)} AS ccy1_iso, {_one_of("ccy2", ISO_4217)} AS ccy2_iso,
      {blank} AS is_blank, {extra} AS has_extra
    FROM s3"""
    s5 = f"SELECT *, {total} AS is_total FROM s4"
    accy = "coalesce(accy_u, accy_default)"
    rules = _rules(ctx, accy, legacy, extra_value, extra_column)
    any_problem = " OR ".join(f"coalesce({r.cond}, false)" for r in rules)
    problems = "list_filter([" + ",\n        ".join(r.problem() for r in rules) + "], lambda x: x IS NOT NULL)"
    total_problem = (
        "[struct_pack(col := '(row)', value := NULL::VARCHAR, code := 'TOTAL_ROW', "
        "message := 'this looks like a totals row; it is not a trade and was not loaded')]"
    )
    derived = valuedates.derived_sql("pair_n", "coalesce(deliv_n, 'SPOT')", ctx.pairs, ctx.today)
    fix_sources = ", ".join(_FIX_SOURCES)
    sql = f"""
    CREATE OR REPLACE TEMP TABLE {table} AS
    WITH s1 AS ({s1}), s2 AS ({s2}), s3 AS ({s3}), s4 AS ({s4}), s5 AS ({s5}), s6 AS (
    SELECT src_row, is_blank,
      CASE WHEN is_blank THEN []
           WHEN is_total THEN {total_problem}
           WHEN {any_problem} THEN {problems}
           ELSE [] END AS errors,
      cif_n AS client_cif, acc_n AS account_number, pair_n AS currency_pair,
      side_f AS side, TRY_CAST(amt_clean AS DECIMAL(18, 2)) AS amount,
      {accy} AS amount_currency,
      coalesce(spread_n, {int(ctx.default_spread_pips)}) AS spread_pips,
      coalesce(deliv_n, 'SPOT') AS delivery,
      coalesce(vdate_d, {derived}) AS value_date,
      ref AS reference,
      vdate_d IS NULL AS value_date_derived,
      is_total, {fix_sources}
    FROM s5)
    SELECT * EXCLUDE ({", ".join(_FIX_SOURCES[1:])}),
      CASE WHEN len(errors) > 0 THEN [{fix_sources}] END AS fix_cells
    FROM s6
    """
    con.execute(sql)
    if view is None:
        return
    # Fast CSV path: the reader gives no row numbers; the table keeps the file's order, so a
    # record's line is its rowid + the first data line.
    src_row = f"coalesce(src_row, rowid + {ctx.row_offset})" if ctx.row_offset is not None else "src_row"
    con.execute(f"""
    CREATE OR REPLACE TEMP VIEW checked AS
    SELECT {src_row} AS src_row, * EXCLUDE (src_row, tid),
      coalesce(tid, printf('ROW%07d', {src_row})) AS trade_id, tid IS NULL AS trade_id_made
    FROM checked_data
    """)


def drop_checked(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP VIEW IF EXISTS checked")
    con.execute("DROP TABLE IF EXISTS checked_data")


def pin_rows(con: duckdb.DuckDBPyConnection, row_offset: int | None) -> None:
    """Write the fast CSV path's row numbers (rowid + offset) into ``checked_data`` before
    anything moves its rows: updating a list column or deleting rows changes rowids."""
    if row_offset is not None:
        con.execute(f"UPDATE checked_data SET src_row = rowid + {row_offset} WHERE src_row IS NULL")


def mark_duplicates(con: duckdb.DuckDBPyConnection, row_offset: int | None, fix_cells: str | None = None) -> None:
    """Reject every later row whose trade_id an earlier row of the file already uses.

    A row without a trade_id is given ROW<row number>; where the file gives that id to another
    row (a re-upload of an export, with new rows added), the made one becomes ROW<row>-<n>
    instead: the analyst's ids win, and a row is never rejected for an id it did not give.

    ``fix_cells`` (an SQL list over alias ``c``) fills in the cells the analyst sees to fix
    such a row, which passed every other rule and so has none yet.

    A separate pass (one aggregate over ``checked`` plus an update of the few duplicates)
    so that the main validation stays a single streaming pass over the file.
    """
    # A made id is its own row's: at most one row of a group has it made (an integer aggregate,
    # not a second list over every id).
    groups = con.execute(
        "SELECT trade_id, list(src_row ORDER BY src_row), min(src_row) FILTER (WHERE trade_id_made) FROM checked "
        "WHERE NOT is_blank AND NOT is_total GROUP BY trade_id HAVING count(*) > 1"
    ).fetchall()
    if not groups:
        return
    later: list[tuple[int, str, int]] = []
    made: list[tuple[int, str]] = []
    for tid, rows, made_row in groups:
        given = [row for row in rows if row != made_row]
        later += [(row, tid, given[0]) for row in given[1:]]
        if made_row is not None:
            made.append((made_row, tid))
    pin_rows(con, row_offset)
    if made:
        _rename_made_ids(con, made)
    if not later:
        return
    dup_table = pa.table(
        {
            "src_row": pa.array([r[0] for r in later], type=pa.int64()),
            "trade_id": pa.array([r[1] for r in later], type=pa.string()),
            "first_row": pa.array([r[2] for r in later], type=pa.int64()),
        }
    )
    con.register("_fx_dups", dup_table)
    try:
        con.execute(f"""
        UPDATE checked_data c SET errors = list_append(c.errors, struct_pack(
            col := 'trade_id', value := d.trade_id, code := 'DUPLICATE_TRADE_ID',
            message := 'trade_id ' || d.trade_id || ' is already used on row ' || d.first_row)),
            fix_cells = coalesce(c.fix_cells, {fix_cells or "NULL"})
        FROM _fx_dups d WHERE c.src_row = d.src_row
        """)
    finally:
        con.unregister("_fx_dups")


def _rename_made_ids(con: duckdb.DuckDBPyConnection, made: list[tuple[int, str]]) -> None:
    """Give the rows whose made trade_id the file gives another row ROW<row>-<n>, the first n
    that no row of the file uses: one look over the file for all the candidates (again only for
    those taken), then one update."""
    number = {row: 1 for row, _ in made}
    names: dict[int, str] = {}
    pending = made
    while pending:
        candidates = [f"{tid}-{number[row]}" for row, tid in pending]
        taken = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT trade_id FROM checked WHERE list_contains(?, trade_id)", [candidates]
            ).fetchall()
        }
        still = []
        for (row, tid), name in zip(pending, candidates, strict=True):
            if name in taken:
                number[row] += 1
                still.append((row, tid))
            else:
                names[row] = name  # made ids differ, so their candidates do too
        pending = still
    renames = pa.table(
        {"src_row": pa.array(list(names), pa.int64()), "tid": pa.array(list(names.values()), pa.string())}
    )
    con.register("_fx_renames", renames)
    try:
        con.execute("UPDATE checked_data c SET tid = r.tid FROM _fx_renames r WHERE c.src_row = r.src_row")
    finally:
        con.unregister("_fx_renames")
