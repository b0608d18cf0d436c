"""Fixtures of the integration tests: the API over real HTTP and the upload spool (test_api*.py),
the bank simulator service (test_banksim_service.py, test_http_bank.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fxbatch import Workbench
from tests.integration.api_helpers import api_client
from tests.integration.banksim_helpers import Service


@pytest.fixture
def api(wb: Workbench) -> Iterator[httpx.Client]:
    """An httpx client of the API (at /api/v1) served over real HTTP on ``wb``."""
    with api_client(wb) as client:
        yield client


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder uploads are spooled to (only this test's)."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def service(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Service]:
    """A bank simulator service, started (with the arguments of an indirect parameter, if any)."""
    svc = Service(tmp_path, *getattr(request, "param", ()))
    try:
        svc.start()
        yield svc
    finally:
        svc.kill()
