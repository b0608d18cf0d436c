"""Upload: a spreadsheet in, checked at once; map columns, correct rejected rows, then create the batch.

The file in hand lives in ``st.session_state`` under a key of the page's own, with its batch name,
sheet, mapping and corrections: Streamlit drops a widget's value (the uploaded file, the text
inputs, a grid's edits) whenever a run does not draw it, so a visit to another page would
otherwise lose the file and the work on it. A different file starts afresh; "Clear file" lets go.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any, cast

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from streamlit.runtime.uploaded_file_manager import UploadedFile

from fxbatch import FxBatchError, Workbench
from fxbatch.access import Role
from fxbatch.batches import MAX_DAYS_AHEAD, fingerprint
from fxbatch.ingest import rejected_rows_in_file_terms, rejections_in_file_terms
from fxbatch.ingest.layout import FIELDS, field_headers, guess_fields
from fxbatch.labels import field_label
from fxbatch.masking import ACCOUNT_FIELD, mask_account, mask_rejected_rows, mask_rejections
from fxbatch.models import CheckReport, Layout, LoadResult, Rejection
from fxbatch.money import zar_compact
from pages.common import REJECTION_TABLE, get_workbench, may, needs_role, show_error

SHOWN_REJECTIONS = 5000
FIX_ROWS = 500  # rejected rows offered for correction at once (the counts cover the whole file)
IGNORE = "(ignore)"
FILE = "upload_file"  # the file in hand and its state; not a widget key, so other pages leave it alone
CLEARED = "upload_cleared"  # files cleared so far: each clear gives the uploader a new (empty) key
# DOMAIN.md 2.2: the legacy sheet has no side column; CurPair implies it.
LEGACY_RULE = (
    "Legacy layout: CurPair names the currency the client sells first, so it gives the side. ZARUSD = the client "
    "sells ZAR and buys USD: pair USD/ZAR, side BUY. USDZAR = the client sells USD for ZAR: pair USD/ZAR, side SELL. "
    "The amount is Amount ZAR either way, and Spread is in pips."
)
INPUTS = ("batch_name", "sheet")  # text inputs whose values the file's state keeps under the same names
DATE = "trade_date"  # the date input's key and the file's state's (None there: today)


def _uploader_key() -> str:
    cleared = int(st.session_state.get(CLEARED, 0))
    return "upload" if cleared == 0 else f"upload_{cleared}"


def _clear_file() -> None:
    """Let the file go: its state, the inputs, and the uploader (a new key draws an empty one)."""
    for key in (FILE, *INPUTS, DATE):
        st.session_state.pop(key, None)
    st.session_state[CLEARED] = int(st.session_state.get(CLEARED, 0)) + 1


def _uploader_changed() -> None:
    if st.session_state.get(_uploader_key()) is None:  # the analyst removed the file from the uploader
        for key in (FILE, *INPUTS, DATE):
            st.session_state.pop(key, None)


@contextmanager
def _as_file(name: str, data: bytes) -> Iterator[Path]:
    """The upload as a file under its own name (fxbatch's messages name the file they read)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (Path(name).name or "upload.csv")
        path.write_bytes(data)
        yield path


def _file_state(uploaded: UploadedFile | None) -> dict[str, Any] | None:
    """The file in hand: the one just uploaded, else the one kept from before (the uploader is
    empty again after a visit to another page). A different file starts with a fresh state."""
    state: dict[str, Any] | None = st.session_state.get(FILE)
    if uploaded is None or (state is not None and state["upload_id"] == uploaded.file_id):
        return state
    data = uploaded.getvalue()
    with _as_file(uploaded.name, data) as path:
        digest = fingerprint(path)  # the batches' own fingerprint: the same file is the same digest
    if state is not None and (state["fingerprint"], state["name"]) == (digest, uploaded.name):
        state["upload_id"] = uploaded.file_id  # the same file chosen again: keep the work on it
        return state
    state = {
        "fingerprint": digest,
        "upload_id": uploaded.file_id,
        "name": uploaded.name,
        "data": data,
        "batch_name": "",
        "sheet": "",
        DATE: None,
        "map": None,
        "fixes": {},
        "pending": {},  # grid edits not yet re-validated: {row: {field: text}}
        "grid": None,  # (editor key, the pending edits the editor started from)
        "version": 0,
        "check": None,
        "created": None,
    }
    st.session_state[FILE] = state
    for key in INPUTS:  # the widgets are drawn below: they may still be set in this run
        st.session_state[key] = ""
    st.session_state.pop(DATE, None)
    return state


def _checked(wb: Workbench, state: dict[str, Any], sheet: str | None) -> CheckReport | FxBatchError:
    """The file's CheckReport (or the FxBatchError refusing it), computed once per input."""
    day = state[DATE] or wb.settings.trading_date()  # "today" is another day after midnight: checked again
    key = (sheet, json.dumps(state["map"], sort_keys=True), json.dumps(state["fixes"], sort_keys=True), day)
    if state["check"] is None or state["check"][0] != key:
        with st.spinner(f"Checking {state['name']}…"), _as_file(state["name"], state["data"]) as path:
            try:
                outcome: CheckReport | FxBatchError = wb.check(
                    path,
                    sheet=sheet,
                    column_map=state["map"],
                    fixes=state["fixes"] or None,
                    today=state[DATE],
                    display_name=state["name"],
                    limit=FIX_ROWS,
                )
            except FxBatchError as exc:
                outcome = exc
        state["check"] = (key, outcome)
    result: CheckReport | FxBatchError = state["check"][1]
    return result


def _loaded_as(wb: Workbench, digest: str) -> list[int]:
    """Batches made from this exact file (the fingerprint ``load`` stores and compares)."""
    return sorted(b.batch_id for b in wb.batches() if b.fingerprint == digest)


def _restart(state: dict[str, Any], **changes: Any) -> None:
    # New editor keys: the grids start from the new check.
    state.update(changes, version=state["version"] + 1, pending={}, grid=None)
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
                "field": st.column_config.SelectboxColumn(
                    "Field",
                    options=[IGNORE, *FIELDS],
                    required=True,
                    format_func=lambda f: f if f == IGNORE else field_label(str(f)),
                ),
            },
        )
        if state["fixes"] or state["pending"]:
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


