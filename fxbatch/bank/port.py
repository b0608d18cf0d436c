"""The bank port: the trading API's four operations, called for many trades at once.

Each operation takes a batch of requests (columns, one row per trade) and answers one result
envelope per trade: ``result_code`` (0 = success), ``reason`` (a FailureCode value or None),
``message``. ``envelope(i)`` gives the API's JSON shape for one trade. Calling for many trades
at once is what lets the in-process simulated bank stay vectorised while an HTTP bank fans the
same batch out as concurrent requests (``max_in_flight`` of them at a time).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, Self

import numpy as np
import pyarrow as pa


@dataclass
class QuoteBatch:
    """createquote requests, one row per trade.

    Hot numeric fields are numpy arrays; the trade's text fields stay in an Arrow table
    (``trades``: trade_id, client_cif, account_number, currency_pair, side, amount_currency,
    delivery, value_date) and become Python objects only for a bank that asks via ``column``.
    ``trade_key`` and ``step`` identify the trade for the simulated bank's determinism.
    """

    trade_key: np.ndarray  # uint64
    step: np.ndarray  # int64: the trade's position in its batch (market time)
    attempt: np.ndarray  # int64, 1-based
    amount: np.ndarray  # float64, in amount_currency
    amount_zar: np.ndarray  # float64, at mid
    is_buy: np.ndarray  # bool: the client buys the base currency
    pair_code: np.ndarray  # int32 index into pair_names
    pair_names: np.ndarray  # object: distinct pairs
    trades: pa.Table

    def __len__(self) -> int:
        return len(self.trade_key)

    @property
    def pair(self) -> np.ndarray:
        return np.asarray(self.pair_names[self.pair_code])

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self.trades.column(name).to_numpy(zero_copy_only=False), dtype=object)

    def take(self, idx: np.ndarray) -> QuoteBatch:
        fields = {k: v[idx] for k, v in self.__dict__.items() if k not in ("pair_names", "trades")}
        return QuoteBatch(**fields, pair_names=self.pair_names, trades=self.trades.take(pa.array(idx)))


@dataclass
class Replies:
    """One envelope per request; reasons as indices into ``fxbatch.bank.model.REASONS`` (-1 = none)."""

    result_code: np.ndarray  # int64; 0 = success
    reason_idx: np.ndarray  # int8
    message: np.ndarray  # object: str or None
    transaction_id: np.ndarray | None = None  # object: the bank's header.transactionId
    # bool per request: False where the request was never sent because ``stop_sending`` came
    # first (its envelope means nothing); None: every request was sent.
    sent: np.ndarray | None = field(default=None, kw_only=True)

    @property
    def ok(self) -> np.ndarray:
        return np.asarray(self.result_code == 0)

    @property
    def unsent(self) -> np.ndarray:
        """bool per request: never sent (the caller stopped sending first)."""
        n = len(self.result_code)
        return np.zeros(n, dtype=bool) if self.sent is None else ~np.asarray(self.sent, dtype=bool)

    def spread(self, idx: np.ndarray, n: int) -> Self:
        """These replies to requests ``idx`` of ``n`` as replies to all ``n``: the others were not
        sent (result_code 1, no reason, ``sent`` False)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "sent" or value is None:
                continue
            value = np.asarray(value)
            fill: Any = {"b": False, "i": 0, "u": 0, "f": np.nan}.get(value.dtype.kind)
            if f.name == "result_code":
                fill = 1
            elif f.name == "reason_idx":
                fill = -1
            full = np.full(n, fill, dtype=value.dtype)
            full[idx] = value
            out[f.name] = full
        sent = np.zeros(n, dtype=bool)
        sent[idx] = True
        return type(self)(**out, sent=sent)

    @property
    def reason(self) -> np.ndarray:
        """Reason codes as the API's strings (None where the call succeeded)."""
        from fxbatch.bank.model import CODE_OBJ

        return np.asarray(CODE_OBJ[self.reason_idx.astype(np.int64) + 1])

    def envelope(self, i: int) -> dict[str, Any]:
        code = int(self.result_code[i])
        result: dict[str, Any] = {"resultCode": code, "resultMsg": "Success" if code == 0 else self.message[i]}
        if code:
            result["resultReasonCode"] = self.reason[i]
            result["validationErrors"] = []
        txn = self.transaction_id[i] if self.transaction_id is not None else None
        return {"header": {"transactionId": txn}, "result": result}


@dataclass
class QuoteReplies(Replies):
    quote_id: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # int64 (0 when failed)
    quote_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))  # float64: the bank's rate to the desk
    expires_at: np.ndarray = field(default_factory=lambda: np.zeros(0))  # float64 epoch seconds


