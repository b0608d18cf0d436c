"""Upload: a spreadsheet in, checked at once; map columns, correct rejected rows, then create the batch."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from fxbatch import FxBatchError, Workbench
from fxbatch.ingest.layout import FIELDS, guess_fields
from fxbatch.models import CheckReport, LoadResult
from pages.common import REJECTION_TABLE, get_workbench, show_error

SHOWN_REJECTIONS = 5000
FIX_ROWS = 500  # rejected rows offered for correction at once (the counts cover the whole file)
IGNORE = "(ignore)"


def _state(file_id: str) -> dict[str, Any]:
    """This upload's working state; a new file starts afresh."""
    state: dict[str, Any] | None = st.session_state.get("upload_state")
    if state is None or state["file_id"] != file_id:
        state = {"file_id": file_id, "map": None, "fixes": {}, "version": 0, "check": None, "created": None}
        st.session_state["upload_state"] = state
    return state


@contextmanager
def _as_file(uploaded: UploadedFile) -> Iterator[Path]:
    """The upload as a file under its own name (fxbatch's messages name the file they read)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (Path(uploaded.name).name or "upload.csv")
        path.write_bytes(uploaded.getvalue())
        yield path


def _checked(wb: Workbench, uploaded: UploadedFile, sheet: str | None, state: dict[str, Any]) -> Any:
    """The file's CheckReport (or the FxBatchError refusing it), computed once per input."""
    key = (sheet, json.dumps(state["map"], sort_keys=True), json.dumps(state["fixes"], sort_keys=True))
    if state["check"] is None or state["check"][0] != key:
        with st.spinner(f"Checking {uploaded.name}…"), _as_file(uploaded) as path:
            try:
                outcome: CheckReport | FxBatchError = wb.check(
                    path,
                    sheet=sheet,
                    column_map=state["map"],
                    fixes=state["fixes"] or None,
                    display_name=uploaded.name,
                    limit=FIX_ROWS,
                )
            except FxBatchError as exc:
                outcome = exc
        state["check"] = (key, outcome)
    return state["check"][1]


def _restart(state: dict[str, Any], **changes: Any) -> None:
    state.update(changes, version=state["version"] + 1)  # new editor keys: the grids start from the new check
    st.rerun()


def _mapping(headers: list[str], column_map: dict[str, str], state: dict[str, Any], expanded: bool) -> None:
    with st.expander("Column mapping", expanded=expanded, icon=":material/swap_horiz:"):
        st.caption(
            "Which field each column of the file holds. Pick a field for a column whose header was not "
            f"recognised, or {IGNORE} to leave a column out, then apply."
        )
        table = pd.DataFrame({"file column": headers, "field": [column_map.get(h, IGNORE) for h in headers]})
        edited = st.data_editor(
            table,
            key=f"map_grid_{state['version']}",
            hide_index=True,
            disabled=["file column"],
            column_config={
                "file column": "File column",
                "field": st.column_config.SelectboxColumn("Field", options=[IGNORE, *FIELDS], required=True),
            },
        )
        if state["fixes"]:
            st.caption("Applying a new mapping discards the row corrections made so far.")
        if st.button("Apply mapping", key="apply_map", icon=":material/check:"):
            mapping = {
                str(h): ("" if f == IGNORE else str(f))
                for h, f in zip(edited["file column"], edited["field"], strict=True)
            }
            _restart(state, map=mapping, fixes={})


def _cell(value: object) -> str | None:
    text = None if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    return text if text and text.strip() else None


def _corrections(report: CheckReport, state: dict[str, Any]) -> None:
    fields = [f for f in FIELDS if f in report.column_map.values()]
    shown = report.rejected_rows
    st.caption(
        "Edit the cells, then re-validate: corrected rows go through every check again and join the batch "
        "when they pass. The file itself is not changed."
        + (
            f" Showing the first {len(shown):,} of {report.rejected:,} rejected rows."
            if report.rejected > len(shown)
            else ""
        )
    )
    if report.fixed:
        passing = [r for r in report.fixed if r not in report.fixed_still_rejected]
        text = f"{len(passing):,} corrected row(s) now pass"
        if report.fixed_still_rejected:
            text += "; still rejected: row " + ", ".join(map(str, report.fixed_still_rejected))
        st.info(text + ".", icon=":material/edit_note:")
    if not shown:
        return
    table = pd.DataFrame(
        [{"row": r.row, "problems": "; ".join(r.problems), **{f: r.values.get(f) for f in fields}} for r in shown]
    )
    key = f"fix_grid_{state['version']}"
    st.data_editor(
        table,
        key=key,
        hide_index=True,
        disabled=["row", "problems"],
        column_config={
            "row": st.column_config.NumberColumn("Row", format="%d", help="Row in the uploaded file", width="small"),
            "problems": st.column_config.TextColumn("Why it was rejected", width="medium"),
            **{f: st.column_config.TextColumn(f) for f in fields},
        },
    )
    edits: dict[Any, dict[str, Any]] = st.session_state.get(key, {}).get("edited_rows", {})
    c1, c2 = st.columns([1, 3])
    if c1.button("Re-validate", key="revalidate", disabled=not edits, icon=":material/refresh:"):
        fixes = {int(k): dict(v) for k, v in state["fixes"].items()}
        for index, changed in edits.items():
            row = int(table.iloc[int(index)]["row"])
            fixes.setdefault(row, {}).update({str(f): _cell(v) for f, v in changed.items() if f in fields})
        _restart(state, fixes=fixes)
    if state["fixes"] and c2.button("Discard corrections", key="discard_fixes"):
        _restart(state, fixes={})


