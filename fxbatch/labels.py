"""The words a person reads for fxbatch's codes and field names, defined once.

Pages, exports shown to people and the notebook use these rather than the stored codes
(``PARTIAL``) or column names (``client_cif``). Failure reason codes stay codes where they are
the bank's codes; only their column headers become words (``reason_label``).
"""

from __future__ import annotations

from fxbatch.chartstyle import OUTCOME_LABELS

__all__ = [
    "BATCH_STATUS_LABELS",
    "FIELD_LABELS",
    "OUTCOME_LABELS",
    "RUN_STATUS_LABELS",
    "batch_status_label",
    "field_label",
    "reason_label",
    "run_status_label",
    "stage_label",
    "trade_status_label",
]

RUN_STATUS_LABELS: dict[str, str] = {
    "PENDING": "Not started",
    "RUNNING": "Running",
    "COMPLETED": "Completed",
    "PARTIAL": "Completed with failures",
    "FAILED": "Failed",
    "CANCELLED": "Cancelled",
    "INTERRUPTED": "Interrupted",
}
BATCH_STATUS_LABELS: dict[str, str] = {"LOADED": "Loaded", **RUN_STATUS_LABELS}

# One plain-English header per field, whichever table shows it.
FIELD_LABELS: dict[str, str] = {
    "row": "Row",
    "trade_id": "Trade",
    "client_cif": "Client CIF",
    "account_number": "Account",
    "currency_pair": "Pair",
    "side": "Side",
    "amount": "Amount",
    "amount_currency": "Ccy",
    "spread_pips": "Spread (pips)",
    "delivery": "Delivery",
    "value_date": "Value date",
    "reference": "Reference",
    "run_id": "Run",
    "batch_id": "Batch",
    "status": "Status",
    "seed": "Seed",
    "success_rate_setting": "Bank success rate (setting)",
    "trades": "Trades",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "success_share": "Succeeded (share)",
    "notional_zar_succeeded": "Booked notional (ZAR)",
    "notional_zar_failed": "Failed notional (ZAR)",
    "notional_zar_total": "Notional (ZAR)",
    "spread_income_zar": "Income (ZAR)",
    "status_a": "Status in run A",
    "failure_a": "Why it failed in run A",
    "status_b": "Status in run B",
    "failure_b": "Why it failed in run B",
    "failure_code": "Why it failed",
}


def _words(code: str) -> str:
    return code.replace("_", " ").strip().capitalize()


def run_status_label(status: object) -> str:
    """'Completed with failures' for PARTIAL (a RunStatus or its value; unknown codes as words)."""
    code = str(getattr(status, "value", status))
    return RUN_STATUS_LABELS.get(code, _words(code))


def batch_status_label(status: object) -> str:
    """'Loaded' for a batch never run, else its latest run's status in words."""
    code = str(getattr(status, "value", status))
    return BATCH_STATUS_LABELS.get(code, _words(code))


def trade_status_label(status: object) -> str:
    """'Succeeded' for SUCCESS: the outcome words every chart uses."""
    code = str(getattr(status, "value", status))
    return OUTCOME_LABELS.get(code, _words(code))


def stage_label(stage: object) -> str:
    """A step of a trade's timeline: 'Executing', 'Quoted', then its outcome ('Failed')."""
    code = str(getattr(stage, "value", stage))
    return {"EXECUTING": "Executing", "QUOTED": "Quoted"}.get(code) or trade_status_label(code)


def reason_label(code: str) -> str:
    """The header of a per-reason count column: 'Failed: insufficient funds'."""
    return f"Failed: {_words(code).lower()}"


def field_label(name: str) -> str:
    """The header of a field: FIELD_LABELS, 'reason:X' columns as reason_label, else the name in words."""
    if name in FIELD_LABELS:
        return FIELD_LABELS[name]
    if name.startswith("reason:"):
        return reason_label(name.removeprefix("reason:"))
    return _words(name)
