"""Files -> a DuckDB temp table ``raw(src_row, c0, c1, ...)`` of text cells.

Every cell is read as text so identifiers keep their leading zeros. ``src_row`` is the row
number the analyst sees: the Excel row for workbooks, the CSV line for text files.
CSV is parsed by DuckDB itself (parallel, no Python per row); workbooks by python-calamine.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import mmap
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fxbatch.errors import UnusableFileError
from fxbatch.ingest.layout import column_label, find_header_row, header_score, known_headers
from fxbatch.ingest.limits import (
    BadlyQuoted,
    Limits,
    LongCell,
    check_cells,
    check_file_size,
    check_rows,
    check_workbook,
)

DELIMITERS = (",", ";", "\t", "|")
_SNIFF_BYTES = 256 * 1024
_XLSX_MAGIC = b"PK\x03\x04"
_XLS_MAGIC = b"\xd0\xcf\x11\xe0"
_PARQUET_MAGIC = b"PAR1"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
WORKBOOK_SUFFIXES = {".xlsx", ".xlsm", ".xlsb", ".xls", ".ods"}


@dataclass
class RawFile:
    """What a reader found: header cells, and the ``raw`` table it filled."""

    kind: str  # csv | xlsx | parquet
    headers: list[str]
    header_row: int  # row number of the header as the analyst sees it (1 for parquet)
    blank_lines: int  # empty physical lines below the header that the reader skipped
    sheet: str | None = None
    delimiter: str | None = None
    path: Path | None = None  # what DuckDB reads (a temporary UTF-8 copy for other encodings)
    name: str = ""  # the file's own name, for messages
    source_encoding: str = "utf-8"  # the file's text encoding: utf-8, utf-16 or cp1252
    skip_records: int = 0  # CSV records up to and including the header (more than its line when titles span lines)
    # CSV fast path: the records the view must yield for its line numbers to be right.
    expected_records: int | None = None
    max_line_bytes: int = 0  # CSV: the longest physical line (DuckDB needs to know past 2 MB)
    long_cells: list[LongCell] = field(default_factory=list)  # emptied by the reader: their rows are rejected
    badly_quoted: list[BadlyQuoted] = field(default_factory=list)  # CSV cells read altered: their rows are rejected
    # XLSX cells showing an Excel error (#N/A), read as empty: (row, column, error); their rows are rejected
    error_cells: list[tuple[int, int, str]] = field(default_factory=list)


def detect_kind(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            head = fh.read(8192)
    except OSError as exc:
        raise UnusableFileError.unreadable(path.name, exc) from exc
    suffix = path.suffix.lower()
    if not head.strip(b"\xef\xbb\xbf \t\r\n"):
        raise UnusableFileError(f"{path.name} is empty: expected a header row and trade rows.", code="EMPTY_FILE")
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.startswith(_XLSX_MAGIC) or head.startswith(_XLS_MAGIC):
        return "xlsx"
    if suffix in WORKBOOK_SUFFIXES or suffix == ".parquet":
        raise UnusableFileError(
            f"{path.name} is named {suffix} but is not a valid {suffix[1:].upper()} file "
            f"(it may be damaged, or another format renamed): found {_describe(head)}.",
            code="NOT_A_SPREADSHEET",
        )
    if b"\x00" in head and not head.startswith(_UTF16_BOMS):
        raise UnusableFileError(
            f"{path.name} is not a spreadsheet: expected CSV text, XLSX or Parquet, found {_describe(head)}.",
            code="NOT_A_SPREADSHEET",
        )
    return "csv"


def _describe(head: bytes) -> str:
    """What the first bytes of a file look like, for messages."""
    lower = head[:1024].lower()
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if b"<html" in lower or b"<table" in lower or b"<!doctype html" in lower:
        return "an HTML page (a web export saved under a spreadsheet name)"
    if b"\x00" in head:
        return "binary data"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"plain text starting {first[:60]!r}"


def read_into(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    sheet: str | None = None,
    search_rows: int = 30,
    column_map: Mapping[str, str] | None = None,
    limits: Limits | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> RawFile:
    """Read ``path`` into temp table or view ``raw`` on ``con`` and say what was found.

    Headers named in ``column_map`` count towards recognising the header row. A file over
    one of ``limits`` is refused before it is read (a cell over the limit only rejects its row).
    ``meanwhile`` runs on a thread while the file is parsed (DuckDB's CSV reader and
    python-calamine hold no GIL), and has finished when this returns.
    """
    limits = limits or Limits()
    drop_raw(con)
    check_file_size(path, limits)
    kind = detect_kind(path)
    known = known_headers(column_map)
    if kind == "xlsx":
        scan = check_workbook(path, sheet, limits)  # holds the GIL: before ``meanwhile``
        with _alongside(meanwhile):
            raw = _read_workbook(con, path, sheet, search_rows, known, limits, scan.longest_shared)
        raw.error_cells = [(row, column, error) for row, column, error in scan.error_cells if row >= raw.header_row + 1]
        return raw
    if sheet and kind != "parquet":
        raise UnusableFileError(
            f"A sheet ({sheet!r}) was named but {path.name} is a CSV file, which has no sheets: name no sheet "
            "(CLI --sheet, API sheet) for it.",
            code="BAD_OPTION",
        )
    with _alongside(meanwhile):
        if kind == "parquet":
            return _read_parquet(con, path, known, limits)
        return _read_csv(con, path, search_rows, known, limits)


@contextmanager
def _alongside(work: Callable[[], None] | None) -> Iterator[None]:
    """Run ``work`` on a thread for the duration of the block (joined at its end)."""
    if work is None:
        yield
        return
    thread = threading.Thread(target=work, name="fxbatch-alongside", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def _no_header(name: str, rows: Sequence[Sequence[object]], search_rows: int) -> UnusableFileError:
    first = next((r for r in rows if any(str(c).strip() for c in r if c is not None)), None)
    cells = [str(c) if c is not None else "" for c in first or []]
    while cells and not cells[-1].strip():
        cells.pop()
    seen = f"the first non-blank row is {cells[:12]}" if first else "no non-blank rows"
    error = UnusableFileError(
        f"No header row found in the first {search_rows} rows of {name}: expected column names such "
        "as client_cif, account_number, currency_pair, side, amount (or the legacy Client CIF, "
        f"Amount ZAR, Account Number, Spread, CurPair); {seen}."
        + (" If that row is the header, map its columns to the fields (--map in the CLI)." if first else ""),
        code="NO_HEADER",
    )
    error.headers = [c.strip() for c in cells if c.strip()] or None  # what a column mapping could name
    return error


# ---------------------------------------------------------------- CSV


def _text_encoding(head: bytes, whole_file: bool) -> str:
    """``utf-8`` (with or without BOM), ``utf-16`` (Excel's "Unicode text") or ``cp1252``.

    Text that is not UTF-8 is taken as Windows-1252, which Excel on Windows writes for "CSV"
    (a superset of Latin-1 for printable text: it has the euro sign and curly quotes).
    """
    if head.startswith(_UTF16_BOMS):
        return "utf-16"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if whole_file or exc.reason != "unexpected end of data":
            return "cp1252"
    return "utf-8"


def read_text(path: Path) -> str:
    """A whole text file (a fixes file) decoded by the trade files' rule: UTF-8 or UTF-16 where it
    is, else Windows-1252 (Excel's "CSV"); a file mixing two encodings refused; bare-CR line ends made LF."""
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES + 1)
    return _decode_file(path, _text_encoding(head[:_SNIFF_BYTES], len(head) <= _SNIFF_BYTES))[0]


def _decode_head(head: bytes) -> str:
    """The sniff window as text; a character cut in two by the window's end is dropped."""
    try:
        return head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return head[: exc.start].decode("utf-8-sig")


_BARE_CR = re.compile(r"\r(?!\n)")
_BARE_CR_BYTES = re.compile(rb"\r(?!\n)")


def _bare_cr(head: bytes) -> bool:
    """The sniff window holds a CR that is not part of a CRLF: CR-only line ends (Excel for Mac's
    "CSV (Macintosh)"), CR CR LF, or one stray CR among LF lines. A spreadsheet ends a line there;
    so does the decode path (``_decode_file``), which the fast path's sniff cannot (Python's csv
    reader, given the text split at LF only, refuses a CR inside an unquoted field). A CR at the
    window's very end may be half of a CRLF cut in two: not counted."""
    return b"\r" in head and _BARE_CR_BYTES.search(head, 0, len(head) - 1) is not None


def _decode_file(path: Path, encoding: str) -> tuple[str, str]:
    """The whole file as text, without BOM, with bare-CR line ends made LF, and its encoding.

    One encoding per file: UTF-8 when it all decodes, else Windows-1252, unless the file also
    holds UTF-8 characters (rows pasted from two sources): that is refused, naming the line.
    """
    data = path.read_bytes()
    if encoding == "utf-16":
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise UnusableFileError(
                f"{path.name} starts like UTF-16 text but is not valid UTF-16; save it again as CSV UTF-8.",
                code="UNREADABLE_FILE",
            ) from None
        nul = text.find("\x00")
        if nul >= 0:
            raise _nul_error(path.name, text.count("\n", 0, nul) + 1)
    else:
        try:
            text = data.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError as exc:
            _refuse_mixed(path.name, data, exc)
            encoding = "cp1252"
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                text = data.decode("latin-1")  # the five bytes Windows-1252 leaves undefined
    text = text.removeprefix("\ufeff")
    if "\r" in text and _BARE_CR.search(text):
        # A CR that is not part of a CRLF ends a line, as a spreadsheet reads it: CR-only files
        # (Excel for Mac), and CR CR LF (a script that wrote CRLF in text mode: a blank line
        # after each row, as Excel shows it).
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, encoding


def _line_of(data: bytes, offset: int) -> int:
    """1-based line of byte ``offset`` (a file with bare-CR line ends counts CRs)."""
    breaks = data.count(b"\n", 0, offset)
    return (breaks or data.count(b"\r", 0, offset)) + 1


def _refuse_mixed(name: str, data: bytes, exc: UnicodeDecodeError) -> None:
    """Refuse text that is partly UTF-8 and partly another encoding (decoding it as one garbles the other)."""
    lenient = data.decode("utf-8", errors="replace")
    if lenient.replace("\ufffd", "").isascii():
        return  # no UTF-8 character anywhere: the file is Windows-1252 throughout
    good = next(i for i, ch in enumerate(lenient) if ord(ch) > 127 and ch != "\ufffd")
    bad_byte = data[exc.start]
    raise UnusableFileError(
        f"{name} mixes text encodings: line {_line_of(data, exc.start)} is not UTF-8 (byte 0x{bad_byte:02X}, "
        f"{bytes([bad_byte]).decode('cp1252', errors='replace')!r} in Windows-1252) while line "
        f"{lenient.count(chr(10), 0, good) + 1} is UTF-8 ({lenient[good]!r}); read as one encoding, the other's names would "
        "be garbled. Save the whole file again in one encoding (CSV UTF-8) and load it again.",
        code="MIXED_ENCODING",
    )


def _nul_error(name: str, line: int) -> UnusableFileError:
    return UnusableFileError(
        f"{name} has a NUL byte (character code 0) on line {line}: a CSV file holds text only. The file may be "
        "damaged, or binary data was pasted into it; remove the character and load it again.",
        code="NUL_BYTE",
    )


def _refuse_nul(path: Path) -> None:
    """A NUL byte anywhere (one memchr pass over the mapped file; UTF-16 is checked once decoded)."""
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            at = mm.find(b"\x00")
            if at >= 0:
                raise _nul_error(path.name, _line_of(mm[:at], at))


def _allow_long_fields() -> None:
    """Python's csv module refuses fields over 128 KiB; the cell limit is ours to apply, per row."""
    if csv.field_size_limit() < 1 << 30:
        csv.field_size_limit(1 << 30)


def _blank_long_cells(text: str, delim: str, header_line: int, limit: int) -> tuple[str, list[LongCell]]:
    """Rewrite the records with every cell over ``limit`` characters emptied, and say which.

    Each record keeps its physical lines (a quoted line break is written back quoted), so
    row numbers stay those of the file. Only runs when some line is longer than the limit.
    """
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delim, lineterminator="\n")
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    long_cells: list[LongCell] = []
    previous = 0
    for row in reader:
        start = previous + 1
        previous = reader.line_num
        for i, value in enumerate(row):
            if len(value) > limit:
                if start > header_line + 1:
                    long_cells.append(LongCell(start, i, len(value)))
                row[i] = ""
        writer.writerow(row)
    return out.getvalue(), long_cells


