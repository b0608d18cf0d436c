"""``/v1/batches``: upload a file (or only check it), list, read and delete batches."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from fxbatch.api.deps import BIG, WB, BatchId, api_url
from fxbatch.api.problems import PROBLEM_RESPONSES, Problem, error_response, problem
from fxbatch.api.review import Unmask
from fxbatch.api.tables import TABLE_RESPONSES, table_response
from fxbatch.api.uploads import MB, CheckForm, Upload, UploadForm, form_openapi, parse_form, receive_upload
from fxbatch.errors import FxBatchError, UnusableFileError
from fxbatch.masking import mask_rejected_rows, mask_rejections
from fxbatch.models import BatchInfo, CheckReport, LoadResult
from fxbatch.workbench import Workbench

router = APIRouter(tags=["batches"], responses=PROBLEM_RESPONSES)

# A batch's rows come a page at a time unless more are asked for (a batch can have a million).
PAGE = 1000
Page = Annotated[int, Query(ge=0, le=BIG, description=f"Rows at most (default {PAGE:,}; ask for more with limit).")]
Offset = Annotated[int, Query(ge=0, le=BIG, description="Rows skipped first.")]
_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "The upload is over FXBATCH_API_MAX_UPLOAD_MB (problem+json)."},
    422: {"model": Problem, "description": "The file cannot be used, or a form field is bad (problem+json)."},
}


def _interrupted() -> Response:
    # Nobody reads this answer (the client left); it only ends the request cleanly.
    return problem(400, "The upload was interrupted before it finished; no batch was created.", "UPLOAD_INTERRUPTED")


def _load_options(form: UploadForm) -> dict[str, Any]:
    return {"sheet": form.sheet, "column_map": form.column_map, "fixes": form.fixes, "today": form.today}


async def _refused(wb: Workbench, upload: Upload, form: UploadForm, exc: UnusableFileError) -> Response:
    """The CLI's error, with the rejections when no row was valid (what a correcting client needs)."""
    if exc.code != "NO_VALID_ROWS":
        return error_response(exc)
    try:
        report = await run_in_threadpool(
            wb.check, upload.path, **_load_options(form), display_name=upload.filename,
            limit=wb.settings.max_rejections_shown,
        )  # fmt: skip
    except FxBatchError:
        return error_response(exc)
    report = _shown(wb, report, form, upload.filename)
    return error_response(
        exc,
        rejections=[r.model_dump(mode="json") for r in report.rejections],
        rejected_rows=[r.model_dump(mode="json") for r in report.rejected_rows],
    )


def _shown(wb: Workbench, report: CheckReport, form: UploadForm, filename: str) -> CheckReport:
    """The report as the API shows it: rejected accounts masked, as in every table, unless the form
    asks ``unmask`` (then the read is on the audit trail, as an unmasked table's is)."""
    if form.unmask:
        wb.note_unmasked(f"file:{filename}", view="check")
        return report
    return report.model_copy(
        update={
            "rejections": mask_rejections(report.rejections, False),
            "rejected_rows": mask_rejected_rows(report.rejected_rows, False),
        }
    )


@router.post(
    "/v1/batches",
    status_code=201,
    response_model=LoadResult,
    summary="Load a file as a new batch",
    openapi_extra=form_openapi(UploadForm),
    responses=_UPLOAD_ERRORS,
)
async def load_batch(request: Request, wb: WB) -> Response:
    """Validate the uploaded CSV/XLSX/Parquet file and store its good rows as a new batch: the
    CLI's ``load --json`` object (rejected rows are listed in it; the batch holds the rest)."""
    try:
        async with receive_upload(request, wb.settings.api_max_upload_mb * MB) as upload:
            form = parse_form(UploadForm, upload.fields)
            try:
                result: LoadResult = await run_in_threadpool(
                    wb.load, upload.path, name=form.name, **_load_options(form), display_name=upload.filename
                )
            except UnusableFileError as exc:
                return await _refused(wb, upload, form, exc)
    except ClientDisconnect:
        return _interrupted()
    location = api_url(request, f"/v1/batches/{result.batch_id}")
    # A rejected account number is masked, as in every table (GET .../rejections?unmask=true shows it).
    if form.unmask:
        wb.note_unmasked(f"batch:{result.batch_id}", view="load")
    else:
        result = result.model_copy(update={"rejections": mask_rejections(result.rejections, False)})
    return JSONResponse(result.summary(), status_code=201, headers={"Location": location})


@router.post(
    "/v1/batches:check",
    response_model=CheckReport,
    summary="Check a file without storing it",
    openapi_extra=form_openapi(CheckForm),
    responses=_UPLOAD_ERRORS,
)
async def check_batch(request: Request, wb: WB) -> Response:
    """What loading the file now would do: counts, the column mapping, and the first ``limit``
    rejected rows with their cell texts (to correct and check again with ``fixes``)."""
    try:
        async with receive_upload(request, wb.settings.api_max_upload_mb * MB) as upload:
            form = parse_form(CheckForm, upload.fields)
            assert isinstance(form, CheckForm)
            report: CheckReport = await run_in_threadpool(
                wb.check, upload.path, **_load_options(form), display_name=upload.filename, limit=form.limit
            )
            report = _shown(wb, report, form, upload.filename)
    except ClientDisconnect:
        return _interrupted()
    return JSONResponse(report.model_dump(mode="json"))


@router.get("/v1/batches", response_model=list[BatchInfo], summary="List batches")
def list_batches(wb: WB) -> Response:
    return JSONResponse([b.model_dump(mode="json") for b in wb.batches()])


@router.get("/v1/batches/{batch_id}", response_model=BatchInfo, summary="One batch")
def get_batch(batch_id: BatchId, wb: WB) -> Response:
    return JSONResponse(wb.batch(batch_id).model_dump(mode="json"))


@router.delete(
    "/v1/batches/{batch_id}",
    status_code=204,
    summary="Delete a batch",
    responses={409: {"model": Problem, "description": "A run of the batch is executing (problem+json)."}},
)
def delete_batch(batch_id: BatchId, wb: WB) -> Response:
    """Delete a batch and everything recorded about it (refused while one of its runs executes)."""
    wb.delete_batch(batch_id)
    return Response(status_code=204)


@router.get("/v1/batches/{batch_id}/trades", responses=TABLE_RESPONSES, summary="A batch's trades")
def batch_trades(
    request: Request, batch_id: BatchId, wb: WB, limit: Page = PAGE, offset: Offset = 0, unmask: Unmask = False
) -> Response:
    return table_response(request, wb.trades(batch_id, limit, offset, unmask=unmask))


@router.get("/v1/batches/{batch_id}/rejections", responses=TABLE_RESPONSES, summary="A batch's rejected rows")
def batch_rejections(
    request: Request, batch_id: BatchId, wb: WB, limit: Page = PAGE, offset: Offset = 0, unmask: Unmask = False
) -> Response:
    return table_response(request, wb.rejections(batch_id, limit, offset, unmask=unmask))


@router.get("/v1/batches/{batch_id}/corrections", responses=TABLE_RESPONSES, summary="Cells corrected at load")
def batch_corrections(
    request: Request, batch_id: BatchId, wb: WB, limit: Page = PAGE, offset: Offset = 0, unmask: Unmask = False
) -> Response:
    return table_response(request, wb.corrections(batch_id, limit, offset, unmask=unmask))