def _fixed_note(report: CheckReport) -> None:
    """How the corrections re-validated so far fared."""
    if report.fixed:
        passing = [r for r in report.fixed if r not in report.fixed_still_rejected]
        text = f"{len(passing):,} corrected row(s) now pass"
        if report.fixed_still_rejected:
            text += "; still rejected: row " + ", ".join(map(str, report.fixed_still_rejected))
        st.info(text + ".", icon=":material/edit_note:")


def _corrections(report: CheckReport, state: dict[str, Any], unmask: bool) -> None:
    fields = [f for f in FIELDS if f in report.column_map.values()]
    headers = field_headers(report.column_map)
    shown = mask_rejected_rows(rejected_rows_in_file_terms(report.rejected_rows, report.column_map), unmask)
    st.caption(
        "Edit the cells, then re-validate: corrected rows go through every check again and join the batch "
        "when they pass. The file itself is not changed."
        + (
            f" Showing the first {len(shown):,} of {report.rejected:,} rejected rows."
            if report.rejected > len(shown)
            else ""
        )
    )
    _fixed_note(report)
    if not shown:
        return
    if not unmask:
        st.caption(
            "Account numbers show their last 4 digits: type a whole new number over one to correct it, "
            "or turn on Unmask accounts to see them in full."
        )
    # The toggle draws a new editor (its cells change), started from the edits made so far.
    key = f"fix_grid_{state['version']}" + ("_unmasked" if unmask else "")
    if key not in st.session_state or state["grid"] is None or state["grid"][0] != key:
        # A new editor (first drawn, or drawn again after a visit to another page, which dropped
        # its edits): it starts from the rejected rows with the edits not yet re-validated in.
        state["grid"] = (key, {row: dict(cells) for row, cells in state["pending"].items()})
    started: dict[int, dict[str, str | None]] = state["grid"][1]

    def cell_text(row: int, values: dict[str, str | None], f: str) -> str | None:
        edited = started.get(row, {})
        if f not in edited:
            return values.get(f)
        return edited[f] if unmask or f != ACCOUNT_FIELD else mask_account(edited[f])

    table = pd.DataFrame(
        [
            {"row": r.row, "problems": "; ".join(r.problems), **{f: cell_text(r.row, r.values, f) for f in fields}}
            for r in shown
        ]
    )
    st.data_editor(
        table,
        key=key,
        hide_index=True,
        disabled=["row", "problems"],
        column_config={
            "row": st.column_config.NumberColumn("Row", format="%d", help="Row in the uploaded file", width="small"),
            "problems": st.column_config.TextColumn("Why it was rejected", width="large"),
            **{f: st.column_config.TextColumn(headers.get(f, f), help=f"Field: {f}") for f in fields},
        },
    )
    edits: dict[Any, dict[str, Any]] = st.session_state.get(key, {}).get("edited_rows", {})
    pending = {row: dict(cells) for row, cells in started.items()}
    for index, changed in edits.items():
        row = int(table.iloc[int(index)]["row"])
        # A masked account left as shown is not a correction: only a new value typed over it is.
        typed = {
            str(f): _cell(v)
            for f, v in changed.items()
            if f in fields and not (f == ACCOUNT_FIELD and not unmask and _cell(v) == table.iloc[int(index)][f])
        }
        if typed:
            pending.setdefault(row, {}).update(typed)
    state["pending"] = pending
    c1, c2 = st.columns([1, 3])
    if c1.button("Re-validate", key="revalidate", disabled=not pending, icon=":material/refresh:"):
        fixes = {int(k): dict(v) for k, v in state["fixes"].items()}
        for row, cells in pending.items():
            fixes.setdefault(row, {}).update(cells)
        _restart(state, fixes=fixes)
    if (state["fixes"] or pending) and c2.button("Discard corrections", key="discard_fixes"):
        _restart(state, fixes={})


