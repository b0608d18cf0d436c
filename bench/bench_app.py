"""App benchmark: time to render the Run detail page (AppTest, the real app.py) for a 1M-trade run
against the same page for a 1k-trade run. Target: at most 3x (the page's cost must not grow with
the run: everything is aggregated or paged in DuckDB).

"cold" clears st.cache_data first (what the first analyst to open a finished run waits for);
"warm" is a rerun with the run's aggregates cached (every later interaction).
Ratios, not seconds, are the figures to compare (the machine is noisy).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
OUT = ROOT / "bench" / "out"
BIG, SMALL = 1_000_000, 1_000
REPEATS = 3
TIMEOUT = 600


def _batch_file(n: int) -> Path:
    from fxbatch.samples import make_trades, write_csv

    OUT.mkdir(exist_ok=True)
    path = OUT / f"app_trades_{n}.csv"
    if not path.exists():
        write_csv(make_trades(n, seed=5), path)
    return path


def _render(run_id: int, *, cold: bool) -> float:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["run"] = str(run_id)
    at.run()
    at.switch_page("pages/run.py")
    at.query_params["run"] = str(run_id)
    if cold:
        st.cache_data.clear()
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox[0].value == run_id, "the page did not open the run asked for"
    assert len(at.get("plotly_chart")) == 9, "the charts were not drawn"
    return elapsed


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="fxbatch-bench-app-"))
    os.environ["FXBATCH_DB"] = str(tmp / "bench.duckdb")
    os.environ["FXBATCH_LOAD_SAMPLE_ON_CREATE"] = "false"
    os.environ["STREAMLIT_LOGGER_LEVEL"] = "error"  # AppTest outside a server logs a line per cached call
    sys.path.insert(0, str(ROOT))
    from pages.common import workbench

    wb = workbench()  # the app's own (cached) workbench: AppTest's script runs share it
    runs = {}
    for n in (SMALL, BIG):
        start = time.perf_counter()
        batch_id = wb.load(_batch_file(n), name=f"bench {n}").batch_id
        summary = wb.run(batch_id, seed=1, success_rate=0.8)
        assert summary.counts["PENDING"] == 0
        runs[n] = summary.run_id
        print(f"setup: {n:>9,} trades loaded and run in {time.perf_counter() - start:.1f} s", flush=True)

    _render(runs[SMALL], cold=True)  # imports, plotly templates: paid once by any first page
    figures = {}
    for n in (SMALL, BIG):
        cold = [_render(runs[n], cold=True) for _ in range(REPEATS)]
        warm = [_render(runs[n], cold=False) for _ in range(REPEATS)]
        figures[n] = (statistics.median(cold), statistics.median(warm))
    print("Run detail page render (AppTest, median of 3)")
    print(f"{'':>12} {'1k trades':>10} {'1M trades':>10} {'ratio':>7}  target <= 3x")
    for i, label in enumerate(("cold", "warm")):
        small, big = figures[SMALL][i], figures[BIG][i]
        print(f"{label:>12} {small:>9.3f}s {big:>9.3f}s {big / small:>6.2f}x")
    wb.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
