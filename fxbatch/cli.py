"""``python -m fxbatch [--db PATH] COMMAND ...``; ``--json`` prints one JSON document on stdout.

Exit codes: 0 done, 2 the input or the request could not be used (message on stderr, or
``{"error": {"code", "message"}}`` with --json), 1 an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fxbatch.errors import FxBatchError
from fxbatch.settings import Settings
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        with Workbench.open(args.db, settings) as wb:
            args.handler(wb, args)
    except FxBatchError as exc:
        if args.json:
            json.dump({"error": exc.to_dict()}, sys.stdout)
            sys.stdout.write("\n")
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0