def _rejections(rejections: list[Rejection], column_map: dict[str, str], unmask: bool) -> None:
    """The problems as the file names its columns ("Ccy Pair", not currency_pair), accounts masked."""
    shown = rejections_in_file_terms(mask_rejections(rejections, unmask), column_map)
    st.dataframe(
        [r.model_dump(mode="json") for r in shown],
        hide_index=True,
        width="stretch",
        **cast(dict[str, Any], REJECTION_TABLE),
    )


def _result(result: LoadResult, unmask: bool) -> None:
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
        _rejections(result.rejections[:SHOWN_REJECTIONS], result.column_map, unmask)
        shown = min(SHOWN_REJECTIONS, len(result.rejections))
        if result.rejections_total > shown:
            st.caption(
                f"Showing the first {shown:,} of {result.rejections_total:,} rejections; "
                "download them all from the Batches page."
            )


def _unmask_toggle() -> bool:
    return st.toggle("Unmask accounts", key="upload_unmask", help="Account numbers show their last 4 digits unless on.")


def _counts(rows: int, accepted: int, rejected: int, ignored: int, notional_zar: float | None = None) -> None:
    """The file's rows by what loading does with them; at check time, the accepted rows' money too."""
    cols = st.columns(4 if notional_zar is None else 5)
    cols[0].metric("Data rows", f"{rows:,}")
    cols[1].metric("Accepted", f"{accepted:,}")
    cols[2].metric("Rejected", f"{rejected:,}")
    cols[3].metric("Ignored (blank)", f"{ignored:,}")
    if notional_zar is not None:
        cols[4].metric("Notional accepted", zar_compact(notional_zar),
                       help=f"R {notional_zar:,.2f}: the accepted trades in ZAR at mid")  # fmt: skip


def _file_bar(state: dict[str, Any], kept: bool) -> DeltaGenerator:
    """Which file the page works on, a way to let it go, and the status line (returned, to fill in
    once the page knows where the file stands)."""
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    c1.markdown(
        f"**{state['name']}** ({len(state['data']):,} bytes)"
        + (" · kept from your last visit to this page" if kept else "")
    )
    c2.button("Clear file", key="clear_file", on_click=_clear_file, icon=":material/close:")
    return st.empty()