def _blank_above(text: str, line: int) -> str:
    """Empty the ``line`` lines above the header, keeping their count (row numbers stay right)."""
    start = 0
    for _ in range(line):
        start = text.index("\n", start) + 1
    return "\n" * line + text[start:]


def _write_temp(text: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="fxbatch-", suffix=".csv")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return Path(name)


def _head_records(text: str, delim: str, limit: int) -> tuple[list[list[str]], list[int]]:
    """First ``limit`` records and the 0-based physical line each starts on."""
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    rows: list[list[str]] = []
    starts: list[int] = []
    previous = 0
    for row in reader:
        rows.append(row)
        starts.append(previous)
        previous = reader.line_num
        if len(rows) >= limit:
            break
    return rows, starts


@dataclass(frozen=True)
class _Header:
    delimiter: str
    cells: list[str]
    line: int  # 0-based physical line the header starts on (row numbers count lines)
    records: int  # records up to and including the header (DuckDB's skip counts records)


def _sniff(text: str, search_rows: int, name: str, known: Mapping[str, str]) -> _Header:
    """Pick the delimiter under which a header row is best recognised."""
    best: tuple[int, _Header] | None = None
    for delim in DELIMITERS:
        try:
            rows, starts = _head_records(text, delim, search_rows)
        except csv.Error:
            continue
        idx = find_header_row(rows, known)
        if idx is None:
            continue
        score = header_score(rows[idx], known)
        if best is None or score > best[0]:
            best = (score, _Header(delim, rows[idx], starts[idx], idx + 1))
    if best is None:
        try:
            rows, _ = _head_records(text, ",", search_rows)
        except csv.Error:
            rows = [[line] for line in text.splitlines()[:search_rows]]
        raise _no_header(name, rows, search_rows)
    return best[1]


