"""``/v1/whatif``: sweeps run in the background in the server (``wb.whatif.start_sweep``), followed by polling.

A sweep's id is reserved as it starts so that ``POST`` can answer 202 with it at once. While it
runs, its job holds its (done, total), or the problem it ended with, or its cancel; once stored it
is read from the database like any other sweep.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from fxbatch.access import Role
from fxbatch.api.deps import INT32, WB, SweepId, api_url, server_registry
from fxbatch.api.problems import PROBLEM_RESPONSES, error_body, problem_body
from fxbatch.api.runs import accepted
from fxbatch.api.schemas import (
    PromoteRequest,
    RunAccepted,
    SweepAccepted,
    SweepCancelled,
    SweepDone,
    SweepFailed,
    SweepRunning,
    WhatIfRequest,
)
from fxbatch.errors import CancelledError, ConflictError, SettingsError
from fxbatch.whatif.models import SweepInfo
from fxbatch.workbench import SweepJob, Workbench

router = APIRouter(tags=["what-if"], responses=PROBLEM_RESPONSES)


def _check_request(request: WhatIfRequest) -> None:
    """What the library leaves to its caller: a varied setting with no value (SettingsError / 422)."""
    if any(not values for values in (request.variants or {}).values()):
        raise SettingsError("variants: every varied setting needs at least one value.")


def _server_registries(wb: Workbench, body: WhatIfRequest) -> WhatIfRequest:
    """The request with its client registries (the base's, or varied) found in the server's
    registry folder by file name (``server_registry``)."""
    update: dict[str, Any] = {}
    if body.base is not None and body.base.bank.registry_file is not None:
        bank = body.base.bank.model_copy(update={"registry_file": server_registry(wb, body.base.bank.registry_file)})
        update["base"] = body.base.model_copy(update={"bank": bank})
    if body.variants and "registry_file" in body.variants:
        found = [server_registry(wb, None if v is None else str(v)) for v in body.variants["registry_file"]]
        update["variants"] = {**body.variants, "registry_file": found}
    return body.model_copy(update=update) if update else body


@router.post("/v1/whatif", status_code=202, response_model=SweepAccepted, summary="Start a sweep")
def start_sweep(request: Request, body: WhatIfRequest, wb: WB) -> Response:
    """Check the sweep and run it in the background (``wb.whatif.start_sweep``); poll ``GET /whatif/{id}``."""
    wb.access.require(Role.ANALYST, "run a what-if sweep")  # a 403 now, not a failed sweep later
    wb.batch(body.batch_id)  # an unknown batch is a 404 now, not a failed sweep later
    body = _server_registries(wb, body)
    _check_request(body)
    job = wb.whatif.start_sweep(body.batch_id, body.success_rates, seeds=body.seeds, seed=body.seed, base=body.base,
                                variants=body.variants, name=body.name)  # fmt: skip
    sweep_id = job.sweep_id
    url = api_url(request, f"/v1/whatif/{sweep_id}")
    return JSONResponse({"sweep_id": sweep_id, "url": url}, status_code=202, headers={"Location": url})


@router.get("/v1/whatif", response_model=list[SweepInfo], summary="List stored sweeps")
def list_sweeps(
    wb: WB, batch_id: Annotated[int | None, Query(ge=0, le=INT32, description="Only this batch's sweeps.")] = None
) -> Response:
    return JSONResponse([s.model_dump(mode="json") for s in wb.whatif.sweeps(batch_id)])


def _job_view(job: SweepJob) -> dict[str, Any] | None:
    """A background sweep as the API shows it; None once it is stored (read from the database)."""
    sweep_id = job.sweep_id
    if job.running:
        return {"sweep_id": sweep_id, "status": "RUNNING", "done": job.done, "total": job.total}
    if isinstance(job.error, CancelledError):
        return {"sweep_id": sweep_id, "status": "CANCELLED", "done": job.done, "total": job.total,
                "detail": job.error.message}  # fmt: skip
    if job.error is None:
        return None
    if job.error.code == "INTERNAL_ERROR":  # a bug, logged with its traceback
        error = problem_body(500, "The sweep failed; the server's log has the details.", "INTERNAL_ERROR")
    else:
        error = error_body(job.error)
    return {"sweep_id": sweep_id, "status": "FAILED", "error": error}


@router.get(
    "/v1/whatif/{sweep_id}",
    response_model=SweepDone | SweepRunning | SweepFailed | SweepCancelled,
    summary="A sweep: RUNNING (done/total), DONE (the sweep), FAILED (a problem) or CANCELLED (nothing stored)",
)
def get_sweep(sweep_id: SweepId, wb: WB) -> Response:
    job = wb.whatif.sweep_job(sweep_id)
    view = _job_view(job) if job is not None else None
    if view is not None:
        return JSONResponse(view)
    return JSONResponse(wb.whatif.get(sweep_id).model_dump(mode="json") | {"status": "DONE"})


@router.post(
    "/v1/whatif/{sweep_id}/cancel", status_code=202, response_model=SweepAccepted, summary="Cancel a running sweep"
)
def cancel_sweep(request: Request, sweep_id: SweepId, wb: WB) -> Response:
    """Stop a sweep running in the server: the scenarios under way end, no other starts, nothing of
    it is stored. Answers at once; ``GET /whatif/{id}`` says CANCELLED once it has stopped. A sweep
    that has ended (stored, failed or cancelled) is a 409."""
    job = wb.whatif.sweep_job(sweep_id)
    if job is not None and job.error is not None:
        wb.access.require(Role.ANALYST, "cancel a what-if sweep")
        ended = "been cancelled" if isinstance(job.error, CancelledError) else "failed"
        raise ConflictError(f"Sweep {sweep_id} has {ended} already: there is nothing to cancel.")
    wb.whatif.cancel(sweep_id)
    url = api_url(request, f"/v1/whatif/{sweep_id}")
    return JSONResponse({"sweep_id": sweep_id, "url": url}, status_code=202, headers={"Location": url})


@router.post(
    "/v1/whatif/{sweep_id}/promote", status_code=202, response_model=RunAccepted, summary="Run a scenario in full"
)
def promote(request: Request, sweep_id: SweepId, body: PromoteRequest, wb: WB) -> Response:
    """Start a stored scenario as a full run with per-trade records; follow it as any run."""
    job = wb.whatif.start_promote(sweep_id, body.scenario)
    return accepted(request, job.run_id)
