"""What every page shares: the workbench (one per server process) and error display."""

from __future__ import annotations

import streamlit as st
from pydantic import ValidationError

from fxbatch import FxBatchError, Settings, Workbench


# Clearing the cache closes the workbench, so the database file is let go at once rather than
# staying locked against other processes until the old object happens to be collected.
@st.cache_resource(show_spinner="Opening the database…", on_release=Workbench.close)
def workbench() -> Workbench:
    """The process-wide workbench; creates the database with the sample batch on first start."""
    return Workbench.open(settings=Settings(), seed_sample=True)


def get_workbench() -> Workbench | None:
    """The workbench, or None after showing the analyst what to do when it cannot open."""
    try:
        return workbench()
    except (FxBatchError, ValidationError) as exc:  # ValidationError: a bad FXBATCH_* variable
        show_error(exc)
        return None


def show_error(exc: Exception) -> None:
    """One place that turns errors into short messages (never a traceback)."""
    if isinstance(exc, FxBatchError):
        st.error(exc.message, icon=":material/error:")
    elif isinstance(exc, ValidationError):
        bad = "; ".join(f"FXBATCH_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        st.error(f"A setting has a bad value ({bad}). Fix it and reload the page.", icon=":material/error:")
    else:
        st.error(f"Something went wrong: {exc}. Nothing was changed; try again.", icon=":material/error:")