def _create(
    wb: Workbench, state: dict[str, Any], report: CheckReport, sheet: str | None, status: DeltaGenerator
) -> None:
    pending = len(state["pending"])
    if pending:
        # A batch created now would leave these edits out without a word: re-validate (or discard) first.
        st.warning(
            f"Your edits to {pending:,} rejected row(s) are not checked yet: press Re-validate under "
            "Correct rejected rows (or Discard corrections), then create the batch.",
            icon=":material/edit_note:",
        )
    if not st.button(
        f"Create batch with {report.accepted:,} trade(s)",
        type="primary",
        key="create",
        disabled=report.accepted == 0 or bool(pending),
        icon=":material/add_task:",
    ):
        return
    with _as_file(state["name"], state["data"]) as path:
        try:
            state["created"] = wb.load(
                path,
                name=state["batch_name"] or None,
                sheet=sheet,
                column_map=state["map"],
                fixes=state["fixes"] or None,
                today=state[DATE],
                display_name=state["name"],
            )
        except FxBatchError as exc:
            status.caption(f"{state['name']} was not stored: see why below.")
            show_error(exc)
            return
    st.rerun()


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
    if not may(wb, Role.ANALYST):
        needs_role(wb, Role.ANALYST, "Loading a spreadsheet")
        return
    uploaded = st.file_uploader(
        "Trade spreadsheet",
        type=["csv", "txt", "xlsx", "xls", "parquet"],
        key=_uploader_key(),
        on_change=_uploader_changed,
    )
    state = _file_state(uploaded)
    if state is None:
        return
    status = _file_bar(state, kept=uploaded is None)
    created: LoadResult | None = state["created"]
    for key in INPUTS:
        if key not in st.session_state:  # dropped on another page: the file's state has it
            st.session_state[key] = state[key]
    desk_today = wb.settings.trading_date()
    if st.session_state.get(DATE) is None or st.session_state[DATE] < desk_today:  # a new file, or past midnight
        st.session_state[DATE] = max(state[DATE] or desk_today, desk_today)
    c1, c2, c3 = st.columns(3)
    state["batch_name"] = c1.text_input(
        "Batch name", placeholder=Path(state["name"]).stem, key="batch_name", disabled=created is not None
    )
    state["sheet"] = c2.text_input(
        "Sheet (workbooks only)", placeholder="first sheet", key="sheet", disabled=created is not None
    )
    chosen = c3.date_input(
        "Trading date",
        key=DATE,
        min_value=desk_today,
        max_value=desk_today + timedelta(days=MAX_DAYS_AHEAD),
        disabled=created is not None,
        help="The day the batch will run: value dates are checked for it. Preparing tomorrow's batch "
        "today? Choose tomorrow, and CASH and TOM dates written for tomorrow pass.",
    )
    state[DATE] = chosen if isinstance(chosen, date) and chosen != desk_today else None
    sheet = state["sheet"] or None
    if state.setdefault("sheet_seen", sheet) != sheet:
        # Corrections and a mapping name rows and headers of the sheet they were made on: another
        # sheet starts without them.
        state["sheet_seen"] = sheet
        if state["fixes"] or state["pending"] or state["map"]:
            _restart(state, fixes={}, map={})
    if created is not None:
        status.caption(
            f"{state['name']} is stored as batch {created.batch_id} '{created.name}'. "
            "Choose another file, or clear this one, to load more."
        )
        _result(created, bool(created.rejections) and _unmask_toggle())
        return
    outcome = _checked(wb, state, sheet)
    if isinstance(outcome, FxBatchError):
        status.caption(f"{state['name']} cannot be loaded as it is (see why below); nothing is stored.")
        show_error(outcome)
        headers = getattr(outcome, "headers", None)
        if headers:
            _mapping(headers, guess_fields(headers, state["map"]), state, expanded=True)
        return
    report = outcome
    trade_rows = report.rows - report.ignored
    if report.accepted:
        status.caption(
            f"{state['name']} is checked: {report.accepted:,} of {trade_rows:,} trade row(s) can be loaded. "
            "Nothing is stored until you create the batch."
        )
    else:
        status.caption(
            f"{state['name']} is checked: none of its {trade_rows:,} trade row(s) can be loaded yet; correct "
            "them or the column mapping below. Nothing is stored."
        )
    previous = _loaded_as(wb, state["fingerprint"])
    if previous:
        st.warning(
            f"This exact file is already loaded as batch {', '.join(map(str, previous))}. Creating a batch "
            "from it again makes another one; both are kept.",
            icon=":material/content_copy:",
        )
    st.subheader(f"Checked: {report.layout.value} layout")
    if report.layout is Layout.LEGACY:
        st.caption(LEGACY_RULE)
    _counts(report.rows, report.accepted, report.rejected, report.ignored, report.notional_zar)
    _mapping(report.headers, report.column_map, state, expanded=bool(report.ignored_columns))
    if report.rejected:
        unmask = _unmask_toggle()
        problems, fix = st.tabs([f"Rejections ({report.rejected:,} rows)", "Correct rejected rows"])
        with problems:
            _rejections(report.rejections, report.column_map, unmask)
            if report.rejected > len(report.rejected_rows):
                st.caption(f"The problems of the first {len(report.rejected_rows):,} rejected rows.")
        with fix:
            _corrections(report, state, unmask)
    else:
        state["pending"] = {}  # no grid to hold edits: none can be waiting
        _fixed_note(report)  # every row corrected: the tabs are gone, the news is not
    _create(wb, state, report, sheet, status)


main()
