"""Load benchmark: 1M-row canonical CSV and 100k-row XLSX against a bare read of the same file.

Prints our time, the reference's time (measured in the same run) and the ratio. Peak memory
of our load is measured in a child process (ru_maxrss).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb
import numpy as np

from fxbatch.calendars import joint_business_day
from fxbatch.samples import ZAR_PAIRS, make_trades, write_csv, write_xlsx

OUT = Path(__file__).resolve().parent / "out"
CSV_ROWS = 1_000_000
XLSX_ROWS = 100_000
# The CSV carries value dates of December 2026 for a load on this trading date.
TRADING_DATE = "2026-11-30"


def _ensure_files() -> tuple[Path, Path]:
    OUT.mkdir(exist_ok=True)
    csv_path = OUT / f"canonical_spot_dated_{CSV_ROWS}.csv"
    xlsx_path = OUT / f"canonical_{XLSX_ROWS}.xlsx"
    if not csv_path.exists():
        df = make_trades(CSV_ROWS, seed=1)
        # about 1% bad rows so the rejection path is exercised too
        df.loc[df.index[::97], "amount"] = "12,34x"
        # a value date on every 5th row, checked against both currencies' calendars: business days
        # of every pair from the SPOT date on (the rows are SPOT), and one in 50 on Christmas Day
        # (rejected, as a real sheet's few bad dates)
        days = [date(2026, 12, d) for d in range(2, 32)]
        good = [d.isoformat() for d in days if all(joint_business_day(p, d) for p in ZAR_PAIRS)]
        dated = df.index[::5]
        picks = np.array(good)[np.arange(len(dated)) % len(good)]
        picks[::50] = "2026-12-25"
        df.loc[dated, "value_date"] = picks
        df.loc[dated, "delivery"] = "SPOT"  # a written date must suit the delivery
        write_csv(df, csv_path)
    if not xlsx_path.exists():
        write_xlsx(make_trades(XLSX_ROWS, seed=2), xlsx_path, title="Morning batch")
    return csv_path, xlsx_path


def bare_csv(path: Path, db: Path) -> float:
    start = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t AS SELECT * FROM read_csv(?)", [str(path)])
    con.close()
    return time.perf_counter() - start


def bare_xlsx(path: Path) -> float:
    from python_calamine import CalamineWorkbook

    start = time.perf_counter()
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    assert len(rows) > XLSX_ROWS
    return time.perf_counter() - start


_CHILD = """
import json, resource, sys, time
from fxbatch import Workbench
start = time.perf_counter()
with Workbench.open(sys.argv[2]) as wb:
    r = wb.load(sys.argv[1])
elapsed = time.perf_counter() - start
print(json.dumps({"elapsed": elapsed, "accepted": r.accepted, "rejected": r.rejected,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def ours(path: Path, db: Path) -> dict[str, float]:
    env = {**os.environ, "FXBATCH_TODAY": TRADING_DATE}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(db)], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    csv_path, xlsx_path = _ensure_files()
    print("== load benchmark (best of 2; ratio = ours / reference, target <= 2.0)")
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, ref in (
            (f"CSV {CSV_ROWS:,} rows", csv_path, lambda i: bare_csv(csv_path, Path(tmp) / f"ref{i}.duckdb")),
            (f"XLSX {XLSX_ROWS:,} rows", xlsx_path, lambda i: bare_xlsx(xlsx_path)),
        ):
            refs, runs = [], []
            for i in range(2):
                refs.append(ref(i))
                runs.append(ours(path, Path(tmp) / f"ours_{label[:4]}_{i}.duckdb"))
            best = min(runs, key=lambda r: r["elapsed"])
            ratio = best["elapsed"] / min(refs)
            print(
                f"{label:>18}: ours {best['elapsed']:.2f}s  reference {min(refs):.2f}s  ratio {ratio:.2f}x  "
                f"peak RSS {max(r['maxrss_mb'] for r in runs):.0f} MiB  "
                f"(accepted {best['accepted']:,}, rejected {best['rejected']:,})"
            )


if __name__ == "__main__":
    main()