@dataclass(frozen=True)
class _LineScan:
    lines: int  # physical lines
    empty: int  # physical lines with nothing on them
    max_fields: int  # most delimiters on one line + 1 (quoted delimiters included: an upper bound)
    longest: int  # bytes on the longest line: no cell is longer
    # Lines holding a CR or LF after the split: line ends DuckDB reads otherwise than a spreadsheet
    # (CR CR LF from a script that wrote CRLF in text mode; a bare CR between CRLF lines).
    odd_breaks: int = 0
    # Lines with a quote between two characters that are neither the delimiter nor a quote: a
    # value that goes on after its closing quote ("12"34), which DuckDB's lenient reader cuts.
    stray_quotes: int = 0


_DUCKDB_LINE = 2_000_000  # DuckDB's default max_line_size


def _scan_lines(con: duckdb.DuckDBPyConnection, path: Path, delim: str) -> _LineScan:
    """One parallel pass over the file's lines (raises duckdb.Error when it is not UTF-8).

    The widest line decides how many columns are read, so that values far to the right of
    the header are reported and never silently cut off by the CSV reader.
    """
    size = max(path.stat().st_size + 2, _DUCKDB_LINE)
    row = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE l IS NULL), "
        f"coalesce(max(strlen(l) - strlen(replace(l, {_sql_str(delim)}, ''))), 0), coalesce(max(strlen(l)), 0), "
        "count(*) FILTER (WHERE contains(l, chr(13)) OR contains(l, chr(10))), "
        f"count(*) FILTER (WHERE CASE WHEN contains(l, '\"') THEN regexp_matches(l, {_sql_str(_stray_quote(delim))}) "
        "ELSE false END) "
        f"FROM read_csv({_sql_str(str(path))}, columns={{'l': 'VARCHAR'}}, delim=chr(1), quote='', escape='', "
        f"header=false, auto_detect=false, strict_mode=false, max_line_size={size})"
    ).fetchall()[0]
    return _LineScan(int(row[0]), int(row[1]), int(row[2]) + 1, int(row[3]), int(row[4]), int(row[5]))


