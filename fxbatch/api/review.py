"""Reviewing runs: the trades page, one trade, failures, analytics, exports (of a run, a batch, the ledger), comparisons."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from fxbatch.analytics import TradeFilter
from fxbatch.api.deps import BIG, INT32, WB, BatchId, RunId
from fxbatch.api.problems import PROBLEM_RESPONSES
from fxbatch.api.schemas import Failures
from fxbatch.api.tables import TABLE_RESPONSES, jsonable_row, table_response
from fxbatch.masking import export_name
from fxbatch.models import FailureCode, TradeStatus
from fxbatch.moneyview import RunMoney
from fxbatch.tablejson import records

router = APIRouter(tags=["review"], responses=PROBLEM_RESPONSES)

Format = Literal["csv", "xlsx", "parquet"]
MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "parquet": "application/vnd.apache.parquet",
}
Unmask = Annotated[bool, Query(description="Show account numbers in full (default: last 4 digits).")]
Limit = Annotated[int, Query(ge=0, le=BIG, description="Rows at most.")]
Offset = Annotated[int, Query(ge=0, le=BIG, description="Rows skipped first.")]
Ids = list[Annotated[int, Field(ge=0, le=INT32)]]
_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file, as an attachment; X-Row-Count says how many rows it holds.",
        "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in MEDIA.values()},
    }
}


class Analytic(StrEnum):
    outcome_counts = "outcome_counts"
    failure_pareto = "failure_pareto"
    outcomes_by = "outcomes_by"
    notional_by_outcome = "notional_by_outcome"
    notional_by = "notional_by"
    income_by = "income_by"
    latency_histogram = "latency_histogram"
    throughput = "throughput"
    filter_choices = "filter_choices"


@router.get("/v1/runs/{run_id}/trades", responses=TABLE_RESPONSES, summary="A page of a run's trades")
def run_trades(
    request: Request,
    run_id: RunId,
    wb: WB,
    status: Annotated[list[TradeStatus], Query(description="Only these statuses (repeatable).")] = [],  # noqa: B006
    reason: Annotated[list[FailureCode], Query(description="Only these failure codes (repeatable).")] = [],  # noqa: B006
    pair: Annotated[str | None, Query(description="Only this currency pair, e.g. USD/ZAR.")] = None,
    client: Annotated[str | None, Query(description="Only this client CIF.")] = None,
    search: Annotated[str | None, Query(description="Trade id or reference containing this text.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    unmask: Unmask = False,
) -> Response:
    """Filtered as on the run page; the number of trades the filters match is in X-Total-Count."""
    filters = TradeFilter(
        statuses=[s.value for s in status], failure_codes=[r.value for r in reason], pair=pair, client=client,
        text=search,
    )  # fmt: skip
    page, total = wb.run_trades_page(run_id, filters, limit=limit, offset=offset, unmask=unmask)
    return table_response(request, page, headers={"X-Total-Count": str(total)})


@router.get("/v1/runs/{run_id}/trades/{row}", summary="One trade of a run, with its timeline")
def trade_detail(
    run_id: RunId,
    row: Annotated[int, PathParam(ge=0, le=INT32, description="The trade's row in its file.")],
    wb: WB,
    unmask: Unmask = False,
) -> dict[str, Any]:
    return jsonable_row(wb.trade_detail(run_id, row, unmask=unmask))


@router.get("/v1/runs/{run_id}/money", response_model=RunMoney, summary="A run's money in ZAR")
def run_money(run_id: RunId, wb: WB) -> RunMoney:
    """Notional booked, failed, cancelled and still to go, spread income and income lost (ZAR at mid)."""
    return wb.run_money(run_id)


@router.get("/v1/runs/{run_id}/failures", response_model=Failures, summary="Why a run's trades failed")
def failures(run_id: RunId, wb: WB, limit: Annotated[int, Query(ge=0, le=BIG)] = 100) -> Response:
    """The batch-error details: failure reasons with counts (most frequent first) and the failed trades."""
    reasons = wb.failure_pareto(run_id)
    trades, total = wb.run_trades_page(run_id, TradeFilter(statuses=[TradeStatus.FAILED.value]), limit=limit)
    return JSONResponse({"reasons": records(reasons), "trades": records(trades), "total_failed": total})


@router.get(
    "/v1/runs/{run_id}/analytics/{name}",
    responses=TABLE_RESPONSES,
    summary="A run's analytics table (filter_choices: a JSON object)",
)
def analytics(
    request: Request,
    run_id: RunId,
    name: Analytic,
    wb: WB,
    by: Annotated[
        Literal["pair", "client"], Query(description="outcomes_by, income_by, notional_by: group by.")
    ] = "pair",
    top: Annotated[int, Query(ge=1, le=10_000, description="outcomes_by, income_by, notional_by: groups shown.")] = 10,
    bins: Annotated[int, Query(ge=1, le=10_000, description="latency_histogram: bins.")] = 30,
    failed: Annotated[bool, Query(description="notional_by: rank by failed notional.")] = False,
) -> Response:
    if name is Analytic.filter_choices:
        return JSONResponse(wb.run_filter_choices(run_id))
    tables = {
        Analytic.outcome_counts: lambda: wb.outcome_counts(run_id),
        Analytic.failure_pareto: lambda: wb.failure_pareto(run_id),
        Analytic.outcomes_by: lambda: wb.outcomes_by(run_id, by, top),
        Analytic.notional_by_outcome: lambda: wb.notional_by_outcome(run_id),
        Analytic.notional_by: lambda: wb.notional_by(run_id, by, top, failed=failed),
        Analytic.income_by: lambda: wb.income_by(run_id, by, top),
        Analytic.latency_histogram: lambda: wb.latency_histogram(run_id, bins),
        Analytic.throughput: lambda: wb.throughput(run_id),
    }
    return table_response(request, tables[name]())


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(1024 * 1024):
            yield chunk


def _file(write: Callable[[Path], int], filename: str, fmt: Format) -> Response:
    """Write the export into a private folder, keep it open, remove the folder, stream the open file:
    nothing is left on disk, even when the client goes away mid-download."""
    directory = Path(tempfile.mkdtemp(prefix="fxbatch-export-"))
    try:
        path = directory / filename
        rows = write(path)
        handle = path.open("rb")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Content-Length": str(os.fstat(handle.fileno()).st_size),
        "X-Row-Count": str(rows),
    }
    return StreamingResponse(_chunks(handle), media_type=MEDIA[fmt], headers=headers)


@router.get("/v1/runs/{run_id}/export", responses=_FILE_RESPONSES, summary="A run's per-trade results as a file")
def export_run(run_id: RunId, wb: WB, format: Format = "csv", unmask: Unmask = False) -> Response:
    """Account numbers are masked unless ``unmask=true``; then the file is named ``run-N-UNMASKED.<format>``."""
    name = export_name(f"run-{run_id}.{format}", unmask=unmask)
    return _file(lambda path: wb.export_run(run_id, path, unmask=unmask), name, format)


@router.get("/v1/batches/{batch_id}/export", responses=_FILE_RESPONSES, summary="A batch's trades as loaded, as a file")
def export_batch(batch_id: BatchId, wb: WB, format: Format = "csv", unmask: Unmask = False) -> Response:
    """Account numbers are masked unless ``unmask=true``; then the file is named ``batch-N-UNMASKED.<format>``."""
    name = export_name(f"batch-{batch_id}.{format}", unmask=unmask)
    return _file(lambda path: wb.export_batch(batch_id, path, unmask=unmask), name, format)


@router.get("/v1/batches/{batch_id}/rejections:export", responses=_FILE_RESPONSES,
            summary="A batch's rejections as a file")  # fmt: skip
def export_rejections(batch_id: BatchId, wb: WB, format: Format = "csv", unmask: Unmask = False) -> Response:
    """A rejected account is masked unless ``unmask=true``; then the file is named ``batch-N-rejections-UNMASKED.<format>``."""
    name = export_name(f"batch-{batch_id}-rejections.{format}", unmask=unmask)
    return _file(lambda path: wb.export_rejections(batch_id, path, unmask=unmask), name, format)


@router.get("/v1/ledger", responses=_FILE_RESPONSES, summary="The simulated bank's booked deals as a file")
def ledger(
    wb: WB,
    run_id: Annotated[int | None, Query(ge=0, le=INT32, description="Only this run's deals.")] = None,
    format: Format = "csv",
) -> Response:
    if run_id is not None:
        wb.run_summary(run_id)  # an unknown run is a 404, not an empty file
    name = f"ledger-run-{run_id}.{format}" if run_id is not None else f"ledger.{format}"
    return _file(lambda path: wb.export_ledger(path, run_id), name, format)


@router.get("/v1/compare", responses=TABLE_RESPONSES, summary="Runs side by side")
def compare(request: Request, wb: WB, run_ids: Annotated[Ids, Query(min_length=1, max_length=1000)]) -> Response:
    return table_response(request, wb.whatif.compare(list(run_ids)))


@router.get("/v1/compare/differing", responses=TABLE_RESPONSES, summary="Trades whose outcome differs")
def differing(
    request: Request,
    wb: WB,
    run_a: Annotated[int, Query(ge=0, le=INT32)],
    run_b: Annotated[int, Query(ge=0, le=INT32)],
    limit: Limit = 1000,
) -> Response:
    return table_response(request, wb.whatif.differing_trades(run_a, run_b, limit))
