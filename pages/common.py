"""What every page shares: the workbench (one per server process) and error display."""

from __future__ import annotations

import streamlit as st

from fxbatch import FxBatchError, Settings, Workbench


@st.cache_resource(show_spinner="Opening the database…")
def workbench() -> Workbench:
    """The process-wide workbench; creates the database with the sample batch on first start."""
    return Workbench.open(settings=Settings(), seed_sample=True)


def get_workbench() -> Workbench | None:
    """The workbench, or None after showing the analyst what to do when it cannot open."""
    try:
        return workbench()
    except FxBatchError as exc:
        show_error(exc)
        return None


def show_error(exc: Exception) -> None:
    """One place that turns errors into short messages (never a traceback)."""
    if isinstance(exc, FxBatchError):
        st.error(exc.message, icon=":material/error:")
    else:
        st.error(f"Something went wrong: {exc}. Nothing was changed; try again.", icon=":material/error:")
