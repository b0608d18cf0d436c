"""Batches: every batch, and a chosen batch's trades and rejections."""

from __future__ import annotations

import streamlit as st

from fxbatch import FxBatchError
from pages.common import BATCH_TABLE, REJECTION_TABLE, TRADE_TABLE, get_workbench, show_error

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
    st.dataframe(df, hide_index=True, width="stretch", **BATCH_TABLE)
    names = dict(zip(df["batch_id"], df["name"], strict=True))
    choice = st.selectbox("Batch", list(names), format_func=lambda b: f"{b}: {names[b]}")
    try:
        trades = wb.trades(int(choice))
        rejections = wb.rejections(int(choice))
    except FxBatchError as exc:
        show_error(exc)
        return
    tab1, tab2 = st.tabs([f"Trades ({len(trades):,})", f"Rejections ({len(rejections):,})"])
    with tab1:
        st.dataframe(trades.head(PAGE_ROWS), hide_index=True, width="stretch", **TRADE_TABLE)
        if len(trades) > PAGE_ROWS:
            st.caption(f"Showing the first {PAGE_ROWS} of {len(trades):,} trades.")
    with tab2:
        if rejections.empty:
            st.caption("Every data row of this batch's file was accepted.")
        else:
            st.dataframe(rejections.head(PAGE_ROWS), hide_index=True, width="stretch", **REJECTION_TABLE)
            if len(rejections) > PAGE_ROWS:
                st.caption(f"Showing the first {PAGE_ROWS} of {len(rejections):,} rejections.")
            st.download_button(
                "Download all rejections (CSV)",
                rejections.to_csv(index=False).encode(),
                file_name=f"batch_{choice}_rejections.csv",
                mime="text/csv",
                on_click="ignore",
                key="download_rejections",
            )


main()
