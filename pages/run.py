"""Run detail: live progress while a run executes, then its outcome charts, trades, one trade's story, exports."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from fxbatch import FxBatchError, Workbench, charts
from fxbatch.access import Role
from fxbatch.analytics import TradeFilter
from fxbatch.errors import invalid_values
from fxbatch.labels import run_status_label, stage_label, trade_status_label
from fxbatch.masking import export_name
from fxbatch.models import RunStatus, RunSummary
from fxbatch.money import zar_compact
from fxbatch.moneyview import RunMoney
from fxbatch.settlements import Settlement, SettlementStatus
from pages.common import (
    POLL_S,
    SELECT_ROWS,
    cancel_with_confirmation,
    deferred_export,
    get_workbench,
    may,
    needs_role,
    outcome_text,
    progress_text,
    selected_row,
    show_error,
)

PAGE_SIZE = 50
WATCHING = "run_watching"
EXPORTS = {"CSV": ".csv", "Excel (XLSX)": ".xlsx", "Parquet": ".parquet"}
MIME = {
    ".csv": "text/csv",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".parquet": "application/vnd.apache.parquet",
}
TRADES_TABLE: dict[str, Any] = {
    "row": st.column_config.NumberColumn("Row", format="%d", width="small"),
    "trade_id": "Trade",
    "client_cif": "Client CIF",
    "account_number": "Account",
    "currency_pair": "Pair",
    "side": "Side",
    "amount": st.column_config.NumberColumn("Amount", format="%,.2f"),
    "amount_currency": "Ccy",
    "status": "Status",
    "failure_code": "Why it failed",
    "attempts": st.column_config.NumberColumn("Attempts", format="%d", width="small"),
    "spread_pips": st.column_config.NumberColumn("Spread (pips)", format="%d", width="small"),
    "quote_rate": st.column_config.NumberColumn("Bank quote", format="%.6f", help="The bank's rate to the desk"),
    "deal_rate": st.column_config.NumberColumn(
        "Client rate", format="%.6f", help="The bank quote moved by the spread, in the client's disfavour"
    ),
    "spread_income_zar": st.column_config.NumberColumn(
        "Income (ZAR)", format="%,.2f", help="The desk's spread income on the trade (succeeded trades only)"
    ),
    "amount_zar": st.column_config.NumberColumn("Notional (ZAR)", format="%,.2f"),
    "finished_at": st.column_config.DatetimeColumn("Finished (UTC)", format="HH:mm:ss.SSS"),
    "reference": "Reference",
}
# What the desk asks the bank about first: the deal id and what the bank's status said.
IN_DOUBT_ORDER = ["row", "trade_id", "deal_transaction_id", "bank_status", "asked_at", "client_cif", "currency_pair",
                  "side", "amount", "amount_currency", "value_date", "quote_id", "quote_rate", "quoted_at", "attempt"]  # fmt: skip
IN_DOUBT_TABLE: dict[str, Any] = {
    **TRADES_TABLE,
    "value_date": "Value date",
    "deal_transaction_id": st.column_config.TextColumn(
        "Deal transaction id", help="The id the booking was sent with: quote it to the bank"
    ),
    "attempt": st.column_config.NumberColumn("Attempt", format="%d", width="small"),
    "quote_id": st.column_config.NumberColumn("Quote id", format="%d"),
    "quoted_at": st.column_config.DatetimeColumn("Quoted at (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "bank_status": st.column_config.TextColumn(
        "The bank's status said",
        help="GetTxnStatus's answer when last asked (PENDING, or a status fxbatch does not know), or "
        "'bank unreachable' when the bank could not be reached to book or to ask",
    ),
    "asked_at": st.column_config.DatetimeColumn("Asked at (UTC)", format="YYYY-MM-DD HH:mm:ss"),
}


# -- data for finished runs is cached per database, run and finish time (a run is never re-finished)


@st.cache_data(max_entries=32, show_spinner=False)
def _review(_wb: Workbench, db: str, run_id: int, version: str) -> dict[str, pd.DataFrame]:
    return _review_data(_wb, run_id)


def _review_data(wb: Workbench, run_id: int) -> dict[str, pd.DataFrame]:
    notional = wb.notional_breakdown(run_id)  # the four notional charts' data in one pass
    return {
        "outcomes": wb.outcome_counts(run_id),
        "pareto": wb.failure_pareto(run_id),
        "pairs": notional[("pair", False)],
        "pairs_failed": notional[("pair", True)],
        "clients": notional[("client", False)],
        "clients_failed": notional[("client", True)],
        "notional": wb.notional_by_outcome(run_id),
        "latency": wb.latency_histogram(run_id),
        "throughput": wb.throughput(run_id),
        "income_clients": wb.income_by(run_id, "client", top=10),
        "income_pairs": wb.income_by(run_id, "pair", top=20),
    }


@st.cache_data(max_entries=32, show_spinner=False)
def _money(_wb: Workbench, db: str, run_id: int, version: str) -> RunMoney:
    return _wb.run_money(run_id)  # a finished run's money does not change (a pass over its trades)


@st.cache_data(max_entries=32, show_spinner=False)
def _choices(_wb: Workbench, db: str, run_id: int, version: str) -> dict[str, list[str]]:
    return _wb.run_filter_choices(run_id)


def _version(summary: RunSummary) -> str | None:
    """The cache version of a finished run (None while it can still change)."""
    finished = summary.finished_at
    if finished is None or summary.status.value in ("PENDING", "RUNNING"):
        return None
    return f"{summary.status.value}:{finished.isoformat()}"


# -- choosing a run ---------------------------------------------------------------------------


def _choose_run(wb: Workbench) -> RunSummary | None:
    runs = wb.runs()
    if not runs:
        st.info("No runs yet: start one from the Batches page.", icon=":material/info:")
        st.page_link("pages/batches.py", label="Go to Batches", icon=":material/table_view:")
        return None
    by_id = {r.run_id: r for r in runs}
    wanted = st.query_params.get("run") or ""
    found = wanted.isdigit() and int(wanted) in by_id
    initial = int(wanted) if found else runs[0].run_id
    if wanted and not found:
        named = f"There is no run {wanted}" if wanted.isdigit() else "The link names no run"  # never echo other text
        st.warning(
            f"{named} (an old link, or its batch was deleted): showing the latest run, run {initial}.",
            icon=":material/link_off:",
        )
    names = {b.batch_id: b.name for b in wb.batches()}
    choice = st.selectbox(
        "Run",
        list(by_id),
        index=list(by_id).index(initial),
        format_func=lambda r: (
            f"Run {r} · batch {by_id[r].batch_id} {names.get(by_id[r].batch_id, '')} · {run_status_label(by_id[r].status)}"
        ),
    )
    if wanted != str(choice):
        st.query_params["run"] = str(choice)  # the URL names the run: reload and other tabs find it
    return by_id[int(choice)]


# -- live progress ------------------------------------------------------------------------------


def _live(wb: Workbench, run_id: int) -> None:
    """Progress of the run; polled by a fragment while it executes, which reruns the page once at the end."""
    snap = wb.progress(run_id)
    if snap is not None and snap.status is RunStatus.RUNNING:
        st.session_state[WATCHING] = run_id
        st.progress(min(max(snap.fraction, 0.0), 1.0), text=progress_text(snap.model_dump()))
        _count_metrics(snap.counts, snap.total)
        return
    if st.session_state.get(WATCHING) == run_id:
        # The run has just ended: redraw the whole page once (charts, table); main() says so.
        st.rerun()


def _count_metrics(counts: dict[str, int], total: int, in_doubt: int = 0) -> None:
    """The outcome counts, each with its share of the run's trades; bookings in doubt (of an
    INTERRUPTED run, recorded as not final) count as in flight, not as not started."""
    cols = st.columns(5)
    in_flight = counts.get("EXECUTING", 0) + counts.get("QUOTED", 0) + in_doubt
    for col, (label, n, more) in zip(
        cols,
        [
            ("Succeeded", counts.get("SUCCESS", 0), ""),
            ("Failed", counts.get("FAILED", 0), ""),
            ("Cancelled", counts.get("CANCELLED", 0), ""),
            ("In flight", in_flight, f"; {in_doubt:,} booking(s) in doubt" if in_doubt else ""),
            ("Not started", max(counts.get("PENDING", 0) - in_doubt, 0), ""),
        ],
        strict=True,
    ):
        col.metric(label, f"{n:,}", help=f"{n / total:.1%} of {total:,}{more}" if total else None)


def _money_metrics(money: RunMoney) -> None:
    """The run's first row, in money: booked, failed, income and income lost (ZAR at mid)."""
    cols = st.columns(4)
    cols[0].metric("Booked", zar_compact(money.booked_zar), help=f"{_zar(money.booked_zar)}: notional of the "
                   "succeeded trades, in ZAR at mid.")  # fmt: skip
    cols[1].metric("Failed", zar_compact(money.failed_zar), help=f"{_zar(money.failed_zar)}: notional of the "
                   "failed trades, in ZAR at mid.")  # fmt: skip
    income = money.income_zar
    cols[2].metric(
        "Spread income",
        zar_compact(income) if income is not None else "not recorded",
        help=f"{_zar(income)}: the desk's spread income on the succeeded trades, base amount x "
        "|client rate - bank quote|, in ZAR at mid."
        if income is not None
        else "This run was made before spread income was recorded.",
    )
    cols[3].metric("Income lost", zar_compact(money.income_lost_zar), help=f"{_zar(money.income_lost_zar)}: what "
                   "the failed trades would have earned at their spread (at their last quote, else at mid).")  # fmt: skip
    if money.cancelled_zar or money.open_zar:
        st.caption(money.headline)


