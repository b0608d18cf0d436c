"""``create_api(get_workbench)``: the fxbatch HTTP API as a FastAPI app, mounted under ``/api``.

Routes are declared as ``/v1/...`` inside the app: the server mounts it with
``Mount("/api", app=create_api(...))``, so the outside paths are ``/api/v1/...``, the docs
``/api/docs`` and the schema ``/api/openapi.json``. Routes that query DuckDB are plain ``def``s
and run in FastAPI's threadpool (each worker thread has its own cursor); uploads and the events
stream are ``async`` and never block the event loop.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI

from fxbatch.api import batches, problems, review, runs, team, whatif
from fxbatch.api.deps import WB
from fxbatch.api.schemas import Health
from fxbatch.workbench import Workbench

_health = APIRouter(tags=["server"])


def _version() -> str:
    try:
        return importlib.metadata.version("fxbatch")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree without installing
        return "unknown"


@_health.get("/v1/health", response_model=Health, summary="The server is up, and which database it holds")
def health(wb: WB) -> Health:
    return Health(db=str(wb.settings.db.resolve()), version=_version(), schema_version=wb.schema_version())


def _problems_as_problem_json(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The schema with error answers under application/problem+json (FastAPI files a response
    model under the route's JSON media type)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for answer in operation.get("responses", {}).values():
                        content = answer.get("content", {})
                        if content.get("application/json", {}).get("schema", {}).get("$ref", "").endswith("/Problem"):
                            content[problems.PROBLEM] = content.pop("application/json")
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def create_api(get_workbench: Callable[[], Workbench]) -> FastAPI:
    """The API over the Workbench ``get_workbench()`` returns (called per request: the server
    opens the one Workbench in its lifespan and hands out that one)."""
    app = FastAPI(
        title="fxbatch API",
        version=_version(),
        summary="Load FX trade batches, run them through the bank, follow and review the runs.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.get_workbench = get_workbench
    problems.install(app)
    for router in (_health, batches.router, runs.router, review.router, whatif.router, team.router):
        app.include_router(router)
    app.openapi = _problems_as_problem_json(app)  # type: ignore[method-assign]
    return app
