"""notebooks/what_if.ipynb runs top to bottom against a fresh database, so it never rots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "what_if.ipynb"


def execute_notebook() -> list[Any]:
    """Run notebooks/what_if.ipynb in a fresh kernel (its own process); every code cell's outputs."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jupyter_client/zmq internals, not our code
def test_the_what_if_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXBATCH_DB", str(tmp_path / "notebook.duckdb"))
    outputs = execute_notebook()
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 3, "the fan chart, the failure reasons and the comparison are drawn"
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "200 accepted, 0 rejected" in text
    assert (tmp_path / "notebook.duckdb").exists()
