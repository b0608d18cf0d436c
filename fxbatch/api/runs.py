"""``/v1/runs`` (and starting one with ``POST /v1/batches/{id}/runs``): start, follow, cancel, resume, and
settle bookings in doubt by hand (at once, or proposed by one person and confirmed by another)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from fxbatch.api.deps import INT32, WB, BatchId, RunId, api_url, server_registry
from fxbatch.api.events import SSE, run_events
from fxbatch.api.problems import PROBLEM_RESPONSES, Problem
from fxbatch.api.schemas import Rejection, ResumeOptions, RunAccepted, RunOptions, SettleRequest
from fxbatch.api.tables import TABLE_RESPONSES, table_response
from fxbatch.models import RunProgress, RunStatus, RunSummary, RunView
from fxbatch.settlements import Settlement
from fxbatch.workbench import Workbench

router = APIRouter(tags=["runs"], responses=PROBLEM_RESPONSES)

_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "The batch has a run executing, or the run's state refuses it."}
}


def run_object(summary: RunSummary, snap: RunProgress | None) -> dict[str, Any]:
    """The CLI's ``show --json`` object and ``progress``: the live figures while the run executes, else null.

    ``snap`` must be taken before ``summary`` is read: a run's record becomes final before its
    progress leaves RUNNING, so a final record never goes with live progress.
    """
    body = summary.to_json()
    executing = snap is not None and snap.status is RunStatus.RUNNING and summary.status is RunStatus.RUNNING
    body["progress"] = snap.model_dump(mode="json") if executing and snap is not None else None
    return body


def read_run(wb: Workbench, run_id: int) -> dict[str, Any]:
    snap = wb.progress(run_id)
    return run_object(wb.run_summary(run_id), snap)


def accepted(request: Request, run_id: int) -> Response:
    url = api_url(request, f"/v1/runs/{run_id}")
    return JSONResponse({"run_id": run_id, "url": url}, status_code=202, headers={"Location": url})


@router.post(
    "/v1/batches/{batch_id}/runs",
    status_code=202,
    response_model=RunAccepted,
    summary="Start a run of a batch",
    responses=_CONFLICT,
    tags=["batches"],
)
def start_run(request: Request, batch_id: BatchId, wb: WB, options: RunOptions | None = None) -> Response:
    """Start a run in the background (the old ``start_batch``) and answer at once with its id;
    follow it with ``GET /runs/{id}`` or ``/runs/{id}/events``."""
    given = options.model_dump(exclude_none=True) if options else {}
    approval = given.pop("approval_id", None)
    if "registry_file" in given:
        given["registry_file"] = server_registry(wb, given["registry_file"])
    job = wb.start_run(batch_id, approval=approval, **given)
    return accepted(request, job.run_id)


@router.get("/v1/runs", response_model=list[RunView], summary="List runs")
def list_runs(
    wb: WB, batch_id: Annotated[int | None, Query(ge=0, le=INT32, description="Only this batch's runs.")] = None
) -> Response:
    live = {p.run_id: p for p in wb.active_runs()}
    return JSONResponse([run_object(s, live.get(s.run_id)) for s in wb.runs(batch_id)])


@router.get("/v1/runs/{run_id}", response_model=RunView, summary="One run, with its live progress")
def get_run(run_id: RunId, wb: WB) -> Response:
    return JSONResponse(read_run(wb, run_id))


@router.get(
    "/v1/runs/{run_id}/events",
    summary="Follow a run (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"description": "Events whose `data:` is the run object as JSON.", "content": {SSE: {}}}},
)
async def run_events_stream(run_id: RunId, wb: WB) -> StreamingResponse:
    """One event at once, then on every progress change and at least once a second while the run
    executes; the final run object (final status or INTERRUPTED) is the last, then the stream ends."""
    first = await run_in_threadpool(read_run, wb, run_id)  # an unknown run is a 404, not an empty stream
    return StreamingResponse(
        run_events(wb, run_id, first, read_run),
        media_type=SSE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/v1/runs/{run_id}/cancel", response_model=RunView, summary="Cancel a run", responses=_CONFLICT)
def cancel_run(run_id: RunId, wb: WB) -> Response:
    """An executing run stops after the trades in hand (the rest end CANCELLED); an INTERRUPTED
    run has its unfinished trades CANCELLED, once the bank has settled any booking it left in flight
    (a booking the bank still has PENDING keeps the run INTERRUPTED). That asking goes on in the
    background: the answer is the run as it stands, RUNNING with its progress until the bank has
    answered (follow it like any run)."""
    wb.cancel(run_id, wait=False)
    return JSONResponse(read_run(wb, run_id))


@router.post(
    "/v1/runs/{run_id}/resume", status_code=202, response_model=RunAccepted, summary="Resume a run", responses=_CONFLICT
)
def resume_run(request: Request, run_id: RunId, wb: WB, options: ResumeOptions | None = None) -> Response:
    """Go on with an INTERRUPTED run in the background."""
    wb.start_resume(run_id, bank_url=options.bank_url if options else None)
    return accepted(request, run_id)


@router.get("/v1/runs/{run_id}/in-doubt", responses=TABLE_RESPONSES, summary="A run's bookings in doubt")
def bookings_in_doubt(request: Request, run_id: RunId, wb: WB) -> Response:
    """Trades whose booking was asked for and never answered, which the bank's status could not
    settle (it stayed PENDING, or the bank could not say): row, trade, client, pair, side, amount,
    value date, deal transaction id and the quote it was sent with. Empty when there are none."""
    return table_response(request, wb.bookings_in_doubt(run_id))


@router.post(
    "/v1/runs/{run_id}/settle", response_model=RunView, summary="Settle bookings in doubt by hand", responses=_CONFLICT
)
def settle_by_hand(run_id: RunId, wb: WB, body: SettleRequest) -> Response:
    """An approver records what the bank's dealers said of bookings in doubt of an INTERRUPTED run:
    the ``booked`` rows end SUCCESS with the quote they were sent with, the ``not_booked`` rows end
    FAILED (TIMEOUT_UNKNOWN) with the note. Nothing is sent to the bank. The run ends once nothing
    else is left, else it stays INTERRUPTED (resume or cancel it). Answers the run as it stands.

    On a server with login, a run against an HTTP bank is refused here (403): its settlement needs
    two people (``POST /v1/runs/{id}/settlements``, then ``POST /v1/settlements/{id}:confirm``)."""
    wb.settle_by_hand(run_id, booked=body.booked, not_booked=body.not_booked, note=body.note)
    return JSONResponse(read_run(wb, run_id))


SettlementId = Annotated[int, Path(ge=0, le=INT32, description="A proposed settlement's id.")]


@router.post(
    "/v1/runs/{run_id}/settlements", status_code=201, response_model=Settlement,
    summary="Propose settling bookings in doubt by hand", responses=_CONFLICT,
)  # fmt: skip
def propose_settlement(request: Request, run_id: RunId, wb: WB, body: SettleRequest) -> Response:
    """Record what the bank's dealers said of bookings in doubt, for an approver other than you to
    confirm (which applies it, as ``POST .../settle`` does) or reject. Bound to the bookings as they
    are in doubt now: void once one of them is settled or sent to the bank again."""
    found = wb.propose_settlement(run_id, booked=body.booked, not_booked=body.not_booked, note=body.note)
    url = api_url(request, f"/v1/settlements/{found.settlement_id}")
    return JSONResponse(found.model_dump(mode="json"), status_code=201, headers={"Location": url})


@router.get("/v1/runs/{run_id}/settlements", response_model=list[Settlement], summary="A run's proposed settlements")
def run_settlements(run_id: RunId, wb: WB) -> list[Settlement]:
    """Newest first; a pending one whose bookings are no longer in doubt as proposed is void."""
    return wb.settlements(run_id)


@router.get("/v1/settlements", response_model=list[Settlement], summary="Settlements waiting for a decision")
def awaiting_settlements(wb: WB) -> list[Settlement]:
    """Proposed settlements of every run that wait for an approver's decision (not void), newest first."""
    return wb.awaiting_settlements()


@router.get("/v1/settlements/{settlement_id}", response_model=Settlement, summary="One proposed settlement")
def get_settlement(settlement_id: SettlementId, wb: WB) -> Settlement:
    return wb.settlement(settlement_id)


@router.post(
    "/v1/settlements/{settlement_id}:confirm", response_model=RunView, summary="Confirm and apply a settlement",
    responses=_CONFLICT,
)  # fmt: skip
def confirm_settlement(settlement_id: SettlementId, wb: WB) -> Response:
    """An approver other than the proposer confirms it: it is applied; answers the run as it stands."""
    summary = wb.confirm_settlement(settlement_id)
    return JSONResponse(read_run(wb, summary.run_id))


@router.post(
    "/v1/settlements/{settlement_id}:reject", response_model=Settlement, summary="Reject a settlement, saying why",
    responses=_CONFLICT,
)  # fmt: skip
def reject_settlement(settlement_id: SettlementId, body: Rejection, wb: WB) -> Settlement:
    return wb.reject_settlement(settlement_id, body.reason)
