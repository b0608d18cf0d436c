"""Batches: every batch, and a chosen batch's trades and rejections."""

from __future__ import annotations

import streamlit as st

from fxbatch import FxBatchError
from pages.common import get_workbench, show_error

PAGE_ROWS = 500


def main() -> None:
    st.title("Batches")
    wb = get_workbench()
    if wb is None:
        return
    df = wb.batches_df()
    if df.empty:
        st.info("No batches yet: upload a spreadsheet first.")
        return
    st.dataframe(df, hide_index=True, width="stretch")
    choice = st.selectbox(
        "Batch", df["batch_id"].tolist(), format_func=lambda b: f"{b}: {df.set_index('batch_id').at[b, 'name']}"
    )
    try:
        trades = wb.trades(int(choice))
        rejections = wb.rejections(int(choice))
    except FxBatchError as exc:
        show_error(exc)
        return
    tab1, tab2 = st.tabs([f"Trades ({len(trades):,})", f"Rejections ({len(rejections):,})"])
    with tab1:
        st.dataframe(trades.head(PAGE_ROWS), hide_index=True, width="stretch")
        if len(trades) > PAGE_ROWS:
            st.caption(f"Showing the first {PAGE_ROWS} of {len(trades):,} trades.")
    with tab2:
        st.dataframe(rejections.head(PAGE_ROWS), hide_index=True, width="stretch")


main()
