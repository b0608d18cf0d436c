"""The words people read: statuses and headers in plain English, and Streamlit's toolbar kept minimal."""

from __future__ import annotations

import tomllib
from pathlib import Path

from fxbatch.labels import (
    FIELD_LABELS,
    RUN_STATUS_LABELS,
    batch_status_label,
    field_label,
    run_status_label,
    stage_label,
    trade_status_label,
)
from fxbatch.models import FailureCode, RunStatus, TradeStatus

CONFIG = Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml"


def test_every_run_status_has_words_and_partial_reads_as_completed_with_failures() -> None:
    assert set(RUN_STATUS_LABELS) == {s.value for s in RunStatus}
    assert run_status_label(RunStatus.PARTIAL) == "Completed with failures"
    assert run_status_label("PENDING") == "Not started"
    assert [run_status_label(s) for s in ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED", "RUNNING")] == [
        "Completed", "Failed", "Cancelled", "Interrupted", "Running",
    ]  # fmt: skip


def test_a_batch_never_run_reads_as_loaded_and_otherwise_as_its_run() -> None:
    assert batch_status_label("LOADED") == "Loaded"
    assert batch_status_label(RunStatus.PARTIAL) == "Completed with failures"


def test_trade_statuses_read_as_the_chart_outcomes() -> None:
    assert trade_status_label(TradeStatus.SUCCESS) == "Succeeded"
    assert trade_status_label("PENDING") == "Not started"
    assert all(trade_status_label(s) != s.value for s in TradeStatus)
    assert [stage_label(s) for s in ("EXECUTING", "QUOTED", "SUCCESS")] == ["Executing", "Quoted", "Succeeded"]


def test_field_labels_are_words_and_reason_columns_name_the_reason() -> None:
    assert field_label("client_cif") == "Client CIF"
    assert field_label("reason:INSUFFICIENT_FUNDS") == "Failed: insufficient funds"
    assert field_label("some_new_field") == "Some new field"
    for code in FailureCode:
        assert "_" not in field_label(f"reason:{code.value}")
    assert all("_" not in label for label in FIELD_LABELS.values())


def test_streamlit_toolbar_is_minimal_so_no_deploy_button_shows() -> None:
    config = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    assert config["client"]["toolbarMode"] == "minimal"