def _stray_quote(delim: str) -> str:
    """RE2 pattern of a quote with, on each side, a character that is neither ``delim`` nor a quote."""
    d = "\\" + delim if delim in "\\]^-" else delim
    return f'[^{d}"]"[^{d}"]'


def _badly_quoted(con: duckdb.DuckDBPyConnection, raw: RawFile) -> list[BadlyQuoted]:
    """The cells of ``raw`` whose value goes on after its closing quote ("12"34), by a strict
    read of the file (only done when the line scan saw such a quote): DuckDB's lenient reader,
    which the load uses, drops a character of them, so their rows are rejected instead."""
    con.execute("DROP TABLE IF EXISTS _fx_rejects; DROP TABLE IF EXISTS _fx_rejects_scan")
    try:
        con.execute(f"SELECT count(*) FROM {_csv_source(raw, parallel=True, strict=True)}").fetchall()
        found = con.execute(
            "SELECT DISTINCT line, column_idx FROM _fx_rejects WHERE error_type = 'UNQUOTED VALUE' ORDER BY line"
        ).fetchall()
    except duckdb.Error:
        return []  # the lenient read reports what is wrong with the file
    finally:
        con.execute("DROP TABLE IF EXISTS _fx_rejects; DROP TABLE IF EXISTS _fx_rejects_scan")
    return [BadlyQuoted(int(line), int(column) - 1) for line, column in found]


def _check_scan(name: str, scan: _LineScan, limits: Limits) -> None:
    check_rows(name, scan.lines, limits)
    check_cells(name, scan.lines, scan.max_fields, limits)


def _is_encoding_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "unicode" in text or "utf-8" in text or "utf8" in text or "encoded" in text