def _result(result: LoadResult) -> None:
    st.success(
        f"Batch {result.batch_id} '{result.name}' created ({result.layout.value} layout).",
        icon=":material/check_circle:",
    )
    if result.previously_loaded_as:
        st.warning(
            "This exact file was loaded before as batch "
            + ", ".join(str(b) for b in result.previously_loaded_as)
            + ". Both batches are kept.",
            icon=":material/content_copy:",
        )
    _counts(result.rows, result.accepted, result.rejected, result.ignored)
    if result.fixed:
        st.caption("Loaded with your corrections: row " + ", ".join(map(str, result.fixed)))
    st.page_link("pages/batches.py", label="Run it from the Batches page", icon=":material/play_arrow:")
    if result.rejections:
        st.subheader("Rejected rows")
        shown = [r.model_dump(mode="json") for r in result.rejections[:SHOWN_REJECTIONS]]
        st.dataframe(shown, hide_index=True, width="stretch", **REJECTION_TABLE)
        if len(result.rejections) > SHOWN_REJECTIONS:
            st.caption(
                f"Showing the first {SHOWN_REJECTIONS:,} of {len(result.rejections):,} rejections; "
                "download them all from the Batches page."
            )


def _counts(rows: int, accepted: int, rejected: int, ignored: int) -> None:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Data rows", rows)
    c2.metric("Accepted", accepted)
    c3.metric("Rejected", rejected)
    c4.metric("Ignored (blank)", ignored)


def main() -> None:
    st.title("Upload trades")
    wb = get_workbench()
    if wb is None:
        return
    st.write(
        "CSV (comma, semicolon, tab or pipe), XLSX or Parquet; the template layout or the legacy desk "
        "layout (Client CIF, Amount ZAR, Account Number, Spread, CurPair)."
    )
    template = wb.settings.rates_file.parent / "template.xlsx"
    if template.exists():
        st.download_button("Download the template", template.read_bytes(), file_name="fxbatch_template.xlsx")
    uploaded = st.file_uploader("Trade spreadsheet", type=["csv", "txt", "xlsx", "xls", "parquet"], key="upload")
    c1, c2 = st.columns(2)
    name = c1.text_input("Batch name", placeholder="defaults to the file name", key="batch_name")
    sheet = c2.text_input("Sheet (workbooks only)", placeholder="first sheet", key="sheet") or None
    if uploaded is None:
        return
    state = _state(uploaded.file_id)
    st.caption(f"{uploaded.name} ({uploaded.size:,} bytes) is ready; nothing is stored until you create the batch.")
    if state["created"] is not None:
        _result(state["created"])
        return
    outcome = _checked(wb, uploaded, sheet, state)
    if isinstance(outcome, FxBatchError):
        show_error(outcome)
        headers = getattr(outcome, "headers", None)
        if headers:
            _mapping(headers, guess_fields(headers, state["map"]), state, expanded=True)
        return
    report: CheckReport = outcome
    st.subheader(f"Checked: {report.layout.value} layout")
    _counts(report.rows, report.accepted, report.rejected, report.ignored)
    _mapping(report.headers, report.column_map, state, expanded=bool(report.ignored_columns))
    if report.rejected:
        problems, fix = st.tabs([f"Rejections ({report.rejected:,} rows)", "Correct rejected rows"])
        with problems:
            st.dataframe(
                [r.model_dump(mode="json") for r in report.rejections],
                hide_index=True,
                width="stretch",
                **REJECTION_TABLE,
            )
            if report.rejected > len(report.rejected_rows):
                st.caption(f"The problems of the first {len(report.rejected_rows):,} rejected rows.")
        with fix:
            _corrections(report, state)
    if st.button(
        f"Create batch with {report.accepted:,} trade(s)",
        type="primary",
        key="create",
        disabled=report.accepted == 0,
        icon=":material/add_task:",
    ):
        with _as_file(uploaded) as path:
            try:
                state["created"] = wb.load(
                    path,
                    name=name or None,
                    sheet=sheet,
                    column_map=state["map"],
                    fixes=state["fixes"] or None,
                    display_name=uploaded.name,
                )
            except FxBatchError as exc:
                show_error(exc)
                return
        st.rerun()


main()
