"""The simulator's HTTP face: a FastAPI app with the bank's paths, answers and refusals.

The routes carry the wire models for ``/docs``, but each reads its raw body and validates it
itself: a refusal is the bank's envelope (HTTP 200, resultCode 1, ``validationErrors`` naming
each field), never FastAPI's 422. Every API answer waits out the simulated latency from the
request's arrival (``asyncio.sleep``); a share of calls gets a bare 503 before anything is done,
and a booking's answer may be lost after the deal is booked (the answer starts, then the
connection drops).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fxbatch.bank.http import wire
from fxbatch.banksim.checks import Refusal, StrictCreateQuoteRequest, as_dealer, parse
from fxbatch.banksim.service import Simulator
from fxbatch.models import FAILURES, FailureCode

MAX_BODY = 64 * 1024
JSON = "application/json"
_CANONICAL = {(wire.API + op).lower(): wire.API + op for op in wire.OPERATIONS}
_OK = wire.Result.success()
_NOT_AUTHORISED = wire.Result.refusal(
    FAILURES[FailureCode.NOT_AUTHORISED].result_code, FailureCode.NOT_AUTHORISED.value,
    "Bearer token missing, unknown or expired",
)  # fmt: skip


class LostAnswer(Response):
    """An answer that starts (with its Content-Length) and never ends: the server then closes the
    connection, and the caller sees a transport error after the deal was booked."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})


class LostAnswerFilter(logging.Filter):
    """uvicorn logs an answer that never completed as an error: here it is the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


class _TooLarge(Exception):
    pass


class Gate:
    """ASGI middleware: API paths matched without regard to case, and bodies over ``max_body``
    refused with 413 (by Content-Length before reading, or as a chunked body grows)."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        canonical = _CANONICAL.get(scope["path"].lower())
        if canonical is not None and canonical != scope["path"]:
            scope = {**scope, "path": canonical, "raw_path": canonical.encode()}
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit():  # the HTTP parser refuses any other
            if int(length) > self.max_body:
                await _too_large(send, self.max_body)
            else:
                await self.app(scope, receive, send)
            return
        started, seen = False, 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await _too_large(send, self.max_body)


class Dispatch:
    """ASGI middleware: a POST to one of the API operations goes straight to its handler.

    FastAPI still owns those routes (``/docs``, and any other method gets its 405), but its
    router, dependency solving and exception middleware cost about 0.1 ms a call, measured in
    ``make bench``'s HTTP figure, where the simulator shares two cores with the client. An error
    in a handler still reaches Starlette's server-error middleware (a 500), as through FastAPI.
    """

    def __init__(self, app: ASGIApp, handlers: dict[str, Callable[[Request], Awaitable[Response]]]) -> None:
        self.app = app
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)


async def _too_large(send: Send, limit: int) -> None:
    body = f"request body over {limit // 1024} KiB".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def envelope(answer: wire.Answer, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """An answer model as the bank sends it: no nulls, and no empty validationErrors."""
    exclude = None if answer.result.validationErrors else {"result": {"validationErrors"}}
    body = answer.model_dump_json(exclude_none=True, exclude=exclude).encode()
    return Response(body, status_code=status, media_type=JSON, headers=headers)


Handler = Callable[[bytes, wire.ResponseHeader, str | None], Awaitable[Response]]


class BankApi:
    """The five operations, each: body -> wire request -> desk -> wire answer."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.desk = sim.desk
        self._hanging = False  # said once, on the first booking held (--hang-after-bookings)

    async def call(self, request: Request, handler: Handler) -> Response:
        """Faults, authorisation and latency around one API call."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self.sim.faults.latency_s
        if self.sim.faults.error():
            response: Response = Response(b"service unavailable", 503, media_type="text/plain")
        else:
            header = wire.ResponseHeader(transactionId=next(self.sim.txn_ids))
            holder = self.sim.tokens.holder(request.headers.get("authorization"))
            if holder is None:
                answer = wire.Answer(header=header, result=_NOT_AUTHORISED)
                response = envelope(answer, 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            else:
                try:
                    body = await request.body()
                except ClientDisconnect:  # the caller left (or was timed out): nobody to answer
                    return Response(status_code=400)
                response = await handler(body, header, holder.dealer)
        left = due - loop.time()
        if left > 0:
            await asyncio.sleep(left)
        return response

    async def create_quote(self, body: bytes, header: wire.ResponseHeader, dealer: str | None) -> Response:
        req = as_dealer(parse(StrictCreateQuoteRequest, body), dealer)
        out = req if isinstance(req, Refusal) else await self.desk.create_quote(req, header.transactionId)
        if isinstance(out, Refusal):
            return envelope(wire.CreateQuoteAnswer(header=header, result=out.result()), out.status)
        return envelope(wire.CreateQuoteAnswer(header=header, result=_OK, payload=out))

    async def book_deal(self, body: bytes, header: wire.ResponseHeader, dealer: str | None) -> Response:
        if self.sim.faults.hung():
            if not self._hanging:
                self._hanging = True
                print(f"banksim: {self.sim.faults.bookings_taken} bookings answered; every later one is held "
                      "unanswered (--hang-after-bookings)", file=sys.stderr, flush=True)  # fmt: skip
            await (
                asyncio.get_running_loop().create_future()
            )  # held until the service stops (not when the caller leaves)
        req = as_dealer(parse(wire.BookDealRequest, body), dealer)
        out = req if isinstance(req, Refusal) else await self.desk.book_deal(req, header.transactionId)
        if isinstance(out, Refusal):
            return envelope(wire.BookDealAnswer(header=header, result=out.result()), out.status)
        response = envelope(wire.BookDealAnswer(header=header, result=_OK))
        if out.lost or (out.fresh and self.sim.faults.drop()):
            return LostAnswer(response.body)
        return response

    async def cancel_quote(self, body: bytes, header: wire.ResponseHeader, dealer: str | None) -> Response:
        req = as_dealer(parse(wire.QuoteRequest, body), dealer)
        out = req if isinstance(req, Refusal) else await self.desk.cancel_quote(req, header.transactionId)
        return envelope(
            wire.CancelQuoteAnswer(header=header, result=_OK if out is None else out.result()),
            200 if out is None else out.status,
        )

    async def latest_quote(self, body: bytes, header: wire.ResponseHeader, dealer: str | None) -> Response:
        req = as_dealer(parse(wire.QuoteRequest, body), dealer)
        out = req if isinstance(req, Refusal) else await self.desk.latest_quote(req)
        if isinstance(out, Refusal):
            return envelope(wire.LatestQuoteAnswer(header=header, result=out.result()), out.status)
        return envelope(wire.LatestQuoteAnswer(header=header, result=_OK, payload=out))

    async def txn_status(self, body: bytes, header: wire.ResponseHeader, dealer: str | None) -> Response:
        req = as_dealer(parse(wire.TxnStatusRequest, body), dealer)
        out = req if isinstance(req, Refusal) else await self.desk.txn_status(req)
        if isinstance(out, Refusal):
            return envelope(wire.TxnStatusAnswer(header=header, result=out.result()), out.status)
        return envelope(wire.TxnStatusAnswer(header=header, result=_OK, transaction=out))


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {JSON: {"schema": ref}}}}