def _read_csv(
    con: duckdb.DuckDBPyConnection, path: Path, search_rows: int, known: Mapping[str, str], limits: Limits
) -> RawFile:
    """Fast path: a view that parses the file as the validation query runs (one pass).

    It assumes one record per line below the header; ``expected_records`` lets the caller
    verify that, and ``csv_exact`` is the path for files where it does not hold.

    Some files are first rewritten to a temporary UTF-8 copy, in bulk, and read exactly:
    text that is not UTF-8 (DuckDB reads UTF-8, and its Latin-1 garbles Windows-1252's euro
    sign and curly quotes), bare-CR line ends (which DuckDB does not number), title rows
    whose quoted cells span lines (DuckDB's ``skip`` then miscounts; the copy blanks them),
    and lines longer than the cell limit (the copy empties the cells over it).
    """
    _allow_long_fields()
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES + 1)
    whole = len(head) <= _SNIFF_BYTES
    head = head[:_SNIFF_BYTES]
    encoding = _text_encoding(head, whole)
    if encoding != "utf-16":
        _refuse_nul(path)
    if encoding == "utf-8" and not _bare_cr(head):
        header = _sniff(_decode_head(head), search_rows, path.name, known)
        if header.records == header.line + 1:
            try:
                scan = _scan_lines(con, path, header.delimiter)
            except duckdb.Error as exc:
                if not _is_encoding_error(exc):
                    raise csv_read_error(path.name, header.delimiter, exc) from exc
                # UTF-8 at the top, something else further down: decided over the whole file below
            else:
                _check_scan(path.name, scan, limits)
                if scan.longest <= limits.max_cell_chars and not scan.odd_breaks:
                    raw = _csv_raw(path, path.name, header, scan, encoding)
                    if scan.stray_quotes:
                        raw.badly_quoted = _badly_quoted(con, raw)
                    if scan.empty:
                        return csv_exact(con, raw)
                    raw.expected_records = scan.lines - (header.line + 1)
                    con.execute(
                        "CREATE OR REPLACE TEMP VIEW raw AS SELECT NULL::BIGINT AS src_row, * "
                        f"FROM {_csv_source(raw, parallel=True)}"
                    )
                    return raw
    text, encoding = _decode_file(path, encoding)
    if not text.strip():
        raise UnusableFileError(f"{path.name} is empty: expected a header row and trade rows.", code="EMPTY_FILE")
    header = _sniff(text[:_SNIFF_BYTES], search_rows, path.name, known)
    if header.records != header.line + 1:
        text = _blank_above(text, header.line)
        header = _sniff(text[:_SNIFF_BYTES], search_rows, path.name, known)
    source = _write_temp(text)
    try:
        scan = _scan_lines(con, source, header.delimiter)
        _check_scan(path.name, scan, limits)
        long_cells: list[LongCell] = []
        if scan.longest > limits.max_cell_chars:
            text, long_cells = _blank_long_cells(text, header.delimiter, header.line, limits.max_cell_chars)
            source.unlink(missing_ok=True)
            source = _write_temp(text)
            del text
            scan = _scan_lines(con, source, header.delimiter)
        raw = _csv_raw(source, path.name, header, scan, encoding)
        raw.long_cells = long_cells
        if scan.stray_quotes:
            raw.badly_quoted = _badly_quoted(con, raw)
        return csv_exact(con, raw)
    finally:
        source.unlink(missing_ok=True)  # csv_exact has copied the rows into a table


def _csv_raw(source: Path, name: str, header: _Header, scan: _LineScan, encoding: str) -> RawFile:
    width = max(len(header.cells), scan.max_fields)
    cells = [h.strip() for h in header.cells]
    return RawFile(
        "csv",
        cells + [""] * (width - len(cells)),
        header.line + 1,
        0,
        delimiter=header.delimiter,
        path=source,
        name=name,
        source_encoding=encoding,
        skip_records=header.records,
        max_line_bytes=scan.longest,
    )


def _csv_source(raw: RawFile, *, parallel: bool, strict: bool = False) -> str:
    """The file's records as read for the load; ``strict``: read strictly, the records in error
    skipped and listed in the temporary table _fx_rejects (see ``_badly_quoted``)."""
    assert raw.path is not None and raw.delimiter is not None
    columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(raw.headers)))
    mode = (
        "strict_mode=true, store_rejects=true, rejects_table='_fx_rejects', rejects_scan='_fx_rejects_scan'"
        if strict
        else "strict_mode=false"
    )
    return (
        f"read_csv({_sql_str(str(raw.path))}, header=false, auto_detect=false, all_varchar=true, "
        f"delim={_sql_str(raw.delimiter)}, quote='\"', escape='\"', skip={raw.skip_records}, null_padding=true, "
        f"{mode}, encoding='utf-8', parallel={str(parallel).lower()}, "
        f"max_line_size={max(raw.max_line_bytes + 2, _DUCKDB_LINE)}, "
        f"columns={{{columns}}})"
    )


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def csv_exact(con: duckdb.DuckDBPyConnection, raw: RawFile) -> RawFile:
    """Exact path: materialise the records, then number them by their physical lines.

    Handles blank lines between records and quoted values that span lines; reads more
    columns when a record spanning lines turns out wider than any single line.
    """
    assert raw.path is not None and raw.delimiter is not None
    drop_raw(con)
    raw.expected_records = None
    sql = "CREATE OR REPLACE TEMP TABLE raw_csv AS SELECT * FROM {src}"
    try:
        try:
            con.execute(sql.format(src=_csv_source(raw, parallel=True)))
        except duckdb.Error as exc:
            if "parallel" not in str(exc):
                raise
            con.execute(sql.format(src=_csv_source(raw, parallel=False)))
    except duckdb.Error as exc:
        raise csv_error(raw, exc) from exc
    records = con.execute("SELECT count(*) FROM raw_csv").fetchall()[0][0]
    line_numbers, raw.blank_lines, widest = _record_line_numbers(raw, records)
    if widest > len(raw.headers):
        raw.headers += [""] * (widest - len(raw.headers))
        return csv_exact(con, raw)
    con.execute("CREATE OR REPLACE TEMP TABLE raw_lines (src_row BIGINT)")
    con.register("_fx_lines", pa.table({"src_row": pa.array(line_numbers, type=pa.int64())}))
    try:
        con.execute("INSERT INTO raw_lines SELECT src_row FROM _fx_lines")
    finally:
        con.unregister("_fx_lines")
    cols = ", ".join(f"c{i}" for i in range(len(raw.headers)))
    con.execute(f"CREATE OR REPLACE TEMP VIEW raw AS SELECT l.src_row, {cols} FROM raw_csv POSITIONAL JOIN raw_lines l")
    return raw


