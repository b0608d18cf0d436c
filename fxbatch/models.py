"""Enums and pydantic models shared by every part of fxbatch."""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Delivery(StrEnum):
    SPOT = "SPOT"
    TOM = "TOM"
    CASH = "CASH"


class Layout(StrEnum):
    CANONICAL = "canonical"
    LEGACY = "legacy"


class RejectCode(StrEnum):
    """Why a spreadsheet row was refused at load time."""

    MISSING_VALUE = "MISSING_VALUE"
    INVALID_CIF = "INVALID_CIF"
    INVALID_ACCOUNT = "INVALID_ACCOUNT"
    SCIENTIFIC_NOTATION = "SCIENTIFIC_NOTATION"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    TOO_MANY_DECIMALS = "TOO_MANY_DECIMALS"
    NON_POSITIVE_AMOUNT = "NON_POSITIVE_AMOUNT"
    AMOUNT_TOO_LARGE = "AMOUNT_TOO_LARGE"
    INVALID_PAIR = "INVALID_PAIR"
    UNKNOWN_CURRENCY = "UNKNOWN_CURRENCY"
    UNSUPPORTED_PAIR = "UNSUPPORTED_PAIR"
    INVALID_SIDE = "INVALID_SIDE"
    INVALID_AMOUNT_CURRENCY = "INVALID_AMOUNT_CURRENCY"
    INVALID_SPREAD = "INVALID_SPREAD"
    SPREAD_TOO_WIDE = "SPREAD_TOO_WIDE"  # half the pair's rate or more (JPY/ZAR)
    INVALID_DELIVERY = "INVALID_DELIVERY"
    INVALID_DATE = "INVALID_DATE"
    PAST_VALUE_DATE = "PAST_VALUE_DATE"
    NOT_A_BUSINESS_DAY = "NOT_A_BUSINESS_DAY"
    VALUE_DATE_MISMATCH = "VALUE_DATE_MISMATCH"  # not the delivery's date (or over a year ahead)
    REFERENCE_TOO_LONG = "REFERENCE_TOO_LONG"
    CELL_TOO_LONG = "CELL_TOO_LONG"  # over the max_cell_chars setting; the reader emptied the cell
    BAD_QUOTES = "BAD_QUOTES"  # a CSV value that goes on after its closing quote ("12"34)
    EXCEL_ERROR = "EXCEL_ERROR"  # an XLSX cell showing an error (#N/A, #DIV/0!): its formula failed
    DUPLICATE_TRADE_ID = "DUPLICATE_TRADE_ID"
    TOTAL_ROW = "TOTAL_ROW"
    EXTRA_VALUES = "EXTRA_VALUES"


class Rejection(BaseModel):
    """One problem with one cell (or row) of an uploaded file."""

    row: int = Field(description="Row number as the analyst sees it (Excel row / CSV line).")
    column: str = Field(description="Canonical column name, or the file's header for extras.")
    value: str | None = Field(description="The offending value as it was in the file.")
    code: RejectCode
    message: str


class RejectedRow(BaseModel):
    """A rejected row as the analyst corrects it: the file's text per mapped field."""

    row: int = Field(description="Row number as the analyst sees it (Excel row / CSV line).")
    values: dict[str, str | None] = Field(description="Mapped field -> the cell's text (trimmed).")
    problems: list[str] = Field(description="Why it was rejected, one message per problem.")


class CheckReport(BaseModel):
    """A file validated without creating a batch: what loading it now would do."""

    source_file: str
    layout: Layout
    headers: list[str] = Field(description="The file's header cells, in order (blank ones left out).")
    column_map: dict[str, str] = Field(description="File header -> field, for the mapped columns.")
    ignored_columns: list[str] = Field(default_factory=list)
    rows: int
    accepted: int
    rejected: int
    ignored: int
    rejections: list[Rejection] = Field(description="The first problems, in row order.")
    rejected_rows: list[RejectedRow] = Field(description="The first rejected rows, to correct.")
    fixed: list[int] = Field(default_factory=list, description="Rows the corrections replaced.")
    fixed_still_rejected: list[int] = Field(default_factory=list, description="Corrected rows that still fail.")
    notional_zar: float | None = Field(None, description="The accepted rows' notional in ZAR at mid.")