_FORM_FIELDS = ("client_id", "client_secret", "scope", "username", "password", "refresh_token")
_TOKEN_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["password", "client_credentials", "refresh_token"]},
                        **{n: {"type": "string"} for n in _FORM_FIELDS},
                    },
                }
            }
        },
    }
}
_REQUESTS = (wire.CreateQuoteRequest, wire.BookDealRequest, wire.QuoteRequest, wire.TxnStatusRequest)


def create_app(sim: Simulator) -> FastAPI:
    """The ASGI app of one simulator (whoever made the simulator closes it)."""
    app = FastAPI(
        title="Bank simulator: BBFTS trading channel",
        description="The bank's trading API as fxbatch's wire models describe it (DOMAIN.md section 3).",
        version="1",
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    api = BankApi(sim)
    hot: dict[str, Callable[[Request], Awaitable[Response]]] = {}
    app.add_middleware(Dispatch, handlers=hot)
    app.add_middleware(Gate, max_body=MAX_BODY)  # outside Dispatch: its limits and paths hold for all

    @app.get("/health", summary="Liveness")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.post(
        wire.TOKEN_PATH, summary="OAuth2 token (password, client_credentials or refresh_token grant)",
        openapi_extra=_TOKEN_FORM, responses={200: {"model": wire.TokenAnswer}, 400: {"model": wire.TokenError},
                                              401: {"model": wire.TokenError}},
    )  # fmt: skip
    async def token(request: Request) -> Response:
        status, body = sim.tokens.answer(await request.body(), request.headers.get("authorization"))
        headers = {"WWW-Authenticate": 'Basic realm="banksim"'} if status == 401 else None
        return _json(body, status, {"Cache-Control": "no-store", **(headers or {})})

    operations: list[tuple[str, type[BaseModel], type[BaseModel], Handler]] = [
        (wire.CREATE_QUOTE, wire.CreateQuoteRequest, wire.CreateQuoteAnswer, api.create_quote),
        (wire.BOOK_DEAL, wire.BookDealRequest, wire.BookDealAnswer, api.book_deal),
        (wire.CANCEL_QUOTE, wire.QuoteRequest, wire.CancelQuoteAnswer, api.cancel_quote),
        (wire.LATEST_QUOTE, wire.QuoteRequest, wire.LatestQuoteAnswer, api.latest_quote),
        (wire.TXN_STATUS, wire.TxnStatusRequest, wire.TxnStatusAnswer, api.txn_status),
    ]
    for op, request_model, answer_model, handler in operations:
        hot[wire.API + op] = endpoint = _endpoint(api, handler)
        app.add_api_route(
            wire.API + op, endpoint, methods=["POST"], summary=op, operation_id=op,
            openapi_extra=_body_schema(request_model), response_class=Response,
            responses={200: {"model": answer_model}, 401: {"model": wire.Answer}, 503: {"description": "bare 503"}},
        )  # fmt: skip

    @app.post(wire.API + "{op:path}", include_in_schema=False)
    async def unknown(op: str) -> Response:
        header = wire.ResponseHeader(transactionId=next(sim.txn_ids))
        return envelope(wire.Answer(header=header, result=wire.Result.refusal(404, "NOT_FOUND", f"no operation {op}")), 404)  # fmt: skip

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _, defs = models_json_schema(
                [(m, "validation") for m in _REQUESTS], ref_template="#/components/schemas/{model}"
            )
            found = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, model_schema in defs.get("$defs", {}).items():
                found.setdefault(name, model_schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _endpoint(api: BankApi, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await api.call(request, handler)

    return endpoint
