"""Upload: a spreadsheet in, a validated batch out, with every refused row explained."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from fxbatch import FxBatchError
from pages.common import REJECTION_TABLE, get_workbench, show_error

SHOWN_REJECTIONS = 5000


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
    name = st.text_input("Batch name", placeholder="defaults to the file name", key="batch_name")
    sheet = st.text_input("Sheet (workbooks only)", placeholder="first sheet", key="sheet")
    if uploaded is None:
        return
    st.caption(f"{uploaded.name} ({uploaded.size:,} bytes) is ready; nothing is stored until you press the button.")
    if not st.button("Validate and create batch", type="primary", key="create"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        # Keep the analyst's file name: fxbatch's messages name the file they read.
        path = Path(tmp) / (Path(uploaded.name).name or "upload.csv")
        path.write_bytes(uploaded.getvalue())
        try:
            result = wb.load(path, name=name or None, sheet=sheet or None, display_name=uploaded.name)
        except FxBatchError as exc:
            show_error(exc)
            return
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
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Data rows", result.rows)
    c2.metric("Accepted", result.accepted)
    c3.metric("Rejected", result.rejected)
    c4.metric("Ignored (blank)", result.ignored)
    with st.expander("Column mapping"):
        st.table({"file column": list(result.column_map), "field": list(result.column_map.values())})
        if result.ignored_columns:
            st.caption("Ignored columns: " + ", ".join(result.ignored_columns))
    if result.rejections:
        st.subheader("Rejected rows")
        shown = [r.model_dump(mode="json") for r in result.rejections[:SHOWN_REJECTIONS]]
        st.dataframe(shown, hide_index=True, width="stretch", **REJECTION_TABLE)
        if len(result.rejections) > SHOWN_REJECTIONS:
            st.caption(
                f"Showing the first {SHOWN_REJECTIONS:,} of {len(result.rejections):,} rejections; "
                "download them all from the Batches page."
            )


main()
