"""Peak memory of loading the largest files the size limits accept, against the 2 GiB target.

Builds (once, in bench/out) a CSV at the ``max_file_mb`` and ``max_rows`` limits (UTF-8, read by
DuckDB; and Windows-1252, decoded in Python first) and an XLSX at the ``max_cells`` limit with
``max_rows`` rows, then loads each in a child process and prints its peak RSS
(``ru_maxrss`` of the child) and the ratio to 2 GiB (target <= 1.0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from fxbatch.ingest.limits import MAX_CELLS, MAX_FILE_MB, MAX_ROWS, MAX_UNZIPPED_MB, MAX_ZIP_RATIO, MB, Limits
from fxbatch.samples import make_trades

OUT = Path(__file__).resolve().parent / "out"
TARGET_MB = 2048
TRADING_DATE = "2026-11-30"
DATA_ROWS = MAX_ROWS - 1  # the header is a row too


def _padded_trades(rows: int, line_bytes: int) -> pd.DataFrame:
    """Trades whose lines average ``line_bytes`` (a reference up to its 140 characters, then notes)."""
    df = make_trades(rows, seed=3)
    df["reference"] = "Client order ref " + df["trade_id"] + " "
    df["notes"] = ""
    sample = df.head(10_000).to_csv(index=False, header=False).encode()
    pad = max(line_bytes - -(-len(sample) // 10_000), 0)  # the longest lines stay under the limit
    df["reference"] += "r" * min(pad, 100)
    df["notes"] = "n" * max(pad - 100, 0)
    return df


def largest_csv(encoding: str) -> Path:
    path = OUT / f"limits_csv_{encoding}_{MAX_ROWS}.csv"
    if not path.exists():
        line = (MAX_FILE_MB * MB - 4096) // MAX_ROWS  # just under both limits
        df = _padded_trades(DATA_ROWS, line)
        if encoding == "cp1252":
            df["reference"] = df["reference"].str.replace("Client", "Cliënt", regex=False)
        df.to_csv(path, index=False, encoding=encoding)
    return path


def largest_xlsx() -> Path:
    """``max_rows`` rows x as many text columns as ``max_cells`` allows, within ``max_unzipped_mb``:
    cells of type str, each a string of its own (unlike shared strings, which the reader borrows)."""
    columns = MAX_CELLS // MAX_ROWS
    path = OUT / f"limits_xlsx_{MAX_ROWS}x{columns}.xlsx"
    if path.exists():
        return path
    trades = make_trades(DATA_ROWS, seed=4)
    names = list(trades.columns) + [f"note_{i}" for i in range(columns - len(trades.columns))]
    letters = [_letters(i) for i in range(columns)]
    cell = '<c r="{col}{{r}}" t="str"><v>{{v[{i}]}}</v></c>'
    row_template = '<row r="{r}">' + "".join(cell.format(col=c, i=i) for i, c in enumerate(letters)) + "</row>"
    values = [trades[c].to_numpy(dtype=object) for c in trades.columns]
    notes = np.char.add("n", (np.arange(DATA_ROWS) % 997).astype(str)).astype(object)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, text in _workbook_parts().items():
            zf.writestr(name, text)
        with zf.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as fh:
            fh.write(
                b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet '
                b'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
            )
            fh.write(row_template.format(r=1, v=names).encode())
            chunk: list[str] = []
            for i in range(DATA_ROWS):
                row = [v[i] for v in values] + [notes[i]] * (columns - len(values))
                chunk.append(row_template.format(r=i + 2, v=row))
                if len(chunk) == 20_000:
                    fh.write("".join(chunk).encode())
                    chunk = []
            fh.write("".join(chunk).encode() + b"</sheetData></worksheet>")
    return path


def _letters(index: int) -> str:
    text = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        text = chr(65 + rem) + text
    return text


def _workbook_parts() -> dict[str, str]:
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    pkg = "http://schemas.openxmlformats.org/package/2006/relationships"
    return {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
            'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/'
            'workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.worksheet+xml"/></Types>'
        ),
        "_rels/.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{pkg}"><Relationship Id="rId1" '
            f'Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
            '<sheet name="Trades" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{pkg}"><Relationship Id="rId1" '
            f'Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
        ),
    }


_CHILD = """
import json, sys, time
from fxbatch import Workbench
start = time.perf_counter()
with Workbench.open(sys.argv[2]) as wb:
    r = wb.load(sys.argv[1])
print(json.dumps({"elapsed": time.perf_counter() - start, "accepted": r.accepted, "rejected": r.rejected}))
"""


def peak_of_load(path: Path, db: Path) -> dict[str, float]:
    """Load ``path`` in a child process; its peak RSS from RUSAGE_CHILDREN (a fresh one per figure)."""
    runner = (
        "import resource, subprocess, sys, json\n"
        "out = subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True).stdout\n"
        "found = json.loads(out.strip().splitlines()[-1])\n"
        "found['maxrss_mb'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps(found))\n"
    )
    env = {**os.environ, "FXBATCH_TODAY": TRADING_DATE}
    out = subprocess.run(
        [sys.executable, "-c", runner, sys.executable, "-c", _CHILD, str(path), str(db)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _describe(path: Path) -> str:
    size = f"{path.stat().st_size / MB:,.0f} MB"
    if path.suffix == ".xlsx":
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("xl/worksheets/sheet1.xml")
        size += f", unzips to {info.file_size / MB:,.0f} MB (ratio {info.file_size / info.compress_size:.0f})"
    return size


def main() -> None:
    OUT.mkdir(exist_ok=True)
    limits = Limits()
    print(
        f"== ingest peak memory at the size limits (target <= {TARGET_MB} MiB; ratio = peak / target): "
        f"max_file_mb {limits.max_file_mb}, max_rows {limits.max_rows:,}, max_cells {limits.max_cells:,}, "
        f"max_unzipped_mb {MAX_UNZIPPED_MB}, max_zip_ratio {MAX_ZIP_RATIO}"
    )
    started = time.perf_counter()
    files = [
        ("CSV UTF-8 (DuckDB reads it)", largest_csv("utf-8")),
        ("CSV Windows-1252 (decoded first)", largest_csv("cp1252")),
        ("XLSX text cells", largest_xlsx()),
    ]
    print(f"   files ready in {time.perf_counter() - started:.0f}s")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, path) in enumerate(files):
            found = peak_of_load(path, Path(tmp) / f"mem{i}.duckdb")
            print(
                f"{label:>34}: peak RSS {found['maxrss_mb']:,.0f} MiB  ratio {found['maxrss_mb'] / TARGET_MB:.2f}  "
                f"load {found['elapsed']:.1f}s  ({_describe(path)}; accepted {found['accepted']:,}, "
                f"rejected {found['rejected']:,})"
            )


if __name__ == "__main__":
    main()