@dataclass
class BookBatch:
    """bookquoteddeal requests; ``deal_txn_id`` is the caller's idempotency key."""

    quote_id: np.ndarray  # int64
    deal_txn_id: pa.Array  # strings: the caller's idempotency key
    quote_rate: np.ndarray  # float64: the bank's quote
    deal_rate: np.ndarray  # float64: the client's rate (the quote moved by the desk's spread)
    trade_key: np.ndarray  # uint64
    attempt: np.ndarray  # int64
    trade_id: pa.Array  # the caller's reference, kept in the bank's ledger
    run_id: int
    batch_id: int
    src_row: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.quote_id)

    def take(self, idx: np.ndarray) -> BookBatch:
        sel = pa.array(idx)
        return BookBatch(
            quote_id=self.quote_id[idx], deal_txn_id=self.deal_txn_id.take(sel), quote_rate=self.quote_rate[idx],
            deal_rate=self.deal_rate[idx], trade_key=self.trade_key[idx], attempt=self.attempt[idx],
            trade_id=self.trade_id.take(sel), run_id=self.run_id, batch_id=self.batch_id, src_row=self.src_row[idx],
        )  # fmt: skip


def unbookable(deal_rate: np.ndarray) -> np.ndarray:
    """Bookings no bank takes: the client's rate is not a positive number (a spread wider than
    the rate itself, e.g. 1,500 pips on JPY/ZAR at 0.1151). Both banks refuse them unsent."""
    with np.errstate(invalid="ignore"):
        bad: np.ndarray = ~(np.isfinite(deal_rate) & (deal_rate > 0))
    return bad


def unbookable_message(quote_rate: float, deal_rate: float) -> str:
    """Why ``unbookable`` refused a booking, for the trade's failure message."""
    return (
        f"not sent: the client's rate would be {deal_rate:.6g} (the quote {quote_rate:.6g} moved by the desk's "
        "spread); a rate must be above zero, so the spread is wider than the rate. Correct spread_pips."
    )


@dataclass
class BookReplies(Replies):
    deal_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))  # float64 (nan when failed)
    # bool: the deal is in the bank's ledger after this call, whatever the answer (a timeout may
    # have booked it); None when the bank cannot say (an HTTP bank: ask transaction_status).
    booked: np.ndarray | None = None
    # bool: the answer was settled with the bank's transaction status inside the call (an HTTP
    # bank asks as soon as a booking goes unanswered): a TIMEOUT_UNKNOWN here means the bank has
    # no such deal, and the caller need not ask again. None: the caller asks about every timeout.
    resolved: np.ndarray | None = None
    # bool: booked, says the bank's transaction status, though the bank refused this booking as a
    # duplicate (the deal id is taken by another quote): an earlier try of the trade's deal, whose
    # answer was lost, landed after all, so the deal is that try's quote, not this one (whose quote
    # is still open). None: never so (a bank that cannot tell).
    earlier: np.ndarray | None = None


@dataclass
class StatusReplies:
    """GetTxnStatus: ``status`` is COMPLETED, PENDING or NOT_FOUND per deal transaction id
    (UNKNOWN: the bank could not say; NOT_BOOKED: the desk settled it by hand, see
    ``fxbatch.engine.by_hand``)."""

    status: np.ndarray  # object
    quote_id: np.ndarray  # int64 (0 when unknown)
    deal_rate: np.ndarray  # float64 (nan when unknown)
    message: np.ndarray | None = None  # object: why a NOT_BOOKED deal was not booked (None: no message)


BookPart = tuple[int, int, BookReplies]  # (start, stop, the replies to the bookings batch[start:stop])


def book_in_parts(bank: Bank, batch: BookBatch, max_in_flight: int, part_rows: int) -> Iterator[BookPart]:
    """``bank.book_deals(batch)`` answered in parts of ``part_rows``, in order, each as soon as
    the bank has answered it, where the bank can (an ``HttpBank``: ``book_deals_in_parts``); any
    other bank answers the whole batch as one part."""
    streamed = getattr(bank, "book_deals_in_parts", None)
    if streamed is None or len(batch) <= part_rows:
        yield 0, len(batch), bank.book_deals(batch, max_in_flight)
        return
    yield from streamed(batch, max_in_flight, part_rows)


class BankUnavailable(Exception):
    """The bank could not be reached at all (the whole call failed, not single trades)."""


class Bank(Protocol):
    """What the engine needs from a bank."""

    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> QuoteReplies: ...

    def book_deals(self, batch: BookBatch, max_in_flight: int) -> BookReplies: ...

    def cancel_quotes(self, quote_ids: np.ndarray, max_in_flight: int) -> Replies: ...

    def transaction_status(
        self, deal_txn_ids: pa.Array, max_in_flight: int, run_id: int | None = None
    ) -> StatusReplies: ...

    def stop_sending(self) -> None:
        """Send no new createquote or bookquoteddeal request from now on (any thread may call it):
        requests in flight finish, the calls in progress answer the rest as not sent
        (``Replies.sent``). cancelquote and GetTxnStatus are still sent: they release and settle."""
        ...

    def close(self) -> None: ...
