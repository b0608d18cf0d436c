"""What every route takes: the one Workbench, ids within DuckDB's INTEGER, the API's own URLs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool

from fxbatch.access import Access, Principal, Role, act_as
from fxbatch.errors import ForbiddenError, NotSignedInError, SettingsError
from fxbatch.workbench import Workbench

INT32 = 2**31 - 1
BIG = 2**62  # paging bounds: any count a table can have, and still a valid SQL literal


async def workbench(request: Request) -> Workbench:
    """The one Workbench; on a server with login, only for a request with a valid personal API token
    whose owner has a role (401 / 403 otherwise), acting as that owner for the rest of the request."""
    get: Callable[[], Workbench] = request.app.state.get_workbench
    wb = get()
    if wb.access.login:
        # Set in the request's own task: the route (run in the threadpool with a copy of this
        # context) and everything it records act as the token's owner.
        act_as(await run_in_threadpool(_authenticated, wb.access, request.headers.get("authorization", "")))
    return wb


def _authenticated(access: Access, header: str) -> Principal:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotSignedInError(
            "This fxbatch server has login: send a personal API token as 'Authorization: Bearer <token>' "
            "(FXBATCH_TOKEN for the CLI and notebooks; make one on the server's Tokens page)."
        )
    who = access.authenticate(token)
    if who.role is None:
        admins = ", ".join(access.admins()) or "an admin"
        raise ForbiddenError(f"{who.name} has no role on this server yet: ask {admins} for one.")
    return who


WB = Annotated[Workbench, Depends(workbench)]
BatchId = Annotated[int, Path(ge=0, le=INT32, description="A batch id.")]
RunId = Annotated[int, Path(ge=0, le=INT32, description="A run id.")]
SweepId = Annotated[int, Path(ge=0, le=INT32, description="A sweep id.")]


def api_url(request: Request, path: str) -> str:
    """``/api/v1/runs/7`` for ``/v1/runs/7``: the prefix the app is mounted under is kept."""
    return f"{request.scope.get('root_path', '')}{path}"


_REGISTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]*\.csv", re.IGNORECASE)


def server_registry(wb: Workbench, name: str | None) -> str | None:
    """A run's client registry named over HTTP: a CSV file in the server's registry folder
    (``Settings.registry_dir``), by its file name, or by the path a stored run's config holds
    (the file in that folder). Anything else is refused, links that lead out of the folder too:
    a caller must not make the server read (or say whether there is) any file it can reach.

    A caller whose role may not start a run gets the name back unlooked-at: the workbench then
    refuses the call for the role (on the audit trail) before any registry is read, so only
    those who may run learn which files the folder holds."""
    if name is None or not wb.access.may(Role.ANALYST):
        return name
    folder = wb.settings.registry_folder().resolve()
    given = FilePath(name)
    bare = _REGISTRY_NAME.fullmatch(name) is not None and ".." not in name
    inside = (
        given.is_absolute() and given.parent.resolve() == folder and _REGISTRY_NAME.fullmatch(given.name) is not None
    )
    if not (bare or inside):
        raise SettingsError(
            f"registry_file {name!r}: give the file name of a client registry CSV in the server's registry folder "
            "(FXBATCH_REGISTRY_DIR), e.g. clients.csv, not a path."
        )
    path = folder / given.name
    if path.is_symlink() or not path.is_file() or path.resolve().parent != folder:
        raise SettingsError(
            f"registry_file {given.name!r}: the server's registry folder (FXBATCH_REGISTRY_DIR) has no such file."
        )
    return str(path)