def csv_error(raw: RawFile, exc: Exception) -> UnusableFileError:
    name = raw.name or (raw.path.name if raw.path else "the file")
    return csv_read_error(name, raw.delimiter or ",", exc)


_DUCKDB_CSV_LINE = re.compile(r"CSV Error on Line: (\d+)")


def csv_read_error(name: str, delimiter: str, exc: Exception) -> UnusableFileError:
    """A CSV reader error in the analyst's words: the line, and what was wrong on it."""
    text = str(exc)
    found = _DUCKDB_CSV_LINE.search(text)
    if found is None:
        return UnusableFileError(
            f"{name} could not be read as {delimiter!r}-separated text: {text.splitlines()[0]}", code="UNREADABLE_FILE"
        )
    # DuckDB's message: the line, "Original Line: ...", then the reason, then its own options.
    lines = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
    reason = next((ln for ln in lines if not ln.startswith(("Original Line", "Possible Solution"))), "")
    return UnusableFileError(
        f"{name} could not be read as {delimiter!r}-separated text: line {found.group(1)}: "
        f"{reason.rstrip('.') or 'the line could not be parsed'}.",
        code="CSV_PARSE_ERROR",
    )


def drop_raw(con: duckdb.DuckDBPyConnection) -> None:
    """Drop what ``read_into`` created (views first: they depend on the tables)."""
    for view in ("raw",):
        con.execute(f"DROP VIEW IF EXISTS {view}")
    for table in ("raw_data", "raw_csv", "raw_lines"):
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _record_line_numbers(raw: RawFile, records: int) -> tuple[np.ndarray, int, int]:
    """1-based line number of every record DuckDB returned, the empty lines it skipped, and
    the most fields in one record (0 when no record spans lines: the line scan bounds it).

    Fast path: a numpy scan for line breaks; exact when no quoted value spans lines, which
    is checked by comparing counts. Otherwise Python's csv module counts records.
    """
    assert raw.path is not None and raw.delimiter is not None
    header_line = raw.header_row - 1
    buf = np.fromfile(raw.path, dtype=np.uint8)
    breaks = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(buf)]))
    if starts[-1] >= len(buf):  # file ends with a line break: no line after it
        starts, ends = starts[:-1], ends[:-1]
    lengths = ends - starts
    has_cr = np.zeros(len(lengths), dtype=bool)
    nonzero = lengths > 0
    has_cr[nonzero] = buf[ends[nonzero] - 1] == 13
    empty = (lengths - has_cr) == 0
    data_lines = np.arange(header_line + 1, len(lengths))
    data_empty = empty[header_line + 1 :]
    candidates = data_lines[~data_empty] + 1
    if len(candidates) == records:
        if len(candidates):  # the last line may open a quote the file ends in
            _refuse_open_quote(raw, buf[starts[candidates[-1] - 1] :].tobytes(), int(candidates[-1]), len(lengths))
        return candidates, int(data_empty.sum()), 0
    # Quoted line breaks: count records the slow, exact way.
    numbers: list[int] = []
    blank = 0
    widest = 0
    _allow_long_fields()
    with raw.path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=raw.delimiter)
        previous = 0
        for row in reader:
            start = previous + 1
            previous = reader.line_num
            if start <= header_line + 1:
                continue
            if not row:
                blank += 1
                continue
            numbers.append(start)
            widest = max(widest, len(row))
    if numbers:
        _refuse_open_quote(raw, buf[starts[numbers[-1] - 1] :].tobytes(), numbers[-1], previous)
    if len(numbers) != records:
        raise UnusableFileError(
            f"{raw.name}: could not line up {records} records with their line numbers; check for unbalanced quotes.",
            code="UNREADABLE_FILE",
        )
    return np.asarray(numbers, dtype=np.int64), blank, widest