def _zar(value: float) -> str:
    """An amount in ZAR as the desk writes it: 'R 1,234,567.89'."""
    return f"R {value:,.2f}"


def _trading_date_text(summary: RunSummary) -> str | None:
    """What the run's trading date did to the batch's value dates (None for runs that did not record it)."""
    if summary.trade_date is None:
        return None
    parts = []
    if moved := summary.value_dates_moved:
        dates, their = ("value dates", "their") if moved != 1 else ("value date", "its")
        parts.append(f"{moved:,} {dates} derived again from {their} delivery")
    if unsent := summary.value_dates_unsendable:
        trades, their = ("trades", "their") if unsent != 1 else ("trade", "its")
        parts.append(
            f"{unsent:,} {trades} not sent: {their} value date had passed, or CASH fell on a closed day "
            "(INVALID_VALUE_DATE)"
        )
    return f"Trading date {summary.trade_date.isoformat()}" + (": " + "; ".join(parts) if parts else "") + "."


# -- review ---------------------------------------------------------------------------------------


def _chart(where: Any, fig: Any, key: str) -> None:
    """A chart and, under it, the one line that says what to read from it."""
    where.plotly_chart(fig, key=key)
    where.caption(charts.caption_of(fig))


def _charts(data: dict[str, pd.DataFrame]) -> None:
    c1, c2 = st.columns(2)
    _chart(c1, charts.outcome_chart(data["outcomes"]), "chart_outcomes")
    _chart(c2, charts.notional_chart(data["notional"]), "chart_notional")
    c1, c2 = st.columns(2)
    _chart(c1, charts.pareto_chart(data["pareto"]), "chart_pareto")
    _chart(c2, charts.latency_chart(data["latency"]), "chart_latency")
    failed = st.radio(
        "Top currency pairs and clients", ["by notional", "by failed notional"], horizontal=True, key="clients_view"
    ) == "by failed notional"  # fmt: skip
    c1, c2 = st.columns(2)
    pairs, clients = (data["pairs_failed"], data["clients_failed"]) if failed else (data["pairs"], data["clients"])
    _chart(c1, charts.notional_by_chart(pairs, "currency pair", failed=failed), "chart_pairs")
    _chart(c2, charts.notional_by_chart(clients, "client", failed=failed), "chart_clients")
    c1, c2 = st.columns(2)
    _chart(c1, charts.income_chart(data["income_clients"], "client (top 10)"), "chart_income_clients")
    _chart(c2, charts.income_chart(data["income_pairs"], "pair"), "chart_income_pairs")
    _chart(st, charts.throughput_chart(data["throughput"]), "chart_throughput")


