"""Every error of the API as RFC 9457 ``application/problem+json``, in one place.

An fxbatch error keeps its ``code`` and its message (``detail``: what the CLI prints after
``error:``); request validation names the field at fault; unknown paths and methods under the
API answer problems too, never HTML. Anything unexpected is a 500 problem without internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from fxbatch import errors

PROBLEM = "application/problem+json"
TYPE_BASE = "urn:fxbatch:problem:"  # one stable identifier per code (RFC 9457 type); nothing to fetch
log = logging.getLogger("fxbatch.api")

# Most specific first: DatabaseLockedError is a StoreError.
_STATUS: tuple[tuple[type[errors.FxBatchError], int], ...] = (
    (errors.NotSignedInError, 401),
    (errors.ForbiddenError, 403),
    (errors.NotFoundError, 404),
    (errors.ConflictError, 409),
    (errors.CancelledError, 409),
    (errors.UnusableFileError, 422),
    (errors.BadFixError, 422),
    (errors.SettingsError, 422),
    (errors.DatabaseLockedError, 503),
    (errors.StoreError, 500),
    (errors.ServerError, 502),
)
_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "TOO_LARGE", 422: "BAD_REQUEST"}


class Problem(BaseModel):
    """An error answer (RFC 9457) carrying fxbatch's error code; extra members add context."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A URI naming the kind of problem.")
    title: str = Field(description="The HTTP status phrase.")
    status: int
    detail: str = Field(description="What went wrong, as the CLI prints it.")
    code: str = Field(description="fxbatch's stable error code (e.g. NOT_FOUND, UNUSABLE_FILE).")


class ProblemError(Exception):
    """Raised by the API's own checks (a too large upload, a broken form): answered as this problem."""

    def __init__(self, status: int, detail: str, code: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.extensions = extensions


def problem_body(status: int, detail: str, code: str, **extensions: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code.lower().replace("_", "-"),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update({k: v for k, v in extensions.items() if v is not None})
    return body


def problem(
    status: int, detail: str, code: str, *, headers: Mapping[str, str] | None = None, **extensions: Any
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, detail, code, **extensions), status_code=status, headers=headers, media_type=PROBLEM
    )


def status_of(exc: errors.FxBatchError) -> int:
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 400)


def error_body(exc: errors.FxBatchError, **extensions: Any) -> dict[str, Any]:
    """The problem an fxbatch error makes (also what a failed sweep reports)."""
    if isinstance(exc, errors.UnusableFileError) and exc.headers:
        extensions.setdefault("headers", list(exc.headers))
    # The error's class in fxbatch's tree (errors.py), so that a client raises the same class.
    extensions.setdefault("kind", type(exc).__name__)
    return problem_body(status_of(exc), exc.message, exc.code, **extensions)


def error_response(exc: errors.FxBatchError, **extensions: Any) -> JSONResponse:
    body = error_body(exc, **extensions)
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM)


def _field(loc: Sequence[Any]) -> str:
    """``("query", "limit")`` -> ``limit``; ``("body", "bank", "x")`` -> ``bank.x``; the body itself -> ``body``."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "request"


def _message(error: Mapping[str, Any]) -> str:
    if error.get("type") == "extra_forbidden":
        return "is not a field of this request"
    if error.get("type") == "missing":
        return "is required"
    return str(error.get("msg", "is not valid")).removeprefix("Value error, ")


def validation_problem(
    items: Sequence[Mapping[str, Any]], code: str = "BAD_REQUEST", *, flat_body: bool = False
) -> JSONResponse:
    """422 naming each field at fault: ``limit: Input should be greater than or equal to 0``.

    ``flat_body``: the errors are a settings model's, built from the request's body, whose bank
    settings are at its top level (``success_rate``, not ``bank.success_rate``)."""
    listed = []
    for e in items:
        loc = list(e.get("loc") or ())
        if e.get("type") == "json_invalid" and loc[:1] == ["body"] and all(isinstance(p, int) for p in loc[1:]):
            # ("body", 0): the body as a whole
            listed.append({"field": "body", "location": "body", "message": f"is not valid JSON ({_message(e)})"})
            continue
        if flat_body:
            if loc[:1] == ["bank"]:
                loc = loc[1:]
            loc = ["body", *loc]
        listed.append({"field": _field(loc), "location": str((loc or ["request"])[0]), "message": _message(e)})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in listed) or "The request is not valid."
    return problem(422, detail, code, errors=listed)


async def _on_fxbatch_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.FxBatchError)
    answer = error_response(exc)
    if isinstance(exc, errors.NotSignedInError):
        answer.headers["WWW-Authenticate"] = 'Bearer realm="fxbatch"'
    return answer


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem(exc.status, exc.detail, exc.code, **exc.extensions)


async def _on_request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(list(exc.errors()))


async def _on_model_validation(request: Request, exc: Exception) -> JSONResponse:
    """A settings model refused a value given in the request (e.g. success_rate 2): the CLI's BAD_SETTING."""
    assert isinstance(exc, pydantic.ValidationError)
    return validation_problem(list(exc.errors()), code=errors.SettingsError.code, flat_body=True)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        detail = f"There is no API path {request.url.path}; the API is described at its /docs page."
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}."
    else:
        detail = str(exc.detail)
    return problem(status, detail, _CODES.get(status, "HTTP_ERROR"), headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return problem(500, "The server failed to answer this request; its log has the details.", "INTERNAL_ERROR")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.FxBatchError, _on_fxbatch_error)
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(pydantic.ValidationError, _on_model_validation)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


# OpenAPI: the error answers every route may give (app.py files them under application/problem+json).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": text}
    for status, text in (
        (404, "Unknown id (problem+json)"),
        (422, "Bad input (problem+json naming the field)"),
    )
}
