"""What every route takes: the one Workbench, ids within DuckDB's INTEGER, the API's own URLs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path, Request

from fxbatch.workbench import Workbench

INT32 = 2**31 - 1
BIG = 2**62  # paging bounds: any count a table can have, and still a valid SQL literal


async def workbench(request: Request) -> Workbench:
    get: Callable[[], Workbench] = request.app.state.get_workbench
    return get()


WB = Annotated[Workbench, Depends(workbench)]
BatchId = Annotated[int, Path(ge=0, le=INT32, description="A batch id.")]
RunId = Annotated[int, Path(ge=0, le=INT32, description="A run id.")]
SweepId = Annotated[int, Path(ge=0, le=INT32, description="A sweep id.")]


def api_url(request: Request, path: str) -> str:
    """``/api/v1/runs/7`` for ``/v1/runs/7``: the prefix the app is mounted under is kept."""
    return f"{request.scope.get('root_path', '')}{path}"