class LoadResult(BaseModel):
    """Outcome of loading one file into a new batch."""

    batch_id: int
    name: str
    source_file: str
    layout: Layout
    rows: int = Field(description="Data rows below the header: accepted + rejected + ignored.")
    accepted: int
    rejected: int
    ignored: int
    fingerprint: str
    previously_loaded_as: list[int] = Field(default_factory=list)
    column_map: dict[str, str] = Field(default_factory=dict)
    ignored_columns: list[str] = Field(default_factory=list)
    rejections: list[Rejection] = Field(
        default_factory=list,
        description="The first rejections, in row order (at most the max_rejections_shown setting; every one is "
        "stored: `rejections BATCH_ID`, GET /batches/{id}/rejections).",
    )
    rejections_total: int = Field(0, description="How many rejections the load found (listed or not).")
    fixed: list[int] = Field(default_factory=list, description="Rows loaded with the analyst's corrections.")

    def summary(self) -> dict[str, object]:
        """The JSON contract of ``python -m fxbatch load --json``."""
        return {
            "batch_id": self.batch_id,
            "name": self.name,
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "ignored": self.ignored,
            "layout": self.layout.value,
            "source_file": self.source_file,
            "fingerprint": self.fingerprint,
            "previously_loaded_as": self.previously_loaded_as,
            "fixed": self.fixed,
            "column_map": self.column_map,
            "ignored_columns": self.ignored_columns,
            "rejections": [r.model_dump(mode="json") for r in self.rejections],
            "rejections_total": self.rejections_total,
        }


class BatchInfo(BaseModel):
    batch_id: int
    name: str
    status: str
    trades: int
    rows: int
    rejected: int
    ignored: int
    source_file: str
    layout: str
    fingerprint: str
    created_at: datetime
    notional_zar: float | None = Field(None, description="The batch's notional in ZAR at mid (None: not computed).")


# ---------------------------------------------------------------------------- execution


class TradeStatus(StrEnum):
    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    QUOTED = "QUOTED"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class RunStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"  # every trade succeeded
    PARTIAL = "PARTIAL"  # some succeeded
    FAILED = "FAILED"  # none succeeded
    CANCELLED = "CANCELLED"  # stopped by the analyst
    INTERRUPTED = "INTERRUPTED"  # stopped without finishing (crash, Ctrl-C, bank unreachable); resumable


FINAL_TRADE = frozenset({TradeStatus.SUCCESS, TradeStatus.FAILED, TradeStatus.CANCELLED})
FINAL_RUN = frozenset({RunStatus.COMPLETED, RunStatus.PARTIAL, RunStatus.FAILED, RunStatus.CANCELLED})


class Stage(StrEnum):
    QUOTE = "quote"
    BOOK = "book"


class FailureCode(StrEnum):
    """Why a trade failed at the bank (DOMAIN.md section 5)."""

    CLIENT_NOT_FOUND = "CLIENT_NOT_FOUND"
    ACCOUNT_MISMATCH = "ACCOUNT_MISMATCH"
    ACCOUNT_BLOCKED = "ACCOUNT_BLOCKED"
    CURRENCY_NOT_SUPPORTED = "CURRENCY_NOT_SUPPORTED"
    BELOW_MINIMUM = "BELOW_MINIMUM"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    MARKET_CLOSED = "MARKET_CLOSED"
    INVALID_VALUE_DATE = "INVALID_VALUE_DATE"
    RATE_UNAVAILABLE = "RATE_UNAVAILABLE"
    QUOTE_EXPIRED = "QUOTE_EXPIRED"
    PRICE_MOVED = "PRICE_MOVED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    TIMEOUT_UNKNOWN = "TIMEOUT_UNKNOWN"
    NOT_AUTHORISED = "NOT_AUTHORISED"
    BANK_VALIDATION = "BANK_VALIDATION"
    QUOTE_NOT_FOUND = "QUOTE_NOT_FOUND"
    QUOTE_CANCELLED = "QUOTE_CANCELLED"
    QUOTE_ALREADY_BOOKED = "QUOTE_ALREADY_BOOKED"
    DUPLICATE_TRANSACTION = "DUPLICATE_TRANSACTION"
    BANK_REJECTED = "BANK_REJECTED"


