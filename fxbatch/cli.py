"""``python -m fxbatch [--db PATH] COMMAND ...``; ``--json`` prints one JSON document on stdout.

Exit codes: 0 done, 2 the input or the request could not be used (message on stderr, or
``{"error": {"code", "message"}}`` with --json), 3 a run stopped INTERRUPTED (Ctrl-C or the
bank unreachable; resume it), 1 an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydantic

from fxbatch.engine import Job
from fxbatch.errors import FxBatchError
from fxbatch.export import export_ledger, export_run
from fxbatch.models import RunStatus, RunSummary
from fxbatch.settings import load_settings
from fxbatch.workbench import Workbench

Handler = Callable[[Workbench, argparse.Namespace], Any]


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    if args.json:
        json.dump(payload, sys.stdout, default=str, indent=None)
        sys.stdout.write("\n")
    else:
        print(text)


def cmd_load(wb: Workbench, args: argparse.Namespace) -> None:
    result = wb.load(args.file, name=args.name, sheet=args.sheet)
    lines = [
        f"Batch {result.batch_id} '{result.name}' created from {result.source_file} ({result.layout.value} layout)",
        f"  rows {result.rows}: accepted {result.accepted}, rejected {result.rejected}, ignored (blank) {result.ignored}",
    ]
    if result.previously_loaded_as:
        lines.append(
            f"  note: this file was loaded before as batch(es) {', '.join(map(str, result.previously_loaded_as))}"
        )
    limit = wb.settings.max_rejections_shown
    for r in result.rejections[:limit]:
        lines.append(f"  row {r.row:>7} {r.column:<16} {r.code:<22} {r.message}")
    if len(result.rejections) > limit:
        lines.append(f"  ... {len(result.rejections) - limit} more (use --json for all)")
    _emit(args, result.summary(), "\n".join(lines))


def cmd_batches(wb: Workbench, args: argparse.Namespace) -> None:
    items = wb.batches()
    payload = [b.model_dump(mode="json") for b in items]
    text = (
        "\n".join(
            f"{b.batch_id:>5}  {b.status:<10} {b.trades:>9} trades  {b.created_at:%Y-%m-%d %H:%M}  {b.name}"
            for b in items
        )
        or "No batches yet: load one with `python -m fxbatch load FILE`."
    )
    _emit(args, payload, text)


def cmd_rejections(wb: Workbench, args: argparse.Namespace) -> None:
    df = wb.rejections(args.batch_id)
    _emit(args, json.loads(df.to_json(orient="records")), df.to_string(index=False) if len(df) else "No rejections.")


def cmd_trades(wb: Workbench, args: argparse.Namespace) -> None:
    df = wb.trades(args.batch_id)
    payload = json.loads(df.to_json(orient="records", date_format="iso"))
    _emit(args, payload, df.head(args.limit).to_string(index=False))


def _bar(snap: dict[str, Any], width: int = 30) -> str:
    fraction = float(snap["fraction"])
    filled = int(width * fraction)
    eta = snap["eta_s"]
    eta_text = f"ETA {eta:,.0f}s" if isinstance(eta, int | float) else "ETA --"
    return (
        f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%} {snap['done']:,}/{snap['total']:,} "
        f"{float(snap['trades_per_s']):,.0f} trades/s {eta_text}   "
    )


def _follow(wb: Workbench, job: Job, args: argparse.Namespace) -> int:
    """Wait for a run with a progress bar on stderr; Ctrl-C leaves it INTERRUPTED (resumable)."""
    show = sys.stderr.isatty() or getattr(args, "progress", False)
    try:
        while not job.wait(0.25):
            if show:
                sys.stderr.write(_bar(job.progress.snapshot()))
                sys.stderr.flush()
    except KeyboardInterrupt:
        sys.stderr.write("\nstopping after the trades in hand; the run stays resumable...\n")
        job.interrupt()
        job.wait()
    if show:
        sys.stderr.write(_bar(job.progress.snapshot()) + "\n")
    summary = wb.run_summary(job.run_id)
    _emit(args, summary.to_json(), _summary_text(summary))
    if summary.status is RunStatus.INTERRUPTED:
        if summary.error:
            print(f"error: {summary.error}", file=sys.stderr)
        print(f"Resume with: python -m fxbatch resume {summary.run_id}", file=sys.stderr)
        return 3
    return 0


def _summary_text(s: RunSummary) -> str:
    counts = ", ".join(f"{k} {v:,}" for k, v in s.counts.items() if v)
    reasons = ", ".join(f"{k} {v:,}" for k, v in s.failure_reasons.items())
    elapsed = f"{s.elapsed_s:.2f}s" if s.elapsed_s is not None else "-"
    lines = [f"Run {s.run_id} of batch {s.batch_id}: {s.status.value}, {s.trades:,} trades in {elapsed}", f"  {counts}"]
    if reasons:
        lines.append(f"  failure reasons: {reasons}")
    return "\n".join(lines)


def cmd_run(wb: Workbench, args: argparse.Namespace) -> int:
    job = wb.start_run(
        args.batch_id, seed=args.seed, success_rate=args.success_rate, latency_ms=args.latency_ms,
        concurrency=args.concurrency, max_attempts=args.max_attempts, retry_of_run=args.retry_failed_of,
        registry_file=args.registry, bank_url=args.bank,
    )  # fmt: skip
    return _follow(wb, job, args)


def cmd_resume(wb: Workbench, args: argparse.Namespace) -> int:
    job = wb.engine.resume(args.run_id, bank_url=args.bank)
    return _follow(wb, job, args)


def cmd_runs(wb: Workbench, args: argparse.Namespace) -> None:
    items = wb.runs(args.batch)
    payload = [
        {k: v for k, v in r.to_json().items() if k in ("run_id", "batch_id", "status", "trades", "counts", "started_at",
                                                       "finished_at", "elapsed_s", "retry_of_run")}
        for r in items
    ]  # fmt: skip
    text = (
        "\n".join(
            f"{r.run_id:>5}  batch {r.batch_id:<5} {r.status.value:<11} {r.trades:>9,} trades  "
            f"success {r.counts.get('SUCCESS', 0):>9,}  failed {r.counts.get('FAILED', 0):>7,}"
            for r in items
        )
        or "No runs yet: start one with `python -m fxbatch run BATCH_ID`."
    )
    _emit(args, payload, text)


def cmd_show(wb: Workbench, args: argparse.Namespace) -> None:
    summary = wb.run_summary(args.run_id)
    _emit(args, summary.to_json(), _summary_text(summary))


def cmd_cancel(wb: Workbench, args: argparse.Namespace) -> None:
    wb.cancel(args.run_id)
    summary = wb.run_summary(args.run_id)
    _emit(args, summary.to_json(), _summary_text(summary))


def cmd_export(wb: Workbench, args: argparse.Namespace) -> None:
    rows = export_run(wb.store, args.run_id, args.output)
    _emit(
        args, {"run_id": args.run_id, "rows": rows, "path": str(args.output)}, f"Wrote {rows:,} rows to {args.output}"
    )


def cmd_ledger(wb: Workbench, args: argparse.Namespace) -> None:
    rows = export_ledger(wb.store, args.output, args.run)
    _emit(args, {"rows": rows, "path": str(args.output)}, f"Wrote {rows:,} booked deals to {args.output}")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser = argparse.ArgumentParser(prog="python -m fxbatch", description="FX batch workbench", parents=[common])
    parser.add_argument("--db", type=Path, help="database file (default: FXBATCH_DB or data/fxbatch.duckdb)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("load", parents=[common], help="validate a CSV/XLSX/Parquet file and create a batch")
    p.add_argument("file", type=Path)
    p.add_argument("--name", help="batch name (default: the file name)")
    p.add_argument("--sheet", help="workbook sheet to read (default: the first)")
    p.set_defaults(handler=cmd_load)

    p = sub.add_parser("batches", parents=[common], help="list batches")
    p.set_defaults(handler=cmd_batches)

    p = sub.add_parser("rejections", parents=[common], help="the rejected rows of a batch")
    p.add_argument("batch_id", type=int)
    p.set_defaults(handler=cmd_rejections)

    p = sub.add_parser("trades", parents=[common], help="the trades of a batch")
    p.add_argument("batch_id", type=int)
    p.add_argument("--limit", type=int, default=50, help="rows shown as text (JSON has all)")
    p.set_defaults(handler=cmd_trades)

    p = sub.add_parser("run", parents=[common], help="run a batch through quote -> book and wait for the end")
    p.add_argument("batch_id", type=int)
    p.add_argument("--success-rate", type=float, help="probability that a valid trade ends SUCCESS (default 0.95)")
    p.add_argument("--seed", type=int, help="seed of the simulated bank (default 42)")
    p.add_argument("--latency-ms", type=float, help="simulated time per bank call (default 0)")
    p.add_argument("--concurrency", type=int, help="bank calls in flight at once (default 16)")
    p.add_argument("--max-attempts", type=int, help="attempts per trade for retryable failures (default 3)")
    p.add_argument("--retry-failed-of", type=int, metavar="RUN_ID", help="run only the FAILED trades of that run")
    p.add_argument("--registry", help="client registry CSV (cif, account_number, status, limit_zar)")
    p.add_argument("--bank", metavar="URL", help="HTTP bank base URL (default: the simulated bank)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("resume", parents=[common], help="finish an INTERRUPTED run")
    p.add_argument("run_id", type=int)
    p.add_argument("--bank", metavar="URL", help="HTTP bank base URL")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(handler=cmd_resume)

    p = sub.add_parser("runs", parents=[common], help="list runs")
    p.add_argument("--batch", type=int, metavar="BATCH_ID")
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("show", parents=[common], help="a run's summary")
    p.add_argument("run_id", type=int)
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("cancel", parents=[common], help="cancel an INTERRUPTED run (its unfinished trades)")
    p.add_argument("run_id", type=int)
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("export", parents=[common], help="a run's per-trade results to CSV/XLSX/Parquet")
    p.add_argument("run_id", type=int)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("ledger", parents=[common], help="the simulated bank's booked deals")
    p.add_argument("--run", type=int, metavar="RUN_ID")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.set_defaults(handler=cmd_ledger)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        with Workbench.open(args.db, settings) as wb:
            code = args.handler(wb, args)
    except FxBatchError as exc:
        if args.json:
            json.dump({"error": exc.to_dict()}, sys.stdout)
            sys.stdout.write("\n")
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']}"
        if args.json:
            json.dump({"error": {"code": "BAD_SETTING", "message": message}}, sys.stdout)
            sys.stdout.write("\n")
        print(f"error: {message}", file=sys.stderr)
        return 2
    return int(code or 0)
