"""Fixtures of the HTTP API tests (test_api*.py): the API over real HTTP, the upload spool."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fxbatch import Workbench
from tests.integration.api_helpers import api_client


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