class FailureInfo(BaseModel):
    stage: Stage
    retry_helps: bool  # whether retrying (now or later) could help: shown to the analyst
    auto_retry: bool  # retried automatically within a run
    # An automatic retry waits out the run's backoff first (the bank is struggling: pricing or
    # the service is down); without it the next attempt is quoted at once (the quote expired or
    # the price moved, so a fresh quote is the cure; an unanswered booking the bank's status
    # says it never made is booked again).
    backoff: bool
    message: str
    result_code: int  # the API's resultCode for it


# code, stage, retry helps (now or later), retried within a run, the API's resultCode, message
_FAILURE_TABLE: tuple[tuple[FailureCode, Stage, bool, bool, int, str], ...] = (
    (FailureCode.CLIENT_NOT_FOUND, Stage.QUOTE, False, False, 404, "CIF unknown to the bank"),
    (FailureCode.ACCOUNT_MISMATCH, Stage.QUOTE, False, False, 422, "account does not belong to the client"),
    (FailureCode.ACCOUNT_BLOCKED, Stage.QUOTE, False, False, 423, "account dormant, frozen or closed"),
    (FailureCode.CURRENCY_NOT_SUPPORTED, Stage.QUOTE, False, False, 422, "currency pair not offered"),
    (FailureCode.BELOW_MINIMUM, Stage.QUOTE, False, False, 422, "deal below the minimum"),
    (FailureCode.LIMIT_EXCEEDED, Stage.QUOTE, False, False, 422, "deal over the client's limit or allowance"),
    (FailureCode.INSUFFICIENT_FUNDS, Stage.BOOK, False, False, 402, "settlement account cannot cover the deal"),
    (FailureCode.MARKET_CLOSED, Stage.QUOTE, True, False, 409, "outside trading hours; retry later"),
    (
        FailureCode.INVALID_VALUE_DATE,
        Stage.QUOTE,
        False,
        False,
        422,
        "settlement date not a business day or past the cut-off",
    ),
    (FailureCode.RATE_UNAVAILABLE, Stage.QUOTE, True, True, 503, "bank cannot price right now"),
    (FailureCode.QUOTE_EXPIRED, Stage.BOOK, True, True, 410, "booked after the quote expired"),
    (FailureCode.PRICE_MOVED, Stage.BOOK, True, True, 409, "deal rate off the quote beyond tolerance"),
    (FailureCode.SERVICE_UNAVAILABLE, Stage.QUOTE, True, True, 503, "bank service unavailable"),
    (
        FailureCode.TIMEOUT_UNKNOWN,
        Stage.BOOK,
        True,
        True,
        504,
        "no answer to the booking; resolved with the bank's transaction status",
    ),
    (FailureCode.NOT_AUTHORISED, Stage.QUOTE, False, False, 401, "token or dealer not allowed"),
    # The API's documented refusal: resultCode 1 with validationErrors naming the fields.
    (FailureCode.BANK_VALIDATION, Stage.QUOTE, False, False, 1, "the bank refused the request's fields"),
    (FailureCode.QUOTE_NOT_FOUND, Stage.BOOK, True, True, 4041, "the bank does not know the quote; a new one is asked"),
    (FailureCode.QUOTE_CANCELLED, Stage.BOOK, False, False, 4091, "the quote was cancelled"),
    (FailureCode.QUOTE_ALREADY_BOOKED, Stage.BOOK, False, False, 4092, "the quote was booked under another deal id"),
    (
        FailureCode.DUPLICATE_TRANSACTION,
        Stage.BOOK,
        False,
        False,
        4093,
        "the deal transaction id was already used for a different quote",
    ),
    (FailureCode.BANK_REJECTED, Stage.QUOTE, False, False, 4999, "a refusal fxbatch does not know (the bank's code)"),
)
_BACKS_OFF = frozenset({FailureCode.RATE_UNAVAILABLE, FailureCode.SERVICE_UNAVAILABLE})
FAILURES: dict[FailureCode, FailureInfo] = {
    code: FailureInfo(
        stage=stage,
        retry_helps=helps,
        auto_retry=auto,
        backoff=code in _BACKS_OFF,
        result_code=result,
        message=message,
    )
    for code, stage, helps, auto, result, message in _FAILURE_TABLE
}