def refuse_open_quote_at_end(raw: RawFile) -> None:
    """``_refuse_open_quote`` for the last line of a file the fast path read as one record per line
    (the caller has checked that: only its last line can open a quote that never closes); the file's
    end is read, not the whole file."""
    assert raw.path is not None and raw.expected_records is not None
    with raw.path.open("rb") as fh:
        size = fh.seek(0, io.SEEK_END)
        fh.seek(max(0, size - raw.max_line_bytes - 4))
        tail = fh.read()
    body = tail.rstrip(b"\r\n")
    last = body[body.rfind(b"\n") + 1 :]
    line = raw.header_row + raw.expected_records  # one record per line below the header, none empty
    _refuse_open_quote(raw, last, line, line)


def _refuse_open_quote(raw: RawFile, tail: bytes, line: int, last_line: int) -> None:
    """``tail``, the file's last record (from line ``line`` to the end, line ``last_line``): refuse it
    if a quote in it never closes (a strict parse of that record alone says so), rather than load
    what follows the quote as one cell, or a value cut short by the end of the file."""
    assert raw.delimiter is not None
    if b'"' not in tail:
        return
    text = tail.decode("utf-8", errors="replace")
    try:
        for _ in csv.reader(io.StringIO(text, newline=""), delimiter=raw.delimiter, strict=True):
            pass
    except csv.Error as exc:
        if "unexpected end of data" not in str(exc):
            return
        cells = next(csv.reader(io.StringIO(text, newline=""), delimiter=raw.delimiter), [""])
        column = len(cells) - 1
        header = raw.headers[column] if column < len(raw.headers) else ""
        where = f"column {header}" if header else column_label(column)
        lost = (
            f"so lines {line}-{last_line} would be one cell" if last_line > line
            else "before the file ends (was it cut short?), so the value would load as something nobody typed"
        )  # fmt: skip
        raise UnusableFileError(
            f"{raw.name} could not be read as {raw.delimiter!r}-separated text: line {line}, {where}: a quoted "
            f'value opens there and is never closed, {lost}. Close the quote (") or remove it, and load the file '
            "again.",
            code="CSV_PARSE_ERROR",
        ) from None


# ---------------------------------------------------------------- workbooks


