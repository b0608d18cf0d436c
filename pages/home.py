"""Home: what is in the database and where to start."""

from __future__ import annotations

import streamlit as st

from fxbatch import FxBatchError
from pages.common import BATCH_TABLE, get_workbench, show_error

NOTICE = "home_notice"


def main() -> None:
    st.title("fxbatch")
    st.caption("Load client FX orders from spreadsheets, check them, and execute them as batches.")
    wb = get_workbench()
    if wb is None:
        return
    if notice := st.session_state.pop(NOTICE, None):
        st.success(notice, icon=":material/check_circle:")
    batches = wb.batches()
    col1, col2, col3 = st.columns(3)
    col1.metric("Batches", len(batches))
    col2.metric("Trades loaded", f"{sum(b.trades for b in batches):,}")
    col3.metric("Rows rejected", f"{sum(b.rejected for b in batches):,}")
    if not batches:
        st.info("No batches yet. Upload a trade spreadsheet, or load the bundled sample.")
        if st.button("Load the sample batch", type="primary"):
            try:
                result = wb.load(wb.settings.sample_file, name="Sample batch")
            except FxBatchError as exc:
                show_error(exc)
                return
            # Shown by the rerun, which draws the page with the new batch in it.
            st.session_state[NOTICE] = f"Batch {result.batch_id} created with {result.accepted} trades."
            st.rerun()
        return
    st.subheader("Latest batches")
    latest = {**BATCH_TABLE, "column_order": ["batch_id", "name", "status", "trades", "rejected", "created_at"]}
    st.dataframe(wb.batches_df().head(10), hide_index=True, width="stretch", **latest)
    st.page_link("pages/upload.py", label="Upload a new spreadsheet", icon=":material/upload_file:")


main()
