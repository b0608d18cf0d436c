"""Size limits on uploaded files, checked before anything large is read into memory.

A workbook is a zip archive: its central directory gives each member's stored and unzipped
size without decompressing anything, and the used range of its sheet (which the workbook
reader allocates as one dense block of cells) is found by a streaming scan of the sheet's
XML. Cells over ``max_cell_chars`` do not refuse the file: their rows are rejected.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol
from xml.etree import ElementTree

import duckdb

from fxbatch.errors import UnusableFileError
from fxbatch.ingest.layout import column_label

MB = 1024 * 1024  # megabytes as Streamlit's server.maxUploadSize counts them (MiB)
MAX_FILE_MB = 200
MAX_ROWS = 1_048_576  # Excel's sheet maximum
MAX_CELLS = 16 * MAX_ROWS  # 16,777,216: a full-height sheet of 16 columns loads within 2 GiB
MAX_CELL_CHARS = 32_767  # Excel's cell maximum
MAX_UNZIPPED_MB = 1024
MAX_ZIP_RATIO = 100
_RATIO_FLOOR = MB  # members smaller than this unzipped are never a bomb, whatever their ratio
_CHUNK = 4 * MB
# Cell and row references where writers put them (first attribute), and anywhere (slower, as a fallback).
_ROW_REF = re.compile(rb'<row r="(\d+)"')
_ANY_ROW_REF = re.compile(rb'<row\b[^>]*?\br="(\d+)"')
_WIDE_REF = re.compile(rb'<c r="([A-Z]{2,3})\d')
_ANY_WIDE_REF = re.compile(rb'<c\b[^>]*?\br="([A-Z]{2,3})\d')
_REF_CELL = re.compile(rb'<c\b[^>]*?\br="')
_SHARED = re.compile(rb"<si>|<si ")


class _LimitSettings(Protocol):
    max_file_mb: int
    max_rows: int
    max_cells: int
    max_cell_chars: int
    max_unzipped_mb: int
    max_zip_ratio: int


@dataclass(frozen=True)
class Limits:
    """The size limits of one load (defaults = the settings' defaults)."""

    max_file_mb: int = MAX_FILE_MB
    max_rows: int = MAX_ROWS
    max_cells: int = MAX_CELLS
    max_cell_chars: int = MAX_CELL_CHARS
    max_unzipped_mb: int = MAX_UNZIPPED_MB
    max_zip_ratio: int = MAX_ZIP_RATIO

    @classmethod
    def from_settings(cls, settings: _LimitSettings) -> Limits:
        return cls(
            settings.max_file_mb,
            settings.max_rows,
            settings.max_cells,
            settings.max_cell_chars,
            settings.max_unzipped_mb,
            settings.max_zip_ratio,
        )


def _setting(name: str) -> str:
    return f"setting FXBATCH_{name.upper()}"


def too_large(message: str, limit: str, code: str) -> UnusableFileError:
    return UnusableFileError(f"{message} (limit {limit}, {_setting(limit)}).", code=code)


def check_file_size(path: Path, limits: Limits) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        return  # detect_kind names the problem
    if size > limits.max_file_mb * MB:
        raise too_large(
            f"{path.name} is {size / MB:,.1f} MB; files of at most {limits.max_file_mb:,} MB are loaded. "
            "Split it into smaller files",
            "max_file_mb",
            "FILE_TOO_LARGE",
        )


def check_rows(name: str, rows: int, limits: Limits) -> None:
    if rows > limits.max_rows:
        raise too_large(
            f"{name} has {rows:,} rows; files of at most {limits.max_rows:,} rows are loaded. "
            "Split it into smaller files",
            "max_rows",
            "TOO_MANY_ROWS",
        )


MAX_COLUMNS = 1_024  # columns read from a file: the checks are one query over them all (a trades file has ~12)


def check_cells(name: str, rows: int, columns: int, limits: Limits) -> None:
    """Refuse a file over ``max_cells`` (rows x columns), or over MAX_COLUMNS wide: a stray cell
    far to the right (a row of 10,000 commas) made the load's one query take minutes."""
    if rows * columns > limits.max_cells:
        raise too_large(
            f"{name} spans {rows:,} rows x {columns:,} columns = {rows * columns:,} cells; at most "
            f"{limits.max_cells:,} cells are loaded (empty cells inside the used area count too). "
            "Delete the stray cells far below or to the right of the trades, or split the file",
            "max_cells",
            "TOO_MANY_CELLS",
        )
    if columns > MAX_COLUMNS:
        raise UnusableFileError(
            f"{name} is {columns:,} columns wide; at most {MAX_COLUMNS:,} columns are read (a trades file has "
            "about a dozen). Delete the stray cells or delimiters to the right of the trades, or save it again.",
            code="TOO_MANY_CELLS",
        )


# ---------------------------------------------------------------- workbooks (zip)


@dataclass
class SheetScan:
    """What the scan of an XLSX sheet found besides its size."""

    # An upper bound on the characters of any one shared string (a cell may repeat one of them any
    # number of times: the reader sizes its chunks by it); None when not known.
    longest_shared: int | None = None
    # Cells showing an Excel error (#N/A, #DIV/0!...): (row, 0-based column, the error), which
    # the workbook reader reads as empty.
    error_cells: list[tuple[int, int, str]] = field(default_factory=list)


def check_workbook(path: Path, sheet: str | None, limits: Limits) -> SheetScan:
    """Refuse a zip bomb and an oversized sheet before the workbook reader sees the file.

    Only zip-based workbooks (XLSX, XLSM, ODS) have a directory to check; XLS and XLSB are
    bounded by ``max_file_mb`` alone. An XLSX sheet is scanned (see ``SheetScan``).
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return SheetScan()  # not a zip (XLS), or damaged: the workbook reader says which
    with zf:
        members = zf.infolist()
        _check_unzipped(path.name, members, limits)
        target = _sheet_member(zf, sheet)
        scan = SheetScan()
        if target is None or not _check_extent(path.name, zf, target, limits, scan.error_cells):
            return scan
        scan.longest_shared = _longest_shared_string(zf)
        return scan


def _longest_shared_string(zf: zipfile.ZipFile) -> int | None:
    """The most bytes between two shared strings' starts: a bound on any one's characters."""
    if "xl/sharedStrings.xml" not in zf.namelist():
        return 0
    longest = previous = offset = 0
    try:
        with zf.open("xl/sharedStrings.xml") as fh:
            while chunk := fh.read(_CHUNK):
                for found in _SHARED.finditer(chunk):
                    at = offset + found.start()
                    longest, previous = max(longest, at - previous), at
                offset += len(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
        return None
    return max(longest, offset - previous)


def _check_unzipped(name: str, members: list[zipfile.ZipInfo], limits: Limits) -> None:
    total = sum(m.file_size for m in members)
    if total > limits.max_unzipped_mb * MB:
        raise too_large(
            f"{name} unzips to {total / MB:,.0f} MB; workbooks that unzip to at most {limits.max_unzipped_mb:,} MB "
            "are loaded (an XLSX file is a zip archive of the sheets' XML)",
            "max_unzipped_mb",
            "FILE_TOO_LARGE",
        )
    for m in members:
        ratio = m.file_size / max(m.compress_size, 1)
        if m.file_size >= _RATIO_FLOOR and ratio > limits.max_zip_ratio:
            raise too_large(
                f"{name} looks like a zip bomb: its part {m.filename} unzips to {ratio:,.0f} times its stored size "
                f"({m.compress_size:,} bytes -> {m.file_size:,}); at most {limits.max_zip_ratio:,} times is accepted",
                "max_zip_ratio",
                "ZIP_BOMB",
            )


_NS_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_NS_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_NS_PKG = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def _sheet_member(zf: zipfile.ZipFile, sheet: str | None) -> str | None:
    """The XML part of the sheet that will be read (the first, unless one is named)."""
    names = set(zf.namelist())
    if "xl/workbook.xml" not in names or "xl/_rels/workbook.xml.rels" not in names:
        return None  # ODS, or not a workbook: the reader decides
    try:
        book = ElementTree.fromstring(zf.read("xl/workbook.xml"))
        rels = ElementTree.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
    except (ElementTree.ParseError, zipfile.BadZipFile, OSError, RuntimeError):
        return None
    targets = {r.get("Id"): r.get("Target", "") for r in rels.iter(f"{_NS_PKG}Relationship")}
    sheets = list(book.iter(f"{_NS_MAIN}sheet"))
    chosen = next((s for s in sheets if sheet is None or s.get("name") == sheet), None)
    if chosen is None:
        return None
    target = targets.get(chosen.get(f"{_NS_REL}id"), "")
    member = target.lstrip("/") if target.startswith("/") else str(PurePosixPath("xl") / target)
    return member if member in names else None


def _column_number(letters: bytes) -> int:
    number = 0
    for ch in letters:
        number = number * 26 + ch - 64
    return number


def _check_extent(
    name: str, zf: zipfile.ZipFile, member: str, limits: Limits, errors: list[tuple[int, int, str]]
) -> bool:
    """Rows x columns of the sheet's used area, from its cell references, by a streaming scan;
    the cells showing an Excel error go in ``errors``.

    Single-letter columns are found by searching for anything right of the widest seen so far
    (a few fast searches per chunk); multi-letter ones, rare in a trades sheet, are read in full.
    A chunk is cut before its last cell, so that no cell is split between two.
    """
    rows = widest = implicit = 0
    tail = b""
    try:
        with zf.open(member) as fh:
            while chunk := fh.read(_CHUNK):
                cut = chunk.rfind(b"<c ")
                cut = cut if cut >= 0 else chunk.rfind(b"<")
                buf, tail = (tail + chunk[:cut], chunk[cut:]) if cut >= 0 else (tail + chunk, b"")
                rows, widest, implicit = _scan_chunk(buf, rows, widest, implicit)
                _error_cells(name, buf, errors)
                check_rows(name, rows, limits)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
        return False  # damaged: the workbook reader says so
    rows, widest, implicit = _scan_chunk(tail, rows, widest, implicit)
    _error_cells(name, tail, errors)
    check_rows(name, rows, limits)
    # A cell without a reference takes the next column: their number bounds the width they add.
    check_cells(name, rows, widest + implicit, limits)
    return True


_ERROR_CELL = re.compile(rb'<c\b([^>]*\bt="e"[^>]*)>(?:<f\b[^>]*/>|<f\b[^>]*>[^<]*</f>)?<v>([^<]*)</v>')
_CELL_REF = re.compile(rb'\br="([A-Z]{1,3})(\d+)"')
MAX_ERROR_CELLS = 100_000  # cells showing an Excel error one sheet may have: past it, the file is refused


def _error_cells(name: str, buf: bytes, errors: list[tuple[int, int, str]]) -> None:
    """The cells of ``buf`` (whole cells of a sheet's XML) that show an Excel error, added to ``errors``."""
    if b't="e"' not in buf:
        return
    for found in _ERROR_CELL.finditer(buf):
        ref = _CELL_REF.search(found.group(1))
        if ref is None:
            continue  # a cell without a reference: its place is not known here
        errors.append((int(ref.group(2)), _column_number(ref.group(1)) - 1, found.group(2).decode("utf-8", "replace")))
    if len(errors) > MAX_ERROR_CELLS:
        raise UnusableFileError(
            f"{name} has over {MAX_ERROR_CELLS:,} cells showing an Excel error (#N/A, #DIV/0!...): fix the "
            "formulas, or paste the sheet as values.",
            code="TOO_MANY_CELLS",
        )


def _scan_chunk(buf: bytes, rows: int, widest: int, implicit: int) -> tuple[int, int, int]:
    # Writers put the reference first: then plain patterns do (several times faster).
    refs = buf.count(b'<c r="')
    plain_rows = buf.count(b"<row") == buf.count(b'<row r="')
    plain_cells = buf.count(b"<c") == refs  # also counts <col>, <cfRule>...: then count exactly
    n_cells = refs
    if not plain_cells:
        n_cells = buf.count(b"<c ") + buf.count(b"<c>") + buf.count(b"<c/>")
        plain_cells = n_cells == refs
    found = (_ROW_REF if plain_rows else _ANY_ROW_REF).findall(buf)
    if found:
        rows = max(rows, *(int(r) for r in found))
    wide = (_WIDE_REF if plain_cells else _ANY_WIDE_REF).findall(buf)
    if wide:
        widest = max(widest, *(_column_number(w) for w in wide))
    cell = rb'<c r="' if plain_cells else rb'<c\b[^>]*?\br="'
    while widest < 26:  # anything right of the widest single-letter column so far
        beyond = re.search(cell + rb"([" + bytes([65 + widest]) + rb"-Z])\d", buf)
        if beyond is None:
            break
        widest = _column_number(beyond.group(1))
    if not plain_cells:  # cells without a reference: count them exactly
        implicit += n_cells - len(_REF_CELL.findall(buf))
    return rows, widest, implicit


# ---------------------------------------------------------------- cells over the limit


@dataclass(frozen=True)
class LongCell:
    row: int  # the row number the analyst sees
    column: int  # 0-based index into the raw columns
    chars: int


@dataclass(frozen=True)
class BadlyQuoted:
    row: int  # the row number the analyst sees
    column: int  # 0-based index into the raw columns


def _column_name(columns: list[str], index: int) -> str:
    return (columns[index] if index < len(columns) else "") or column_label(index)


def mark_long_cells(
    cur: duckdb.DuckDBPyConnection, cells: list[LongCell], columns: list[str], limit: int, fix_cells: str
) -> None:
    """Reject the rows whose cells the reader emptied for being over ``limit`` characters.

    ``columns`` names each raw column as rejections do (the field it maps to, else its header).
    The emptied cell's own problems (a missing amount, say) are replaced by this one.
    """
    problems = []
    for cell in cells:
        column = _column_name(columns, cell.column)
        message = (
            f"{column} has {cell.chars:,} characters; a cell may hold at most {limit:,} "
            f"(limit max_cell_chars, {_setting('max_cell_chars')}); the cell was not read"
        )
        problems.append((cell.row, column, f"({cell.chars:,} characters)", "CELL_TOO_LONG", message))
    _mark_cells(cur, problems, fix_cells)


def mark_badly_quoted(
    cur: duckdb.DuckDBPyConnection, cells: list[BadlyQuoted], columns: list[str], fix_cells: str
) -> None:
    """Reject the rows whose CSV cells go on after their closing quote ("12"34): read as the file
    stands, such a value is not what the analyst typed (the reader drops a character of it)."""
    problems = []
    for cell in cells:
        column = _column_name(columns, cell.column)
        message = (
            f"{column} is badly quoted: text follows the closing quote. Inside a quoted value a quote is "
            'written twice ("12""34"); the cell was not read'
        )
        problems.append((cell.row, column, "(badly quoted)", "BAD_QUOTES", message))
    _mark_cells(cur, problems, fix_cells)


def mark_error_cells(
    cur: duckdb.DuckDBPyConnection, cells: list[tuple[int, int, str]], columns: dict[int, str], fix_cells: str
) -> None:
    """Reject the rows whose cells in ``columns`` (index -> name: the columns a field is read
    from) show an Excel error: the workbook reader reads such a cell as empty, which a field
    with a default (spread_pips, value_date) would take for "not given"."""
    problems = [
        (row, columns[column], error, "EXCEL_ERROR",
         f"{columns[column]} shows Excel's error {error} (its formula failed); the cell was not read")
        for row, column, error in cells
        if column in columns
    ]  # fmt: skip
    _mark_cells(cur, problems, fix_cells)


def _mark_cells(cur: duckdb.DuckDBPyConnection, problems: list[tuple[int, str, str, str, str]], fix_cells: str) -> None:
    """Reject rows for what the reader found wrong in single cells: (row, column, value shown,
    code, message). The cell's own problems are replaced by this one."""
    if not problems:
        return
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE _fx_cells (src_row BIGINT, col VARCHAR, value VARCHAR, code VARCHAR, message VARCHAR)"
    )
    cur.executemany("INSERT INTO _fx_cells VALUES (?, ?, ?, ?, ?)", problems)  # a handful of rows
    try:
        cur.execute(f"""
        UPDATE checked_data c SET is_blank = false, is_total = false,
            errors = list_concat(
                list_filter(c.errors, lambda e: e.code <> 'TOTAL_ROW' AND NOT list_contains(l.cols, e.col)), l.problems),
            fix_cells = coalesce(c.fix_cells, {fix_cells})
        FROM (SELECT src_row, list(col) AS cols,
                     list(struct_pack(col := col, value := value, code := code, message := message)) AS problems
              FROM _fx_cells GROUP BY src_row) l
        WHERE c.src_row = l.src_row
        """)
    finally:
        cur.execute("DROP TABLE IF EXISTS _fx_cells")