def _cell_text(value: object) -> str | None:
    """A workbook cell as the text an analyst typed: ``123456789.0`` -> ``'123456789'``."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        # Excel keeps 15 significant digits and shows no more: a formula's 0.30000000000000004
        # is the 0.3 the analyst sees, and a 16-digit "number" has already lost digits.
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".15g")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta | time):
        return str(value)
    return str(value)


_CHUNK_ROWS = 16_384
_CHUNK_CHARS = 32 * 1024 * 1024  # text of one chunk of rows held as Python strings, at most


def _read_workbook(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    sheet: str | None,
    search_rows: int,
    known: Mapping[str, str],
    limits: Limits,
    longest_shared: int | None = None,
) -> RawFile:
    """A sheet into ``raw_data``, in chunks of rows (Python holds one chunk's cells at a time).

    A cell may repeat a shared string any number of times, so a chunk's text is bounded by
    ``longest_shared`` when the sheet's scan gave it, else by counting every row's characters.
    """
    from python_calamine import CalamineWorkbook

    def damaged(exc: Exception) -> UnusableFileError:
        return UnusableFileError(
            f"{path.name} could not be opened as a workbook (expected XLSX, XLS or ODS; it may be damaged "
            f"or only partly downloaded): {exc}",
            code="UNREADABLE_FILE",
        )

    try:
        book = CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine raises its own error types per format
        raise damaged(exc) from exc
    names = list(book.sheet_names)
    if not names:
        raise UnusableFileError(f"{path.name} has no sheets.", code="EMPTY_FILE")
    if sheet is not None and sheet not in names:
        raise UnusableFileError(
            f"{path.name} has no sheet named {sheet!r}; its sheets are: {', '.join(names)}.",
            code="NO_SUCH_SHEET",
        )
    sheet_name = sheet or names[0]
    try:
        ws = book.get_sheet_by_name(sheet_name)  # the sheet's XML is read here (a cut one fails)
    except Exception as exc:
        raise damaged(exc) from exc
    where = f"sheet {sheet_name!r} of {path.name}"
    check_rows(where, ws.total_height, limits)
    check_cells(where, ws.total_height, ws.total_width, limits)
    # iter_rows starts at row 1 but at the used area's first column: pad to column A.
    left = [""] * (ws.start[1] if ws.start else 0)
    rows = iter(ws.iter_rows())
    top = [left + r for r in itertools.islice(rows, search_rows)]
    header_idx = find_header_row(top, known)
    if header_idx is None:
        if not any(any(c not in (None, "") for c in r) for r in top) and ws.height == 0:
            raise UnusableFileError(
                f"Sheet {sheet_name!r} of {path.name} is empty: expected a header row and trade rows.",
                code="EMPTY_FILE",
            )
        raise _no_header(where, top, search_rows)
    headers = [(_cell_text(c) or "").strip() for c in top[header_idx]]
    width = max(len(headers), ws.total_width)
    data = itertools.chain(top[header_idx + 1 :], (left + r for r in rows) if left else rows)
    long_cells: list[LongCell] = []
    first_row = header_idx + 2
    created = False
    chunk: list[Sequence[object]] = []
    chars = 0
    count_chars = longest_shared is None
    per_row = width * max(longest_shared or 0, 1)
    chunk_rows = _CHUNK_ROWS if count_chars else max(16, min(_CHUNK_ROWS, _CHUNK_CHARS // per_row))
    for row in data:
        chunk.append(row)
        if count_chars:
            chars += sum(len(v) for v in row if type(v) is str)
        if len(chunk) >= chunk_rows or chars >= _CHUNK_CHARS:
            _sheet_chunk(con, chunk, first_row, width, limits.max_cell_chars, long_cells, created)
            first_row, created, chunk, chars = first_row + len(chunk), True, [], 0
    if chunk or not created:
        _sheet_chunk(con, chunk, first_row, width, limits.max_cell_chars, long_cells, created)
    con.execute("CREATE OR REPLACE TEMP VIEW raw AS SELECT * FROM raw_data")
    raw = RawFile("xlsx", headers + [""] * (width - len(headers)), header_idx + 1, 0, sheet=sheet_name)
    raw.long_cells = long_cells
    return raw


def _sheet_chunk(
    con: duckdb.DuckDBPyConnection,
    rows: list[Sequence[object]],
    first_row: int,
    width: int,
    max_chars: int,
    long_cells: list[LongCell],
    append: bool,
) -> None:
    """Rows of a sheet into ``raw_data``, as text; cells over ``max_chars`` emptied and noted."""
    columns: dict[str, pa.Array] = {"src_row": pa.array(np.arange(first_row, first_row + len(rows)), type=pa.int64())}
    for i in range(width):
        column = pa.array([_cell_text(r[i]) if i < len(r) else None for r in rows], type=pa.string())
        lengths = pc.utf8_length(column)
        if len(column) and (pc.max(lengths).as_py() or 0) > max_chars:
            over = pc.greater(lengths, max_chars).fill_null(False)
            for at in np.flatnonzero(over.to_numpy(zero_copy_only=False)):
                long_cells.append(LongCell(first_row + int(at), i, int(lengths[int(at)].as_py())))
            column = pc.if_else(over, pa.scalar(None, pa.string()), column)
        columns[f"c{i}"] = column
    con.register("_fx_sheet", pa.table(columns))
    try:
        if append:
            con.execute("INSERT INTO raw_data SELECT * FROM _fx_sheet")
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE raw_data AS SELECT * FROM _fx_sheet")
    finally:
        con.unregister("_fx_sheet")


# ---------------------------------------------------------------- parquet


def _parquet_text(name: str, sql_type: str, index: int) -> str:
    """A Parquet column as text; floating point as the 15 significant digits a sheet shows."""
    col = '"' + name.replace('"', '""') + '"'
    if sql_type == "DOUBLE":  # FLOAT casts to its own shortest text already
        return f"printf('%.15g', {col}) AS c{index}"
    return f"CAST({col} AS VARCHAR) AS c{index}"


def _read_parquet(con: duckdb.DuckDBPyConnection, path: Path, known: Mapping[str, str], limits: Limits) -> RawFile:
    try:
        rows = con.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchall()[0][0]
        check_rows(path.name, int(rows) + 1, limits)  # + the header, as a sheet counts it
        described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
        names = [str(r[0]) for r in described]
        cols = ", ".join(_parquet_text(n, str(t), i) for i, (n, t, *_) in enumerate(described))
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE raw_data AS SELECT file_row_number + 2 AS src_row, {cols} "
            "FROM read_parquet(?, file_row_number=true) ORDER BY file_row_number",
            [str(path)],
        )
        con.execute("CREATE OR REPLACE TEMP VIEW raw AS SELECT * FROM raw_data")
    except duckdb.Error as exc:
        raise UnusableFileError(
            f"{path.name} could not be read as Parquet: {str(exc).splitlines()[0]}", code="UNREADABLE_FILE"
        ) from exc
    if header_score(names, known) < 3:
        error = UnusableFileError(
            f"{path.name} has no trade columns: expected column names such as client_cif, account_number, "
            f"currency_pair, side, amount; its columns are {names[:12]}.",
            code="NO_HEADER",
        )
        error.headers = list(names)
        raise error
    return RawFile("parquet", names, 1, 0)