# Client checks (CLIENT_NOT_FOUND, ACCOUNT_MISMATCH, ACCOUNT_BLOCKED, LIMIT_EXCEEDED) come only
# from the client registry: without one, every well-formed client and account is accepted.
DEFAULT_FAILURE_MIX: dict[FailureCode, float] = {
    FailureCode.CURRENCY_NOT_SUPPORTED: 0.01,
    FailureCode.BELOW_MINIMUM: 0.03,
    FailureCode.INSUFFICIENT_FUNDS: 0.25,
    FailureCode.MARKET_CLOSED: 0.04,
    FailureCode.INVALID_VALUE_DATE: 0.04,
    FailureCode.RATE_UNAVAILABLE: 0.12,
    FailureCode.QUOTE_EXPIRED: 0.08,
    FailureCode.PRICE_MOVED: 0.12,
    FailureCode.SERVICE_UNAVAILABLE: 0.06,
    FailureCode.TIMEOUT_UNKNOWN: 0.02,
    FailureCode.NOT_AUTHORISED: 0.0,
}


class BankSettings(BaseModel):
    """How the simulated bank behaves; every field is a knob an analyst can turn."""

    model_config = {"extra": "forbid"}

    success_rate: float = Field(0.95, ge=0, le=1, description="Probability that a valid trade ends SUCCESS.")
    failure_mix: dict[FailureCode, float] = Field(
        default_factory=lambda: dict(DEFAULT_FAILURE_MIX),
        description="Relative weights of the failure reasons among failing trades.",
    )
    latency_ms: float = Field(0.0, ge=0, le=60_000, description="Simulated time per bank call, in milliseconds.")
    quote_ttl_s: float = Field(30.0, gt=0, le=3600, description="How long a quote lives before booking fails.")
    volatility_bps: float = Field(
        0.1, ge=0, le=100, description="Standard deviation of the mid-rate random walk per trade step, in bps."
    )
    transient_absorb_share: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Share of retryable errors that are transient (a retry absorbs them and the trade succeeds).",
    )
    price_tolerance_bps: float = Field(
        5.0,
        ge=0,
        description="A booking's quoteRate may differ from the rate the bank quoted by this much (the client's "
        "dealRate differs from it by the desk's spread, on purpose).",
    )
    registry_file: str | None = Field(
        None, description="CSV of known clients (cif, account_number, status, limit_zar); enables client checks."
    )

    def normalised_mix(self) -> dict[FailureCode, float]:
        total = sum(w for w in self.failure_mix.values() if w > 0)
        if total <= 0:
            return {FailureCode.INSUFFICIENT_FUNDS: 1.0}
        return {code: w / total for code, w in self.failure_mix.items() if w > 0}


BANK_URL = re.compile(r"https?://\S+")
SEED_MAX = 2**63 - 1  # seeds are stored as BIGINT; larger ones would wrap


def check_bank_url(url: str | None) -> str | None:
    """An HTTP bank base URL, stripped ('' = none), or ValueError saying what is wrong with it."""
    url = (url or "").strip()
    authority = re.sub(r"^[A-Za-z][\w+.-]*://", "", url).split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" in authority:  # user:password@host: refused without echoing it, so it is never shown or stored
        raise ValueError(
            "HTTP bank URL holds a user name or password: give the bank's base URL only (for example "
            "http://127.0.0.1:8600); credentials belong in settings: FXBATCH_BANK_CLIENT_ID, "
            "FXBATCH_BANK_CLIENT_SECRET, FXBATCH_BANK_USERNAME and FXBATCH_BANK_PASSWORD"
        )
    if url and not BANK_URL.fullmatch(url):
        raise ValueError(
            f"HTTP bank URL {url!r} is not a web address: enter the bank's base URL, for example http://127.0.0.1:8600"
        )
    return url or None


def same_bank(a: str | None, b: str | None) -> bool:
    """Whether two bank addresses (None: the simulated bank) name the same bank; a trailing slash aside."""
    return (a or "").rstrip("/") == (b or "").rstrip("/")


