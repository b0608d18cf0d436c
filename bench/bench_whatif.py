"""What-if benchmark: 21 success rates x 5 seeds over a 100k-trade batch, against one ordinary
run of the same batch measured in the same process (target: the 105 scenarios within 10x)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from fxbatch import Workbench
from fxbatch.samples import make_trades, write_csv

OUT = Path(__file__).resolve().parent / "out"
N = 100_000


def main() -> None:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"whatif_{N}.csv"
    if not path.exists():
        write_csv(make_trades(N, seed=21), path)
    rates = [round(0.5 + 0.025 * i, 3) for i in range(21)]
    with tempfile.TemporaryDirectory() as tmp, Workbench.open(Path(tmp) / "bench.duckdb") as wb:
        batch = wb.load(path).batch_id
        start = time.perf_counter()
        wb.run(batch, seed=1)
        single = time.perf_counter() - start
        start = time.perf_counter()
        sweep = wb.whatif.sweep(batch, rates, seeds=5, name="bench")
        elapsed = time.perf_counter() - start
        assert len(sweep.scenarios) == 105
    print(f"== what-if sweep: 21 success rates x 5 seeds over {N:,} trades")
    print(f"  sweep {elapsed:.2f}s  one ordinary run {single:.2f}s  ratio {elapsed / single:.2f}x (target <= 10)")


if __name__ == "__main__":
    main()