_FILTER_KEYS = ("f_status", "f_codes", "f_pair", "f_client", "f_text")


def _trades(wb: Workbench, summary: RunSummary, choices: dict[str, list[str]]) -> None:
    run_id = summary.run_id
    if st.session_state.get("f_run") != run_id:  # another run: its filters start empty
        for key in _FILTER_KEYS:
            st.session_state.pop(key, None)
        st.session_state["f_run"] = run_id
    st.subheader("Trades")
    c1, c2, c3, c4, c5 = st.columns([2, 2, 1, 1, 2])
    statuses = c1.multiselect("Status", choices["statuses"], format_func=trade_status_label, key="f_status")
    codes = c2.multiselect("Why it failed", choices["failure_codes"], key="f_codes")
    pair = c3.selectbox("Pair", ["All", *choices["pairs"]], key="f_pair")
    client = c4.text_input("Client CIF", key="f_client")
    text = c5.text_input("Search trade id or reference", key="f_text")
    unmask = may(wb, Role.ANALYST) and st.toggle(
        "Unmask accounts", key="unmask", help="Account numbers show their last 4 digits unless on."
    )
    filters = TradeFilter(statuses, codes, None if pair == "All" else pair, client or None, text or None)
    signature = (run_id, repr(filters))
    if st.session_state.get("f_signature") != signature:  # new filters start on page 1
        st.session_state["f_signature"] = signature
        st.session_state["f_page"] = 1
    page_no = int(st.session_state.get("f_page", 1))
    try:
        page, total = wb.run_trades_page(
            run_id, filters, limit=PAGE_SIZE, offset=(page_no - 1) * PAGE_SIZE, unmask=unmask
        )
    except FxBatchError as exc:
        show_error(exc)
        return
    pages = max(1, -(-total // PAGE_SIZE))
    if page_no > pages:
        page_no = st.session_state["f_page"] = 1
        page, total = wb.run_trades_page(run_id, filters, limit=PAGE_SIZE, unmask=unmask)
    shown = page.assign(status=page["status"].map(trade_status_label)) if "status" in page else page
    event = st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config=TRADES_TABLE,
        key="trades_table",
        on_select="rerun",
        selection_mode=SELECT_ROWS,
    )
    c1, c2 = st.columns([1, 4])
    c1.number_input("Page", min_value=1, max_value=pages, step=1, key="f_page")
    first = (page_no - 1) * PAGE_SIZE + 1 if total else 0
    c2.caption(f"Trades {first:,}–{first + len(page) - 1 if total else 0:,} of {total:,} matching · {pages:,} pages")
    if page.empty:
        return
    picked = selected_row(event)
    if picked is not None and picked >= len(page):
        picked = None
    st.subheader("Trade detail")
    if picked is None:
        st.caption("Click a row of the table to see that trade's story; this is the first on the page.")
    _detail(wb, run_id, int(page.iloc[picked or 0]["row"]), unmask)


def _detail(wb: Workbench, run_id: int, row: int, unmask: bool) -> None:
    try:
        d = wb.trade_detail(run_id, row, unmask=unmask)
    except FxBatchError as exc:
        show_error(exc)
        return
    with st.container(border=True):
        st.markdown(
            f"**{d['trade_id']}** (row {d['row']}) · {d['side']} {d['currency_pair']} "
            f"{d['amount']:,.2f} {d['amount_currency']} · client {d['client_cif']} · account {d['account_number']}"
        )
        if d["failure_code"]:
            retry = " Retrying can help." if d["retryable"] else " Retrying will not help."
            st.markdown(f":red[**{d['failure_code']}**: {d['failure_message']}.{retry}]")
        c1, c2, c3, c4 = st.columns(4)
        value_date = f"{d['value_date']:%Y-%m-%d}" if d["value_date"] is not None else "—"
        c1.markdown(
            f"**Status** {trade_status_label(d['status'])}  \n**Attempts** {d['attempts'] if d['attempts'] is not None else '—'}  \n"
            f"**Value date** {value_date} · {d['delivery'] or '—'}"
        )
        c2.markdown(f"**Quote id** {d['quote_id'] or '—'}  \n**Deal id** {d['deal_transaction_id'] or '—'}")
        quote = f"{d['quote_rate']:.6f}" if d["quote_rate"] is not None else "—"
        deal = f"{d['deal_rate']:.6f}" if d["deal_rate"] is not None else "—"
        spread = f"{d['spread_pips']:,} pips" if d["spread_pips"] is not None else "—"
        c3.markdown(f"**Bank quote** {quote}  \n**Client rate** {deal}  \n**Spread** {spread}")
        income = _zar(d["spread_income_zar"]) if d["spread_income_zar"] is not None else "—"
        zar = _zar(d["amount_zar"]) if d["amount_zar"] is not None else "—"
        c4.markdown(f"**Income** {income}  \n**Notional** {zar}")
        timeline = d["timeline"]
        st.dataframe(
            timeline.assign(stage=timeline["stage"].map(stage_label)),
            hide_index=True,
            column_config={
                "stage": "Stage",
                "at": st.column_config.DatetimeColumn("At", format="HH:mm:ss.SSS"),
                "ms_since_start": st.column_config.NumberColumn("ms since executing", format="%.1f"),
            },
            key="timeline",
        )


# An Excel file is written cell by cell (minutes for a million trades): the page offers it up to this
# many trades; CSV and Parquet (seconds) at any size, and the CLI and the API write Excel in full.
PAGE_XLSX_MAX = 100_000


def _export(wb: Workbench, summary: RunSummary) -> None:
    run_id = summary.run_id
    st.subheader("Export")
    c1, c2 = st.columns([1, 3])
    label = c1.selectbox("Format", list(EXPORTS), key="export_format", label_visibility="collapsed")
    suffix = EXPORTS[label]
    unmask = bool(st.session_state.get("unmask", False))  # the trades table's toggle: one rule for both
    name = export_name(f"run_{run_id}{suffix}", unmask=unmask)  # run_7-UNMASKED.csv when unmasked
    st.caption(
        "Account numbers are in full: the file name says UNMASKED."
        if unmask
        else "Account numbers show their last 4 digits; turn on Unmask accounts above for the full numbers."
    )
    if suffix == ".xlsx" and summary.trades > PAGE_XLSX_MAX:
        c2.info(
            f"Excel takes minutes to write {summary.trades:,} trades: download CSV or Parquet here, or write the "
            f"workbook with `python -m fxbatch export {run_id} -o run_{run_id}.xlsx`.",
            icon=":material/hourglass_top:",
        )
        return
    # Built when clicked, from the run as it is then (an export: on the audit trail).
    c2.download_button(
        f"Download {name} ({summary.trades:,} trades)",
        deferred_export(lambda path, full: wb.export_run(run_id, path, unmask=full), suffix, unmask),
        file_name=name,
        mime=MIME[suffix],
        on_click="ignore",
        key="download_export",
    )


def main() -> None:
    st.title("Run detail")
    wb = get_workbench()
    if wb is None:
        return
    try:
        summary = _choose_run(wb)
    except FxBatchError as exc:
        show_error(exc)
        return
    if summary is None:
        return
    run_id = summary.run_id
    cfg = summary.config
    st.caption(
        f"Batch {summary.batch_id} · {summary.trades:,} trades"
        + (f" · retry of the failed trades of run {summary.retry_of_run}" if summary.retry_of_run else "")
        + (f" · promoted from scenario {cfg.scenario} of what-if sweep {cfg.sweep_id}" if cfg.sweep_id else "")
        + (
            f" · HTTP bank at {cfg.bank_url}"
            if cfg.bank_url
            else f" · simulated bank: success rate {cfg.bank.success_rate:.0%}, seed {cfg.seed}, "
            f"latency {cfg.bank.latency_ms:g} ms"
        )
        + f", concurrency {cfg.concurrency}, up to {cfg.max_attempts} attempts"
    )
    snap = wb.progress(run_id)
    running = snap is not None and snap.status is RunStatus.RUNNING
    if not running and summary.status.value in ("PENDING", "RUNNING"):
        summary = wb.run_summary(run_id)  # it ended between the two reads
    if not running and st.session_state.get(WATCHING) == run_id:
        del st.session_state[WATCHING]  # once: this session watched the run end
        message = f"Run {run_id} finished: {run_status_label(summary.status)}, {outcome_text(summary.counts)}."
        st.toast(message, icon=":material/task_alt:", duration="long")
    if running:
        st.fragment(run_every=POLL_S)(_live)(wb, run_id)
        if may(wb, Role.ANALYST):
            cancel_with_confirmation(wb, run_id, "cancel_run")
        st.caption(
            "The charts appear when the run has finished; the trades below are as they stood when the page was "
            "drawn. Leaving this page does not stop the run."
        )
    else:
        status = summary.status.value
        st.progress(
            1.0 if status != "INTERRUPTED" else _done_share(summary), text=f"Run {run_id}: {run_status_label(status)}"
        )
        try:
            doubt = wb.bookings_in_doubt(run_id) if status == "INTERRUPTED" else None
        except FxBatchError as exc:
            show_error(exc)
            return
        version = _version(summary)
        _money_metrics(_money(wb, str(wb.settings.db), run_id, version) if version else wb.run_money(run_id))
        _count_metrics(summary.counts, summary.trades, len(doubt) if doubt is not None else 0)
        if dates := _trading_date_text(summary):
            st.caption(dates)
        if summary.error:
            st.warning(f"The run stopped early: {summary.error.rstrip('.')}.", icon=":material/warning:")
        if summary.status.value == "INTERRUPTED":
            if may(wb, Role.ANALYST):
                _resume(wb, summary)
                cancel_with_confirmation(wb, run_id, "cancel_interrupted", interrupted=True)
            else:
                needs_role(wb, Role.ANALYST, "Resuming or cancelling a run")
            if doubt is not None and len(doubt):
                _in_doubt(wb, run_id, doubt)
        _settlements(wb, run_id)  # kept in view once decided (a confirmed one settled the run's doubts)
        version = _version(summary)
        try:
            db = str(wb.settings.db)
            data = _review(wb, db, run_id, version) if version else _review_data(wb, run_id)
        except FxBatchError as exc:
            show_error(exc)
            return
        _charts(data)
    try:
        version = _version(summary)
        choices = (
            _choices(wb, str(wb.settings.db), run_id, version)
            if version and not running
            else wb.run_filter_choices(run_id)
        )
    except FxBatchError as exc:
        show_error(exc)
        return
    _trades(wb, summary, choices)
    if not running and may(wb, Role.ANALYST):
        _export(wb, summary)


def _resume(wb: Workbench, summary: RunSummary) -> None:
    """An INTERRUPTED run finishes where it stopped: in-flight trades are settled with the bank first."""
    run_id = summary.run_id
    url = summary.config.bank_url
    c1, c2 = st.columns([1, 3])
    # Keyed by run: a box keyed alike for every run kept the last run's address for the next one.
    typed = c2.text_input(
        "HTTP bank URL", value=url, key=f"resume_url_{run_id}", help="Another address of the run's bank, if it moved."
    ) if url else None  # fmt: skip
    # An address only when one other than the run's own is typed (an emptied box keeps the run's own).
    new_url = typed.strip() if typed and typed.strip() and typed.strip() != url else None
    if c1.button(f"Resume run {run_id}", type="primary", key="resume", icon=":material/play_arrow:"):
        try:
            wb.start_resume(run_id, bank_url=new_url)
        except FxBatchError as exc:
            show_error(exc)
            return
        except ValidationError as exc:  # an address that is none
            st.error(f"Run {run_id} cannot resume there: {'; '.join(invalid_values(exc))}.", icon=":material/error:")
            return
        st.session_state[WATCHING] = run_id
        st.rerun()


IN_DOUBT, BOOKED, NOT_BOOKED = "still in doubt", "booked", "not booked"


def _in_doubt(wb: Workbench, run_id: int, doubt: pd.DataFrame) -> None:
    """Bookings the bank's status could not settle, and settling them by hand: at once (an
    approver), or, for a real-money run on a server with login, proposed by one person and
    confirmed by an approver other than them."""
    two = wb.settling_needs_two(run_id)
    with st.expander(f"Bookings in doubt ({len(doubt):,})", expanded=True, icon=":material/help:"):
        who = "proposes it here and an approver other than them confirms it" if two else "an approver settles it here"
        st.caption(
            "The bank was asked to book these trades and its answer never came; asked since, it could not say "
            "whether it booked them, or could not be reached. Nothing is booked again. Resuming asks the bank "
            "again; once the bank's dealers have said what became of each deal (quote its deal transaction id), "
            f"someone {who}: booked trades end succeeded with the quote they were sent with, the others failed "
            "with the note."
        )
        needed = Role.ANALYST if two else Role.APPROVER
        if not may(wb, needed):
            st.dataframe(
                doubt, hide_index=True, width="stretch", column_config=IN_DOUBT_TABLE, column_order=IN_DOUBT_ORDER
            )
            needs_role(wb, needed, "Proposing a settlement by hand" if two else "Settling a booking by hand")
        else:
            _settle_form(wb, run_id, doubt, propose=two)


def _settle_form(wb: Workbench, run_id: int, doubt: pd.DataFrame, *, propose: bool) -> None:
    table = doubt.assign(bank_says=IN_DOUBT)
    # Keyed by the rows shown: choices made against one list never apply to another (a resume or a
    # settlement elsewhere changed it), as the editor keeps its edits by position.
    shown = hash(tuple(zip(doubt["row"].tolist(), doubt["quote_id"].tolist(), strict=True)))
    edited = st.data_editor(
        table,
        key=f"in_doubt_{run_id}_{shown:x}",
        hide_index=True,
        width="stretch",
        disabled=[c for c in table.columns if c != "bank_says"],
        column_order=["bank_says", *IN_DOUBT_ORDER],
        column_config={
            **IN_DOUBT_TABLE,
            "bank_says": st.column_config.SelectboxColumn(
                "The bank's dealers say", options=[IN_DOUBT, BOOKED, NOT_BOOKED], required=True
            ),
        },
    )
    note = st.text_input(
        "What the bank confirmed",
        key=f"in_doubt_note_{run_id}",
        max_chars=500,
        placeholder="e.g. J. Smith, bank dealing desk, 14:05: deal ref BBF-7731 booked; the other not received",
    )
    booked = [int(r) for r in edited.loc[edited["bank_says"] == BOOKED, "row"]]
    not_booked = [int(r) for r in edited.loc[edited["bank_says"] == NOT_BOOKED, "row"]]
    chosen = len(booked) + len(not_booked)
    verb = "Propose settling" if propose else "Settle"
    label = f"{verb} {chosen:,} booking(s)" if chosen else verb
    if not st.button(label, key=f"settle_{run_id}", disabled=not chosen, icon=":material/gavel:"):
        return
    try:
        if propose:
            made = wb.propose_settlement(run_id, booked=booked, not_booked=not_booked, note=note)
            done = f"settlement {made.settlement_id} proposed: an approver other than you confirms it below."
        else:
            after = wb.settle_by_hand(run_id, booked=booked, not_booked=not_booked, note=note)
            done = f"the run is {run_status_label(after.status)}."
    except FxBatchError as exc:
        show_error(exc)
        return
    st.toast(f"Run {run_id}: {len(booked):,} booked, {len(not_booked):,} not booked; {done}", icon=":material/gavel:")
    st.rerun()


def _settlements(wb: Workbench, run_id: int) -> None:
    """The run's proposed settlements; an approver other than the proposer confirms or rejects an open one."""
    proposed = wb.settlements(run_id)
    if not proposed:
        return
    pending = any(s.status.value == "pending" for s in proposed)
    with st.expander(f"Settlements proposed by hand ({len(proposed):,})", expanded=pending, icon=":material/gavel:"):
        _settlement_list(wb, run_id, proposed)


def _settlement_list(wb: Workbench, run_id: int, proposed: list[Settlement]) -> None:
    for s in proposed:
        st.markdown(
            f"**#{s.settlement_id}** {s.rows_text()} (proposed by {s.proposed_by}, {s.proposed_at:%Y-%m-%d %H:%M} "
            f"UTC): *{s.note}*; **{s.decision_text()}**"
        )
        if s.status is not SettlementStatus.PENDING:
            continue
        if not wb.may_decide(s):
            st.caption("An approver other than the proposer confirms or rejects it.")
            continue
        confirm, reject, why = st.columns([1, 1, 3], vertical_alignment="bottom")
        reason = why.text_input("Why reject", key=f"reject_reason_{s.settlement_id}", max_chars=500)
        try:
            if confirm.button("Confirm", key=f"confirm_{s.settlement_id}", type="primary", icon=":material/check:"):
                after = wb.confirm_settlement(s.settlement_id)
                st.toast(f"Settlement {s.settlement_id} confirmed; run {run_id} is {run_status_label(after.status)}.")
                st.rerun()
            if reject.button("Reject", key=f"reject_{s.settlement_id}", icon=":material/close:"):
                wb.reject_settlement(s.settlement_id, reason)
                st.toast(f"Settlement {s.settlement_id} rejected.")
                st.rerun()
        except FxBatchError as exc:
            show_error(exc)


def _done_share(summary: RunSummary) -> float:
    done = sum(summary.counts.get(k, 0) for k in ("SUCCESS", "FAILED", "CANCELLED"))
    return done / summary.trades if summary.trades else 1.0


main()
