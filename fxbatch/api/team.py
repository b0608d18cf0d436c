"""The team's routes: who am I, four-eyes approvals, personal tokens, roles, and the audit trail.

``POST /v1/runs:request`` asks for a real-money run; ``POST /v1/approvals/{id}:approve`` and
``:reject`` decide it; the run then starts with ``POST /v1/batches/{id}/runs`` and its
``approval_id`` (or ``POST /v1/approvals/{id}:run``: exactly what was approved). Roles and the
audit trail are for admins; tokens are made on the Tokens page (shown once) and listed or
revoked here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from fxbatch.access import Role
from fxbatch.api.deps import INT32, WB, api_url, server_registry
from fxbatch.api.problems import PROBLEM_RESPONSES
from fxbatch.api.runs import accepted
from fxbatch.api.schemas import Rejection, RunAccepted, RunOptions
from fxbatch.api.tables import TABLE_RESPONSES, table_response
from fxbatch.approvals import Approval, ApprovalStatus

router = APIRouter(tags=["team"], responses=PROBLEM_RESPONSES)
ApprovalId = Annotated[int, Path(ge=0, le=INT32, description="An approval request's id.")]


class Me(BaseModel):
    name: str = Field(description="Your e-mail address (or the OS user, on a server without login).")
    role: Role | None
    via: str = Field(description="local (no login), sign-in or token.")
    login: bool = Field(description="Whether this server signs users in.")
    four_eyes: bool = Field(
        False, description="Whether real money needs a second person here (login, or a team's database)."
    )


class RunRequest(RunOptions):
    """A real-money run to approve: the batch and the run's options (as ``POST /batches/{id}/runs``)."""

    batch_id: int = Field(ge=0, le=INT32)


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = Field(description="The new role; null takes the role away.")


@router.get("/v1/me", response_model=Me, summary="Who the request acts as, and with which role")
def me(wb: WB) -> Me:
    who = wb.access.principal()
    return Me(name=who.name, role=who.role, via=who.via, login=wb.access.login, four_eyes=wb.access.four_eyes)


@router.post("/v1/runs:request", status_code=201, response_model=Approval, summary="Request a real-money run")
def request_run(request: Request, body: RunRequest, wb: WB) -> Response:
    """An analyst asks for a run against an HTTP bank; an approver other than them approves it."""
    given = body.model_dump(exclude_none=True)
    batch_id = given.pop("batch_id")
    given.pop("approval_id", None)
    if "registry_file" in given:
        given["registry_file"] = server_registry(wb, given["registry_file"])
    found = wb.request_run(batch_id, **given)
    url = api_url(request, f"/v1/approvals/{found.approval_id}")
    return JSONResponse(found.model_dump(mode="json"), status_code=201, headers={"Location": url})


@router.get("/v1/approvals", response_model=list[Approval], summary="Requests for real-money runs, newest first")
def list_approvals(wb: WB, status: ApprovalStatus | None = None) -> list[Approval]:
    return wb.approvals(status.value if status else None)


@router.get("/v1/approvals/{approval_id}", response_model=Approval, summary="One request")
def get_approval(approval_id: ApprovalId, wb: WB) -> Approval:
    return wb.approval(approval_id)


@router.post("/v1/approvals/{approval_id}:approve", response_model=Approval, summary="Approve a request")
def approve(approval_id: ApprovalId, wb: WB) -> Approval:
    return wb.approve(approval_id)


@router.post("/v1/approvals/{approval_id}:reject", response_model=Approval, summary="Reject a request, saying why")
def reject(approval_id: ApprovalId, body: Rejection, wb: WB) -> Approval:
    return wb.reject(approval_id, body.reason)


@router.post(
    "/v1/approvals/{approval_id}:run", status_code=202, response_model=RunAccepted, summary="Start the approved run"
)
def run_approved(request: Request, approval_id: ApprovalId, wb: WB) -> Response:
    return accepted(request, wb.start_approved(approval_id).run_id)


@router.get(
    "/v1/tokens",
    summary="Your personal API tokens (admins: everyone's with everyone=true)",
    responses=TABLE_RESPONSES,
)
def tokens(request: Request, wb: WB, everyone: bool = False) -> Response:
    return table_response(request, wb.access.tokens(everyone=everyone))


@router.delete("/v1/tokens/{token_id}", status_code=204, summary="Revoke a token")
def revoke_token(token_id: str, wb: WB) -> Response:
    wb.access.revoke_token(token_id)
    return Response(status_code=204)


@router.get("/v1/users", summary="Who has which role (admins)", responses=TABLE_RESPONSES)
def users(request: Request, wb: WB) -> Response:
    return table_response(request, wb.access.users())


@router.put("/v1/users/{email}", status_code=204, summary="Give a user a role, or take it away (admins)")
def set_role(email: str, body: RoleChange, wb: WB) -> Response:
    wb.access.set_role(email, body.role)
    return Response(status_code=204)


@router.get("/v1/audit", summary="The audit trail, newest first (admins)", responses=TABLE_RESPONSES)
def audit_trail(
    request: Request,
    wb: WB,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> Response:
    """JSON rows (``Accept: application/vnd.apache.arrow.stream`` for an Arrow table)."""
    frame = wb.audit_trail(actor=actor, action=action, since=since, until=until, limit=limit)
    return table_response(request, frame)


@router.get("/v1/audit/verify", summary="Check the audit trail's hash chain (admins)")
def audit_verify(wb: WB) -> dict[str, Any]:
    check = wb.verify_audit()
    return {**check.model_dump(), "message": check.message}
