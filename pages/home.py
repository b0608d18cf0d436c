"""Home: what is in the database and where to start."""

from __future__ import annotations

import streamlit as st

from fxbatch import FxBatchError
from pages.common import get_workbench, show_error


def main() -> None:
    st.title("fxbatch")
    st.caption("Load client FX orders from spreadsheets, check them, and execute them as batches.")
    wb = get_workbench()
    if wb is None:
        return
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
                st.success(f"Batch {result.batch_id} created with {result.accepted} trades.")
                st.rerun()
            except FxBatchError as exc:
                show_error(exc)
        return
    st.subheader("Latest batches")
    st.dataframe(
        wb.batches_df().head(10)[["batch_id", "name", "status", "trades", "rejected", "created_at"]],
        hide_index=True,
        width="stretch",
    )
    st.page_link("pages/upload.py", label="Upload a new spreadsheet", icon=":material/upload_file:")


main()
