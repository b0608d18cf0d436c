"""``python -m fxbatch [--db PATH] COMMAND ...``; ``--json`` prints one JSON document on stdout.

Exit codes: 0 done, 2 the input or the request could not be used (message on stderr, or
``{"error": {"code", "message"}}`` with --json), 3 a run stopped INTERRUPTED (Ctrl-C or the
bank unreachable; resume it; or a cancel left it so), 130 Ctrl-C detached from a run executing in a server (it goes on
there), 1 an unexpected failure or ``audit verify`` found the audit trail broken.

While an fxbatch server (``make run``) holds the database, every command works through its HTTP
API (the server records its address beside the database file); ``--server URL`` or
``FXBATCH_SERVER`` names one explicitly.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any, NoReturn

import pydantic

from fxbatch.approvals import Approval, ApprovalStatus
from fxbatch.batches import MAX_DAYS_AHEAD
from fxbatch.client import Client, RemoteJob
from fxbatch.engine import Job
from fxbatch.errors import ConflictError, FxBatchError, SettingsError, invalid_values
from fxbatch.ingest.readers import read_text
from fxbatch.masking import export_path, mask_rejections
from fxbatch.models import SEED_MAX, RunProgress, RunStatus, RunSummary
from fxbatch.settings import load_settings
from fxbatch.settlements import Settlement
from fxbatch.tablejson import records
from fxbatch.whatif.compare import split_differing
from fxbatch.whatif.models import Sweep
from fxbatch.whatif.sweep import MAX_SCENARIOS
from fxbatch.workbench import Workbench

AnyWorkbench = Workbench | Client  # the database here, or the server that holds it
Handler = Callable[[AnyWorkbench, argparse.Namespace], Any]


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    if args.json:
        json.dump(payload, sys.stdout, default=str, indent=None)
        sys.stdout.write("\n")
    else:
        print(text)


def _column_map(items: Sequence[str] | None) -> dict[str, str] | None:
    """``--map 'Cust No=client_cif'`` (repeatable; an empty field ignores the column)."""
    if not items:
        return None
    mapping: dict[str, str] = {}
    for item in items:
        header, sep, field = item.rpartition("=")
        if not sep or not header.strip():
            raise SettingsError(f"--map {item!r}: expected 'FILE HEADER=field', e.g. --map 'Cust No=client_cif'.")
        mapping[header.strip()] = field.strip()
    return mapping


def _read_fixes(path: Path | None) -> dict[int, dict[str, str | None]] | None:
    """``--fixes FILE.csv``: a ``row`` column (the file's row numbers) and one column per field
    to correct; an empty cell keeps the file's value."""
    if path is None:
        return None
    try:
        text = read_text(path)  # as trade files are read: Excel's "CSV" is Windows-1252
    except OSError as exc:
        raise SettingsError(f"--fixes {path}: cannot read it ({exc.strerror}).") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records = list(reader)
    if "row" not in (reader.fieldnames or []):
        raise SettingsError(
            f"--fixes {path}: its header has no 'row' column (the file's row numbers, as in the rejections); "
            f"it has {', '.join(repr(f) for f in reader.fieldnames or []) or 'no columns'}. Separate columns with commas."
        )
    fixes: dict[int, dict[str, str | None]] = {}
    for line, record in enumerate(records, start=2):
        row_text = (record.pop("row", None) or "").strip()
        if not row_text.isdigit():
            raise SettingsError(f"--fixes {path}, line {line}: the 'row' column must hold the file's row number.")
        values = {k.strip(): v for k, v in record.items() if k and v is not None and v.strip()}
        fixes.setdefault(int(row_text), {}).update(values)
    return fixes


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def cmd_load(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    result = wb.load(
        args.file, name=args.name, sheet=args.sheet, column_map=_column_map(args.map), fixes=_read_fixes(args.fixes),
        today=args.trade_date,
    )  # fmt: skip
    # A rejected account number is masked as everywhere (``rejections --unmask`` shows it in full).
    result = result.model_copy(update={"rejections": mask_rejections(result.rejections, False)})
    lines = [
        f"Batch {result.batch_id} '{result.name}' created from {result.source_file} ({result.layout.value} layout)",
        f"  rows {result.rows}: accepted {result.accepted}, rejected {result.rejected}, ignored (blank) {result.ignored}",
    ]
    if result.fixed:
        lines.append(f"  corrected and accepted: rows {', '.join(map(str, result.fixed))}")
    if result.ignored_columns:  # a column not read is worth a glance (a header mistyped?)
        lines.append(
            f"  columns not read (no field): {', '.join(map(repr, result.ignored_columns))}; map one with --map"
        )
    if result.previously_loaded_as:
        lines.append(
            f"  note: this file was loaded before as batch(es) {', '.join(map(str, result.previously_loaded_as))}"
        )
    limit = args.max_rejections_shown  # this terminal's setting, also when a server did the load
    for r in result.rejections[:limit]:
        lines.append(f"  row {r.row:>7} {r.column:<16} {r.code:<22} {r.message}")
    if result.rejections_total > min(limit, len(result.rejections)):
        lines.append(
            f"  ... {result.rejections_total - min(limit, len(result.rejections)):,} more: "
            f"`python -m fxbatch rejections {result.batch_id}` lists them all"
        )
    _emit(args, result.summary(), "\n".join(lines))


def cmd_batches(wb: AnyWorkbench, args: argparse.Namespace) -> None:
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


UNMASK_HELP = "show account numbers in full (default: last 4 digits)"


def cmd_rejections(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    df = wb.rejections(args.batch_id, unmask=args.unmask)
    _emit(args, records(df), df.to_string(index=False) if len(df) else "No rejections.")


def cmd_trades(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    if args.json:  # every row
        _emit(args, records(wb.trades(args.batch_id, unmask=args.unmask)), "")
        return
    total = wb.batch(args.batch_id).trades
    df = wb.trades(args.batch_id, limit=args.limit, unmask=args.unmask)  # only the rows shown are read
    lines = [df.to_string(index=False)] if len(df) else [] if total else ["No trades."]
    if total > len(df):
        lines.append(f"... {total - len(df):,} more of {total:,} trades (--limit N shows more; --json gives all)")
    text = "\n".join(lines)
    _emit(args, None, text)


def _bar(snap: RunProgress | None, width: int = 30) -> str:
    if snap is None:  # not executing here (any more): nothing to draw
        return ""
    filled = int(width * snap.fraction)
    eta_text = f"ETA {snap.eta_s:,.0f}s" if snap.eta_s is not None else "ETA --"
    return (
        f"\r[{'#' * filled}{'.' * (width - filled)}] {snap.fraction:6.1%} {snap.done:,}/{snap.total:,} "
        f"{snap.trades_per_s:,.0f} trades/s {eta_text}   "
    )


def _follow(wb: AnyWorkbench, job: Job | RemoteJob, args: argparse.Namespace) -> int:
    """Wait for a run with a progress bar on stderr; Ctrl-C leaves it INTERRUPTED (resumable), or,
    for a run in a server, detaches from it (the run goes on there)."""
    show = sys.stderr.isatty() or getattr(args, "progress", False)
    if isinstance(job, RemoteJob):
        assert isinstance(wb, Client)
        if not _follow_remote(wb, job, show):
            if args.json:  # a script still learns which run goes on in the server, and how it stood
                _emit(args, wb.run_summary(job.run_id).to_json() | {"detached": True}, "")
            return 130
    else:
        assert isinstance(wb, Workbench)
        _follow_local(wb, job, show)
    summary = wb.run_summary(job.run_id)
    _emit(args, summary.to_json(), _summary_text(summary))
    if summary.status is RunStatus.INTERRUPTED:
        if summary.error:
            print(f"error: {summary.error}", file=sys.stderr)
        print(f"Resume with: python -m fxbatch resume {summary.run_id}", file=sys.stderr)
        return 3
    return 0


def _follow_local(wb: Workbench, job: Job, show: bool) -> None:
    last: RunProgress | None = None
    try:
        while not job.wait(0.25):
            last = wb.progress(job.run_id) or last
            if show:
                sys.stderr.write(_bar(last))
                sys.stderr.flush()
    except KeyboardInterrupt:
        sys.stderr.write("\nstopping after the trades in hand; the run stays resumable...\n")
        job.interrupt()
        job.wait()
    if show:
        sys.stderr.write(_bar(_final(wb.run_summary(job.run_id), last)) + "\n")


def _follow_remote(client: Client, job: RemoteJob, show: bool) -> bool:
    """Draw the bar from the server's events to the run's end; False when Ctrl-C detached."""
    last: RunProgress | None = None
    try:
        for view in client.events(job.run_id):
            last = view.progress or last
            if show and view.progress is not None:
                sys.stderr.write(_bar(view.progress))
                sys.stderr.flush()
            if view.finished:
                if show:
                    sys.stderr.write(_bar(_final(view, last)) + "\n")
                return True
    except KeyboardInterrupt:
        sys.stderr.write(
            f"\ndetached: run {job.run_id} goes on in the server at {client.url}. Follow it with "
            f"`python -m fxbatch show {job.run_id}`; stop it with `python -m fxbatch cancel {job.run_id}`.\n"
        )
        return False
    return True


def _final(summary: RunSummary, last: RunProgress | None) -> RunProgress | None:
    """The bar's last state from the stored counts (the live progress is gone once a run ends)."""
    if last is None:
        return None
    done = sum(summary.counts.get(s, 0) for s in ("SUCCESS", "FAILED", "CANCELLED"))
    return last.model_copy(update={"done": done, "fraction": done / summary.trades if summary.trades else 1.0})


def _summary_text(s: RunSummary) -> str:
    counts = ", ".join(f"{k} {v:,}" for k, v in s.counts.items() if v)
    reasons = ", ".join(f"{k} {v:,}" for k, v in s.failure_reasons.items())
    elapsed = f"{s.elapsed_s:.2f}s" if s.elapsed_s is not None else "-"
    lines = [f"Run {s.run_id} of batch {s.batch_id}: {s.status.value}, {s.trades:,} trades in {elapsed}", f"  {counts}"]
    if reasons:
        lines.append(f"  failure reasons: {reasons}")
    if s.spread_income_zar is not None:
        lines.append(f"  spread income: R {s.spread_income_zar:,.2f}")
    if s.trade_date is not None:
        dates = f"  trading date {s.trade_date.isoformat()}"
        if s.value_dates_moved:
            dates += f": {s.value_dates_moved:,} value dates derived again from their delivery"
        if s.value_dates_unsendable:
            dates += f"; {s.value_dates_unsendable:,} trades not sent (their value date cannot settle)"
        lines.append(dates)
    if s.quotes_cancelled or s.quote_cancel_failures:
        released = f"  {s.quotes_cancelled:,} unbooked quotes released at the bank"
        if s.quote_cancel_failures:
            released += f" ({s.quote_cancel_failures:,} cancels not confirmed by the bank)"
        lines.append(released)
    if s.error and s.status in (RunStatus.INTERRUPTED, RunStatus.FAILED):  # a finished run's old error is history
        lines.append(f"  stopped: {s.error}")
    return "\n".join(lines)


RUN_FLAGS = ("seed", "success_rate", "latency_ms", "concurrency", "max_attempts", "retry_failed_of", "registry",
             "bank")  # fmt: skip


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        seed=args.seed, success_rate=args.success_rate, latency_ms=args.latency_ms, concurrency=args.concurrency,
        max_attempts=args.max_attempts, retry_of_run=args.retry_failed_of, registry_file=args.registry,
        bank_url=args.bank,
    )  # fmt: skip


def cmd_run(wb: AnyWorkbench, args: argparse.Namespace) -> int:
    if args.approval is not None and all(getattr(args, f) is None for f in RUN_FLAGS):
        # `run --approval ID`: exactly what was approved (a batch id given must be the approved one).
        if args.batch_id is not None and wb.approval(args.approval).batch_id != args.batch_id:
            raise ConflictError(f"Approval {args.approval} is not for batch {args.batch_id}.")
        return _follow(wb, wb.start_approved(args.approval), args)
    batch = args.batch_id if args.batch_id is not None else wb.approval(args.approval).batch_id
    return _follow(wb, wb.start_run(batch, approval=args.approval, **_run_options(args)), args)


def _approval_text(a: Approval) -> str:
    bank = a.bank_url or "the simulated bank"
    line = (f"approval {a.approval_id}: batch {a.batch_id}, {a.trades:,} trades to {bank}; {a.status.value}; "
            f"requested by {a.requested_by} at {a.requested_at:%Y-%m-%d %H:%M} UTC")  # fmt: skip
    if a.decided_by:
        line += f"; {'approved' if a.status != 'rejected' else 'rejected'} by {a.decided_by}"
    if a.reason:
        line += f" ({a.reason})"
    if a.run_id is not None:
        line += f"; started run {a.run_id}"
    if a.void_reason:
        line += f"; void: {a.void_reason}"
    return line


def _second_approver(wb: AnyWorkbench) -> str:
    """Who decides what this user proposed: with sign-in, another approver (four eyes)."""
    four_eyes = wb.me().get("four_eyes") if isinstance(wb, Client) else wb.access.four_eyes
    return "An approver other than you" if four_eyes else "An approver (no sign-in here: you may yourself)"


def cmd_request_run(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    found = wb.request_run(args.batch_id, **_run_options(args))
    _emit(args, found.model_dump(mode="json"), _approval_text(found) + f"\n{_second_approver(wb)} approves it: "
          f"`python -m fxbatch approve {found.approval_id}`; then `python -m fxbatch run --approval {found.approval_id}`.")  # fmt: skip


def cmd_approve(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    found = wb.approve(args.approval_id) if args.reject is None else wb.reject(args.approval_id, args.reject)
    _emit(args, found.model_dump(mode="json"), _approval_text(found))


def cmd_approvals(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    items = wb.approvals(args.status)
    text = "\n".join(_approval_text(a) for a in items) or "No requests for real-money runs."
    _emit(args, [a.model_dump(mode="json") for a in items], text)


def cmd_resume(wb: AnyWorkbench, args: argparse.Namespace) -> int:
    return _follow(wb, wb.start_resume(args.run_id, bank_url=args.bank), args)


def cmd_runs(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    items = wb.runs(args.batch)
    payload = [
        {k: v for k, v in r.to_json().items() if k in ("run_id", "batch_id", "status", "trades", "counts", "started_at",
                                                       "finished_at", "elapsed_s", "retry_of_run", "spread_income_zar")}
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


def cmd_show(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    summary = wb.run_summary(args.run_id)
    money = wb.run_money(args.run_id)
    text = _summary_text(summary) + f"\n  money: {money.headline}"
    _emit(args, {**summary.to_json(), "money": money.model_dump(mode="json")}, text)


def cmd_cancel(wb: AnyWorkbench, args: argparse.Namespace) -> int:
    wb.cancel(args.run_id)
    summary = wb.run_summary(args.run_id)
    _emit(args, summary.to_json(), _summary_text(summary))
    if summary.status is RunStatus.INTERRUPTED:  # the bank could not settle what it left: not cancelled
        print(f"error: run {args.run_id} is still INTERRUPTED, not cancelled: {summary.error}", file=sys.stderr)
        return 3
    return 0


def cmd_in_doubt(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    df = wb.bookings_in_doubt(args.run_id)
    text = (
        df.to_string(index=False)
        + f"\n\nOnce the bank has said what became of them: `python -m fxbatch settle {args.run_id} "
        "--booked ROW ... --not-booked ROW ... --note 'what the bank confirmed'` (an approver; add --propose "
        "where a second approver must confirm it)."
        if len(df)
        else f"Run {args.run_id} has no booking in doubt."
    )
    proposed = wb.settlements(args.run_id)
    if proposed:
        text += "\n\nProposed settlements:\n" + "\n".join(_settlement_text(s) for s in proposed)
    _emit(args, records(df), text)


def _settlement_text(s: Settlement) -> str:
    return (f"settlement {s.settlement_id} of run {s.run_id}: {s.rows_text()}; {s.decision_text()}; proposed by "
            f"{s.proposed_by} at {s.proposed_at:%Y-%m-%d %H:%M} UTC ({s.note})")  # fmt: skip


def cmd_settle(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    if args.propose:
        found = wb.propose_settlement(args.run_id, booked=args.booked, not_booked=args.not_booked, note=args.note)
        _emit(args, found.model_dump(mode="json"), _settlement_text(found) + f"\n{_second_approver(wb)} confirms "
              f"it: `python -m fxbatch confirm-settlement {found.settlement_id}` (or --reject REASON).")  # fmt: skip
        return
    summary = wb.settle_by_hand(args.run_id, booked=args.booked, not_booked=args.not_booked, note=args.note)
    _emit(args, summary.to_json(), _summary_text(summary))


def cmd_settlements(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    items = wb.awaiting_settlements()
    text = "\n".join(_settlement_text(s) for s in items) or "No settlement of bookings in doubt waits for a decision."
    _emit(args, [s.model_dump(mode="json") for s in items], text)


def cmd_confirm_settlement(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    if args.reject is not None:
        found = wb.reject_settlement(args.settlement_id, args.reject)
        _emit(args, found.model_dump(mode="json"), _settlement_text(found))
        return
    summary = wb.confirm_settlement(args.settlement_id)
    _emit(args, summary.to_json(), _summary_text(summary))


def cmd_export(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    if (args.run_id is None) == (args.batch is None):
        raise SettingsError("export: name a run (RUN_ID) or a batch (--batch BATCH_ID), not both.")
    if args.batch is not None:
        rows = wb.export_batch(args.batch, args.output, unmask=args.unmask)
        which: dict[str, Any] = {"batch_id": args.batch}
    else:
        rows = wb.export_run(args.run_id, args.output, unmask=args.unmask)
        which = {"run_id": args.run_id}
    path = export_path(args.output, unmask=args.unmask)  # an unmasked file says so in its name
    shown = "full account numbers" if args.unmask else "account numbers masked"
    _emit(
        args,
        {**which, "rows": rows, "path": str(path), "unmasked": args.unmask},
        f"Wrote {rows:,} rows to {path} ({shown})",
    )


def cmd_ledger(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    rows = wb.export_ledger(args.output, args.run)
    _emit(args, {"rows": rows, "path": str(args.output)}, f"Wrote {rows:,} booked deals to {args.output}")


def _rates(text: str) -> list[float]:
    """'0.5,0.7,0.9' or a range 'START:STOP:STEP' (inclusive), e.g. '0.5:1:0.05'."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if not (all(math.isfinite(v) for v in (start, stop, step)) and step > 0 and stop >= start):
                raise argparse.ArgumentTypeError(
                    f"--success-rates {text!r}: a range START:STOP:STEP needs STOP >= START and a STEP above 0, "
                    "e.g. 0.5:1:0.05"
                )
            n = math.floor((stop - start) / step + 1e-9) + 1  # never past STOP
            if n > MAX_SCENARIOS:
                raise argparse.ArgumentTypeError(
                    f"--success-rates {text!r}: {n:,} success rates; a sweep takes at most {MAX_SCENARIOS:,} scenarios"
                )
            return [round(start + i * step, 10) for i in range(n)]
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--success-rates {text!r}: use 0.5,0.7,0.9 or 0.5:1:0.05") from exc


def cmd_whatif(wb: AnyWorkbench, args: argparse.Namespace) -> int:
    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{done}/{total} scenarios")
            sys.stderr.flush()

    try:
        result = wb.whatif.sweep(
            args.batch_id, args.success_rates, seeds=args.seeds, seed=args.seed, name=args.name,
            workers=args.workers, dask_address=args.dask, on_progress=progress,
        )  # fmt: skip
    except KeyboardInterrupt as stopped:
        said = getattr(stopped, "__notes__", None) or ["sweep cancelled (Ctrl-C): nothing of it was stored"]
        print("\n" + said[0], file=sys.stderr)
        return 130
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    _emit(args, result.model_dump(mode="json"), "\n".join(_sweep_summary(result)))
    return 0


def cmd_cancel_sweep(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    wb.whatif.cancel(args.sweep_id)
    _emit(args, {"sweep_id": args.sweep_id, "cancel": "requested"},
          f"Sweep {args.sweep_id}: cancel requested; the scenarios under way end and nothing of it is stored.")  # fmt: skip


def _sweep_summary(result: Sweep) -> list[str]:
    lines = [f"Sweep {result.sweep_id} over batch {result.batch_id}: {len(result.scenarios)} scenarios"]
    return lines + [
        f"  success rate {p.success_rate:.2f}: notional ZAR mean {p.mean:,.0f} "
        f"(5-95%: {p.p05:,.0f} .. {p.p95:,.0f}), success share {p.success_share_mean:.1%}, "
        f"spread income R {p.income_mean or 0:,.0f}, lost to failures R {p.income_lost_mean or 0:,.0f}"
        for p in result.summary
    ]


def cmd_sweeps(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    items = wb.whatif.sweeps(args.batch)
    text = "\n".join(f"{s.sweep_id:>5}  batch {s.batch_id:<5} {s.scenarios:>5} scenarios  {s.name}" for s in items)
    _emit(
        args,
        [s.model_dump(mode="json") for s in items],
        text or "No sweeps yet: `python -m fxbatch whatif BATCH_ID --success-rates 0.5:1:0.1`.",
    )


def cmd_sweep(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    result = wb.whatif.get(args.sweep_id)
    table = result.scenarios_df()[["scenario", "success_rate", "seed", "succeeded", "failed", "notional_zar_succeeded",
                                   "spread_income_zar", "income_lost_zar"]]  # fmt: skip
    text = [*_sweep_summary(result), "", table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"), "",
            f"Promote one to a full run: `python -m fxbatch promote {result.sweep_id} SCENARIO`."]  # fmt: skip
    _emit(args, result.model_dump(mode="json"), "\n".join(text))


def cmd_promote(wb: AnyWorkbench, args: argparse.Namespace) -> int:
    return _follow(wb, wb.whatif.start_promote(args.sweep_id, args.scenario), args)


def cmd_compare(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    table = wb.whatif.compare(args.run_ids)
    payload: dict[str, Any] = {"runs": records(table)}
    text = table.to_string(index=False)
    if len(args.run_ids) == 2:
        diff = wb.whatif.differing_trades(args.run_ids[0], args.run_ids[1])
        total, diff = split_differing(diff)  # in all: the list stops at 1,000
        payload["differing"] = total
        payload["differing_trades"] = records(diff)
        text += f"\n\n{total:,} trade(s) differ" + (
            f"; the first {min(20, len(diff))}:\n{diff.head(20).to_string(index=False)}" if len(diff) else ""
        )
    _emit(args, payload, text)


def cmd_init(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    batches = wb.batches()
    payload: dict[str, Any] = {"schema_version": wb.schema_version(), "batches": len(batches)}
    if isinstance(wb, Workbench):
        payload["db"] = db = str(wb.settings.db)
    else:  # the file the server holds, and the server (a field of its own: "db" stays a path)
        payload |= {"db": str(wb.health()["db"]), "server": wb.url}
        db = f"{payload['db']} (held by the server at {wb.url})"
    _emit(args, payload, f"Database {db} ready (schema {payload['schema_version']}, {len(batches)} batches)")


class BadArgument(Exception):
    """An argument argparse refused; ``usage`` is that of the (sub)command at fault."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.message, self.usage = message, usage


class _Parser(argparse.ArgumentParser):
    """Raises rather than exits, so ``main`` can answer in JSON when --json is anywhere on the line
    (a subcommand's parser does not know about the options before it)."""

    def error(self, message: str) -> NoReturn:
        raise BadArgument(message, self.format_usage())


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed: use a whole number from 0 to 2^63-1 ({SEED_MAX})")
    return value


def cmd_backup(wb: AnyWorkbench, args: argparse.Namespace) -> None:
    if not isinstance(wb, Workbench):
        raise ConflictError(
            f"The database is held by the fxbatch server at {wb.url}; stop the server, then run backup again."
        )
    path = wb.backup(args.output, force=args.force)
    payload = {"db": str(wb.settings.db), "backup": str(path), "bytes": path.stat().st_size}
    _emit(
        args,
        payload,
        f"Backup of {wb.settings.db} written to {path} (restore: copy it, and {path.name}.audit-head, over the database and its head)",
    )


def cmd_audit(wb: AnyWorkbench, args: argparse.Namespace) -> int:
    if args.audit_command == "verify":
        check = wb.verify_audit()
        _emit(args, check.model_dump(), check.message)
        return 0 if check.ok else 1
    rows = wb.audit_trail(actor=args.actor, action=args.action, limit=args.limit)
    payload = [{**r, "params": json.loads(r["params"])} for r in rows.to_dict("records")]
    text = rows.drop(columns=["prev_hash", "hash"]).to_string(index=False) if len(rows) else "no audit rows"
    _emit(args, payload, text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    # --json works before or after the command: the subcommands' copy must not reset it to False.
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    parser = _Parser(prog="python -m fxbatch", description="FX batch workbench", parents=[common])
    parser.add_argument("--db", type=Path, help="database file (default: FXBATCH_DB or data/fxbatch.duckdb)")
    parser.add_argument(
        "--server",
        metavar="URL",
        help="work through the fxbatch server at URL (default: FXBATCH_SERVER, or the server holding the database)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", parents=[common], help="create the database (with the sample batch when new)")
    p.set_defaults(handler=cmd_init, seed_sample=True)

    p = sub.add_parser("load", parents=[common], help="validate a CSV/XLSX/Parquet file and create a batch")
    p.add_argument("file", type=Path)
    p.add_argument("--name", help="batch name (default: the file name)")
    p.add_argument("--sheet", help="workbook sheet to read (default: the first)")
    p.add_argument(
        "--map",
        action="append",
        metavar="HEADER=FIELD",
        help="map a file column to a field, e.g. 'Cust No=client_cif' (repeatable; 'HEADER=' ignores it)",
    )
    p.add_argument(
        "--fixes",
        type=Path,
        metavar="FILE.csv",
        help="corrections: a 'row' column (the file's row numbers) and a column per field to correct",
    )
    p.add_argument(
        "--trade-date",
        type=_iso_date,
        metavar="YYYY-MM-DD",
        help="check value dates for this coming trading date, when the batch will run (default: today; up to "
        f"{MAX_DAYS_AHEAD} days ahead)",
    )
    p.set_defaults(handler=cmd_load)

    p = sub.add_parser("batches", parents=[common], help="list batches")
    p.set_defaults(handler=cmd_batches)

    p = sub.add_parser("rejections", parents=[common], help="the rejected rows of a batch")
    p.add_argument("batch_id", type=int)
    p.add_argument("--unmask", action="store_true", help=UNMASK_HELP)
    p.set_defaults(handler=cmd_rejections)

    p = sub.add_parser("trades", parents=[common], help="the trades of a batch")
    p.add_argument("batch_id", type=int)
    p.add_argument("--limit", type=_count, default=50, help="rows shown as text (default 50; JSON has all)")
    p.add_argument("--unmask", action="store_true", help=UNMASK_HELP)
    p.set_defaults(handler=cmd_trades)

    p = sub.add_parser("run", parents=[common], help="run a batch through quote -> book and wait for the end")
    p.add_argument("batch_id", type=int, nargs="?", help="the batch (optional with --approval)")
    p.add_argument("--approval", type=int, metavar="ID", help="an approved request (an HTTP bank run on a server "
                   "with sign-in); alone, it starts exactly what was approved")  # fmt: skip
    p.add_argument("--success-rate", type=float, help="probability that a valid trade ends SUCCESS (default 0.95)")
    p.add_argument("--seed", type=_seed, help="seed of the simulated bank (default 42)")
    p.add_argument("--latency-ms", type=float, help="simulated time per bank call (default 0)")
    p.add_argument("--concurrency", type=int, help="bank calls in flight at once (default 16)")
    p.add_argument("--max-attempts", type=int, help="attempts per trade for retryable failures (default 3)")
    p.add_argument("--retry-failed-of", type=int, metavar="RUN_ID", help="run only the FAILED trades of that run")
    p.add_argument("--registry", help="client registry CSV (cif, account_number, status, limit_zar); through a "
                   "server, the file name of one in its registry folder (FXBATCH_REGISTRY_DIR)")  # fmt: skip
    p.add_argument("--bank", metavar="URL", help="HTTP bank base URL (default: the simulated bank)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    p.set_defaults(handler=cmd_run, run_usage=p.format_usage())

    run_parser = p
    p = sub.add_parser("request-run", parents=[common], help="ask for a real-money run (an HTTP bank, with sign-in)")
    p.add_argument("batch_id", type=int)
    for action in run_parser._actions:
        if action.dest in RUN_FLAGS:
            p._add_action(action)
    p.set_defaults(handler=cmd_request_run)

    p = sub.add_parser("approve", parents=[common], help="approve (or --reject) someone else's request for a run")
    p.add_argument("approval_id", type=int)
    p.add_argument("--reject", metavar="REASON", help="reject it, saying why")
    p.set_defaults(handler=cmd_approve)

    p = sub.add_parser("approvals", parents=[common], help="requests for real-money runs, newest first")
    p.add_argument("--status", choices=[s.value for s in ApprovalStatus])
    p.set_defaults(handler=cmd_approvals)

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

    p = sub.add_parser(
        "cancel",
        parents=[common],
        help="cancel an INTERRUPTED run (its unfinished trades); through a server, a running one stops",
    )
    p.add_argument("run_id", type=int)
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("in-doubt", parents=[common], help="a run's bookings in doubt (the bank's status could not "
                       "settle them)")  # fmt: skip
    p.add_argument("run_id", type=int)
    p.set_defaults(handler=cmd_in_doubt)

    p = sub.add_parser("settle", parents=[common], help="settle bookings in doubt by hand, with what the bank "
                       "confirmed (approvers)")  # fmt: skip
    p.add_argument("run_id", type=int)
    p.add_argument("--booked", type=int, nargs="+", default=[], metavar="ROW",
                   help="rows the bank booked: they end SUCCESS with the quote they were sent with")  # fmt: skip
    p.add_argument("--not-booked", type=int, nargs="+", default=[], metavar="ROW",
                   help="rows the bank has no booking of: they end FAILED (TIMEOUT_UNKNOWN) with the note")  # fmt: skip
    p.add_argument("--note", required=True, help="what the bank confirmed (its reference, who at the bank)")
    p.add_argument("--propose", action="store_true", help="propose it for another approver to confirm (needed for "
                   "a run against an HTTP bank on a server with sign-in)")  # fmt: skip
    p.set_defaults(handler=cmd_settle)

    p = sub.add_parser("confirm-settlement", parents=[common], help="confirm (or --reject) someone else's proposed "
                       "settlement of bookings in doubt (approvers)")  # fmt: skip
    p.add_argument("settlement_id", type=int)
    p.add_argument("--reject", metavar="REASON", help="reject it instead, saying why")
    p.set_defaults(handler=cmd_confirm_settlement)

    p = sub.add_parser("settlements", parents=[common], help="proposed settlements of bookings in doubt waiting for "
                       "an approver's decision")  # fmt: skip
    p.set_defaults(handler=cmd_settlements)

    p = sub.add_parser(
        "export",
        parents=[common],
        help="a run's per-trade results (or, with --batch, a batch's trades as loaded) to CSV/XLSX/Parquet",
    )
    p.add_argument("run_id", type=int, nargs="?", help="the run (or name --batch instead)")
    p.add_argument("--batch", type=int, metavar="BATCH_ID", help="export this batch's trades as loaded, not a run's")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--unmask", action="store_true", help=UNMASK_HELP + "; the file name gets -UNMASKED")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("whatif", parents=[common], help="sweep success rates (and seeds) over a batch")
    p.add_argument("batch_id", type=int)
    p.add_argument("--success-rates", type=_rates, required=True, help="0.5,0.7,0.9 or START:STOP:STEP")
    p.add_argument("--seeds", type=int, default=1, help="replications per success rate (default 1)")
    p.add_argument("--seed", type=_seed, default=42, help="first seed (default 42)")
    p.add_argument("--name", help="sweep name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive, help="processes on this machine (default: cores, at most 4; "
                       "FXBATCH_DASK_ADDRESS's scheduler when set)")  # fmt: skip
    where.add_argument("--dask", metavar="ADDRESS", help="Dask scheduler, e.g. tcp://scheduler:8786")
    p.set_defaults(handler=cmd_whatif)

    p = sub.add_parser("sweeps", parents=[common], help="list sweeps")
    p.add_argument("--batch", type=int, metavar="BATCH_ID")
    p.set_defaults(handler=cmd_sweeps)

    p = sub.add_parser("sweep", parents=[common], help="a stored sweep (scenarios and summary)")
    p.add_argument("sweep_id", type=int)
    p.set_defaults(handler=cmd_sweep)

    p = sub.add_parser("cancel-sweep", parents=[common], help="stop a what-if sweep running in the server "
                       "(nothing of it is stored)")  # fmt: skip
    p.add_argument("sweep_id", type=int)
    p.set_defaults(handler=cmd_cancel_sweep)

    p = sub.add_parser("promote", parents=[common], help="turn a sweep scenario into a full run")
    p.add_argument("sweep_id", type=int)
    p.add_argument("scenario", type=int)
    p.add_argument("--progress", action="store_true")
    p.set_defaults(handler=cmd_promote)

    p = sub.add_parser("compare", parents=[common], help="compare runs side by side")
    p.add_argument("run_ids", type=int, nargs="+")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser("ledger", parents=[common], help="the simulated bank's booked deals")
    p.add_argument("--run", type=int, metavar="RUN_ID")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.set_defaults(handler=cmd_ledger)

    p = sub.add_parser("backup", parents=[common], help="a consistent copy of the database (restore: copy it back)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the backup file, e.g. backups/fxbatch.duckdb")
    p.add_argument("--force", action="store_true", help="replace the backup file if it exists")
    p.set_defaults(handler=cmd_backup)

    p = sub.add_parser("audit", parents=[common], help="the audit trail: who did what, when (admins)")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    a = audit_sub.add_parser("verify", parents=[common], help="check the hash chain; exit 1 at the first bad row")
    a.set_defaults(handler=cmd_audit)
    a = audit_sub.add_parser("list", parents=[common], help="audit rows, newest first")
    a.add_argument("--limit", type=_positive, default=50, help="rows to show (default 50)")
    a.add_argument("--action", help="only this action (sign-in, load, correct, run, retry, promote, cancel, resume, "
                   "settle, settle.propose, settle.confirm, settle.reject, delete, export, unmask, run.request, run.approve, run.reject, role.grant, role.revoke, "
                   "token.create, token.revoke, backup)")  # fmt: skip
    a.add_argument("--actor", help="only this user")
    a.set_defaults(handler=cmd_audit)
    return parser


def _whole(least: int, words: str) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least`` ("'x' is not <words>" otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not {words}")
        return value

    return parse


_count = _whole(0, "a whole number of 0 or more")
_positive = _whole(1, "a positive whole number")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "handler", None) is cmd_run and args.batch_id is None and args.approval is None:
            raise BadArgument("the following arguments are required: batch_id (or --approval ID)", args.run_usage)
    except BadArgument as exc:
        if "--json" in argv:
            json.dump({"error": {"code": "BAD_ARGUMENT", "message": exc.message}}, sys.stdout)
            sys.stdout.write("\n")
        else:
            sys.stderr.write(exc.usage)
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    args.json = getattr(args, "json", False)
    try:
        return _dispatch(args)
    except BrokenPipeError:  # `... | head`: the reader left; nothing more to say
        sys.stderr.close()
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        args.max_rejections_shown = settings.max_rejections_shown
        with Workbench.open(
            args.db, settings, seed_sample=getattr(args, "seed_sample", False), server=args.server
        ) as wb:
            code = args.handler(wb, args)
    except FxBatchError as exc:
        if args.json:
            json.dump({"error": exc.to_dict()}, sys.stdout)
            sys.stdout.write("\n")
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except pydantic.ValidationError as exc:
        message = invalid_values(exc)[0]
        if args.json:
            json.dump({"error": {"code": "BAD_SETTING", "message": message}}, sys.stdout)
            sys.stdout.write("\n")
        print(f"error: {message}", file=sys.stderr)
        return 2
    return int(code or 0)
