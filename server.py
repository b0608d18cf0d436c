"""fxbatch server: the Streamlit UI and the HTTP API (/api/v1, docs at /api/docs) in one process.

``streamlit run server.py --server.address 127.0.0.1`` (what ``make run`` does) or
``uvicorn server:app --host 127.0.0.1 --port 8501``. The process owns the database: its lifespan
opens the one Workbench (the pages and the API share it), records the server's URL beside the
database file for the CLI and notebooks, and at shutdown removes the record and closes the
workbench (runs in progress stay resumable). See fxbatch/serving.py.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware
from starlette.routing import Mount

from fxbatch import FxBatchError
from fxbatch.api import create_api
from fxbatch.serving import Binding, Host, LoopbackOnly
from pages.common import app_settings, auth_section

HERE = Path(__file__).resolve().parent
# How Streamlit started this app (streamlit.config._server_mode): under `streamlit run` and
# App.run() Streamlit binds the socket from its server.address/server.port; under another ASGI
# server (uvicorn server:app) those options are not the binding, and LoopbackOnly checks each request.
STREAMLIT_BINDS = frozenset({"starlette-app", "starlette-app-direct"})


def streamlit_binding() -> Binding:
    """Where Streamlit listens (its server.address; empty = every interface), and the URL a
    process on this machine reaches it at."""
    from streamlit import config

    address = str(config.get_option("server.address") or "")
    port = int(config.get_option("server.port"))
    scheme = "https" if config.get_option("server.sslCertFile") else "http"
    name = address.strip()
    if name in ("", "0.0.0.0"):  # every interface: this machine reaches it on loopback
        name = "127.0.0.1"
    elif name == "::":
        name = "[::1]"
    elif ":" in name and not name.startswith("["):  # an IPv6 literal
        name = f"[{name}]"
    known = getattr(config, "_server_mode", None) in STREAMLIT_BINDS
    return Binding(address=address if known else None, url=f"{scheme}://{name}:{port}")


host = Host(settings=app_settings, binding=streamlit_binding, auth=auth_section)


@asynccontextmanager
async def lifespan(_app: object) -> AsyncIterator[None]:
    """The host's lifespan; a refusal at startup (binding, settings, a database held elsewhere) is
    said in one line on stderr before the ASGI server's traceback, and the server exits non-zero."""
    started = False
    try:
        async with host.lifespan():
            started = True
            if host.binding is not None and host.binding.address is None and host.url == host.binding.url:
                print(
                    f"fxbatch: recorded {host.url} beside the database for the CLI and notebooks (Streamlit's "
                    "server.port); if this server listens elsewhere, set FXBATCH_SERVER_URL.",
                    file=sys.stderr,
                    flush=True,
                )
            yield
    except FxBatchError as exc:
        if not started:
            print(f"fxbatch: the server did not start: {exc.message}", file=sys.stderr, flush=True)
        raise


app = st.App(
    HERE / "app.py",
    routes=[Mount("/api", app=create_api(host.workbench))],
    lifespan=lifespan,
    middleware=[Middleware(LoopbackOnly, allow=host.allow_unauthenticated)],
)