class RunConfig(BaseModel):
    """Everything that defines a run; stored with it."""

    model_config = {"extra": "forbid"}

    seed: int = Field(42, ge=0, le=SEED_MAX, description="Seed of the simulated bank and market (0..2^63-1).")
    bank: BankSettings = Field(default_factory=BankSettings)
    concurrency: int = Field(16, ge=1, le=1024, description="Bank calls in flight at once.")
    max_attempts: int = Field(3, ge=1, le=20, description="Attempts per trade for retryable failures.")
    backoff_ms: float = Field(
        50.0,
        ge=0,
        description="Base backoff before retrying a trade the bank could not price or serve (doubles each time).",
    )
    chunk_size: int = Field(131_072, ge=1, description="Trades processed and persisted together (zero latency).")
    retry_of_run: int | None = Field(None, description="Run whose FAILED trades this run retries.")
    bank_url: str | None = Field(None, description="HTTP bank base URL; None = in-process simulated bank.")
    sweep_id: int | None = Field(None, description="The what-if sweep this run was promoted from (with scenario).")
    scenario: int | None = Field(None, description="The sweep's scenario this run was promoted from.")

    @field_validator("bank_url")
    @classmethod
    def _bank_url_is_an_address(cls, url: str | None) -> str | None:
        return check_bank_url(url)


class RunSummary(BaseModel):
    run_id: int
    batch_id: int
    status: RunStatus
    trades: int
    counts: dict[str, int]
    failure_reasons: dict[str, int]
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_s: float | None
    retry_of_run: int | None = None
    config: RunConfig
    error: str | None = None
    spread_income_zar: float | None = Field(
        None, description="The desk's spread income in ZAR on the SUCCESS trades (None: not recorded by this run)."
    )
    trade_date: date | None = Field(None, description="Trading date the run's value dates were derived for.")
    value_dates_moved: int = Field(0, description="Value dates derived from delivery that this run derived again.")
    value_dates_unsendable: int = Field(
        0,
        description="Trades failed INVALID_VALUE_DATE without being sent (a written value date had passed or no "
        "longer suited the delivery, or CASH on a closed day).",
    )
    quotes_cancelled: int = Field(
        0, description="Quotes released at the bank (cancelquote) because they were not booked."
    )
    quote_cancel_failures: int = Field(
        0, description="Cancels of unbooked quotes the bank did not confirm (best effort)."
    )

    def to_json(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "batch_id": self.batch_id,
            "status": self.status.value,
            "trades": self.trades,
            "counts": self.counts,
            "failure_reasons": self.failure_reasons,
            "elapsed_s": self.elapsed_s,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "retry_of_run": self.retry_of_run,
            "error": self.error,
            "spread_income_zar": self.spread_income_zar,
            "trade_date": self.trade_date.isoformat() if self.trade_date else None,
            "value_dates_moved": self.value_dates_moved,
            "value_dates_unsendable": self.value_dates_unsendable,
            "quotes_cancelled": self.quotes_cancelled,
            "quote_cancel_failures": self.quote_cancel_failures,
            "config": self.config.model_dump(mode="json"),
        }


class RunProgress(BaseModel):
    """Live progress of a run executing in the server process (``Workbench.progress``)."""

    run_id: int
    batch_id: int | None = Field(None, description="The run's batch (set by Workbench.progress and active_runs).")
    status: RunStatus
    done: int = Field(description="Trades in a final state (SUCCESS, FAILED, CANCELLED).")
    total: int
    fraction: float = Field(description="done / total (1.0 for an empty run).")
    counts: dict[str, int] = Field(description="Trades per status, PENDING included.")
    trades_per_s: float
    eta_s: float | None = Field(description="Seconds to the end at the current pace (None: not known yet).")
    elapsed_s: float
    error: str | None = None


class RunView(RunSummary):
    """A run as the server shows it: the CLI's ``show --json`` object plus its live progress."""

    progress: RunProgress | None = Field(None, description="Live progress while the run executes, else null.")

    @property
    def finished(self) -> bool:
        """Final or INTERRUPTED and not executing: nothing more happens without a resume."""
        return self.progress is None and (self.status in FINAL_RUN or self.status is RunStatus.INTERRUPTED)
