"""fxbatch Streamlit app: the router. Settings -> services -> navigation; pages do the rest."""

from __future__ import annotations

import streamlit as st


def run() -> None:
    st.set_page_config(page_title="fxbatch", page_icon=":material/currency_exchange:", layout="wide")
    pages = [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/upload.py", title="Upload", icon=":material/upload_file:"),
        st.Page("pages/batches.py", title="Batches", icon=":material/table_view:"),
        st.Page("pages/run.py", title="Run detail", icon=":material/monitoring:"),
        st.Page("pages/whatif.py", title="What-if", icon=":material/insights:"),
    ]
    st.session_state["fxbatch_routed"] = True  # pages.common.ROUTED: see _ensure_router there
    st.navigation(pages).run()


if __name__ == "__main__":
    run()
