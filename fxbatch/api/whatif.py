"""``/v1/whatif``: sweeps run in a background thread of the server, followed by polling.

A sweep's id is reserved before it starts so that ``POST`` can answer 202 with it at once. While
it runs, a small in-memory registry holds its (done, total), or the problem it ended with, or its
cancel; once stored it is read from the database like any other sweep.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from dataclasses import dataclass
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Query, Request, Response
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
from fxbatch.errors import CancelledError, ConflictError, FxBatchError, SettingsError, invalid_values
from fxbatch.models import RunConfig
from fxbatch.whatif.models import SweepInfo
from fxbatch.whatif.sweep import SweepGrid, check_size
from fxbatch.workbench import Workbench

router = APIRouter(tags=["what-if"], responses=PROBLEM_RESPONSES)
log = logging.getLogger("fxbatch.api")


@dataclass
class SweepState:
    total: int
    done: int = 0
    error: dict[str, Any] | None = None
    cancelled: str | None = None  # what the cancel said, once the sweep has stopped for it


class SweepRegistry:
    """Sweeps running (or failed) in this server: sweep id -> state. A stored sweep leaves it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[int, SweepState] = {}

    def get(self, sweep_id: int) -> SweepState | None:
        with self._lock:
            state = self._states.get(sweep_id)
            return SweepState(state.total, state.done, state.error, state.cancelled) if state is not None else None

    def start(self, wb: Workbench, sweep_id: int, request: WhatIfRequest, total: int) -> threading.Thread:
        with self._lock:
            self._states[sweep_id] = SweepState(total)
        # The request's context goes with it: the sweep acts as (and is checked as) the caller.
        thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._run, wb, sweep_id, request),
            name=f"fxbatch-sweep-{sweep_id}",
            daemon=True,
        )
        thread.start()
        return thread

    def _progress(self, sweep_id: int, done: int, total: int) -> None:
        with self._lock:
            self._states[sweep_id] = SweepState(total, done)

    def _run(self, wb: Workbench, sweep_id: int, request: WhatIfRequest) -> None:
        error: dict[str, Any] | None = None
        cancelled: str | None = None
        try:
            wb.whatif.sweep(
                request.batch_id, request.success_rates, seeds=request.seeds, seed=request.seed, base=request.base,
                variants=request.variants, name=request.name, sweep_id=sweep_id,
                on_progress=lambda done, total: self._progress(sweep_id, done, total),
            )  # fmt: skip
        except CancelledError as exc:
            cancelled = exc.message
        except FxBatchError as exc:
            error = error_body(exc)
        except pydantic.ValidationError as exc:
            error = problem_body(422, invalid_values(exc)[0], SettingsError.code)
        except Exception:
            log.exception("sweep %s failed", sweep_id)
            error = problem_body(500, "The sweep failed; the server's log has the details.", "INTERNAL_ERROR")
        with self._lock:
            if error is None and cancelled is None:
                self._states.pop(sweep_id, None)  # stored: read from the database from now on
            else:
                state = self._states.get(sweep_id)
                self._states[sweep_id] = SweepState(
                    state.total if state else 0, state.done if state else 0, error, cancelled
                )


def registry(request: Request) -> SweepRegistry:
    found: SweepRegistry = request.app.state.sweeps
    return found


Registry = Annotated[SweepRegistry, Depends(registry)]


def _scenario_count(request: WhatIfRequest) -> int:
    """How many scenarios the sweep has, checking every one as the sweep will (SettingsError / 422)."""
    seeds = request.seeds
    check_size(len(request.success_rates), seeds if isinstance(seeds, int) else len(seeds), request.variants)
    seed_list = list(range(request.seed, request.seed + seeds)) if isinstance(seeds, int) else seeds
    if any(not values for values in (request.variants or {}).values()):
        raise SettingsError("variants: every varied setting needs at least one value.")
    grid = SweepGrid(success_rates=request.success_rates, seeds=seed_list, base=request.base or RunConfig(),
                     variants=request.variants or {})  # fmt: skip
    return len(grid.scenarios())


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
def start_sweep(request: Request, body: WhatIfRequest, wb: WB, sweeps: Registry) -> Response:
    """Check the sweep, reserve its id and run it in the background; poll ``GET /whatif/{id}``."""
    wb.access.require(Role.ANALYST, "run a what-if sweep")  # a 403 now, not a failed sweep later
    wb.batch(body.batch_id)  # an unknown batch is a 404 now, not a failed sweep later
    body = _server_registries(wb, body)
    total = _scenario_count(body)
    sweep_id = wb.whatif.reserve_sweep_id()
    sweeps.start(wb, sweep_id, body, total)
    url = api_url(request, f"/v1/whatif/{sweep_id}")
    return JSONResponse({"sweep_id": sweep_id, "url": url}, status_code=202, headers={"Location": url})


@router.get("/v1/whatif", response_model=list[SweepInfo], summary="List stored sweeps")
def list_sweeps(
    wb: WB, batch_id: Annotated[int | None, Query(ge=0, le=INT32, description="Only this batch's sweeps.")] = None
) -> Response:
    return JSONResponse([s.model_dump(mode="json") for s in wb.whatif.sweeps(batch_id)])


def _state_view(sweep_id: int, state: SweepState) -> dict[str, Any]:
    if state.error is not None:
        return {"sweep_id": sweep_id, "status": "FAILED", "error": state.error}
    if state.cancelled is not None:
        return {"sweep_id": sweep_id, "status": "CANCELLED", "done": state.done, "total": state.total,
                "detail": state.cancelled}  # fmt: skip
    return {"sweep_id": sweep_id, "status": "RUNNING", "done": state.done, "total": state.total}


@router.get(
    "/v1/whatif/{sweep_id}",
    response_model=SweepDone | SweepRunning | SweepFailed | SweepCancelled,
    summary="A sweep: RUNNING (done/total), DONE (the sweep), FAILED (a problem) or CANCELLED (nothing stored)",
)
def get_sweep(sweep_id: SweepId, wb: WB, sweeps: Registry) -> Response:
    state = sweeps.get(sweep_id)
    if state is not None:
        return JSONResponse(_state_view(sweep_id, state))
    return JSONResponse(wb.whatif.get(sweep_id).model_dump(mode="json") | {"status": "DONE"})


@router.post(
    "/v1/whatif/{sweep_id}/cancel", status_code=202, response_model=SweepAccepted, summary="Cancel a running sweep"
)
def cancel_sweep(request: Request, sweep_id: SweepId, wb: WB, sweeps: Registry) -> Response:
    """Stop a sweep running in the server: the scenarios under way end, no other starts, nothing of
    it is stored. Answers at once; ``GET /whatif/{id}`` says CANCELLED once it has stopped. A sweep
    that has ended (stored, failed or cancelled) is a 409."""
    state = sweeps.get(sweep_id)
    if state is not None and (state.error is not None or state.cancelled is not None):
        wb.access.require(Role.ANALYST, "cancel a what-if sweep")
        ended = "failed" if state.error is not None else "been cancelled"
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
