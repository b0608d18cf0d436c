"""The trades a run has in hand, as parallel columns, and a wave waiting for its bookings."""

from __future__ import annotations

import queue
from concurrent.futures import Future
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from fxbatch.lifecycle import CODE_OF
from fxbatch.models import TradeStatus

T = TradeStatus


class Earlier(NamedTuple):
    """Bookings the bank made with an earlier try's quote (``BookReplies.earlier``): ``at``, their
    indices in the booking batch; the quote that try sent (from its in-flight row)."""

    at: np.ndarray
    quote_id: np.ndarray
    quote_rate: np.ndarray
    quote_expiry: np.ndarray
    quoted_at: np.ndarray


class Answers(NamedTuple):
    """The answers to a booking batch, per booking."""

    booked: np.ndarray
    reasons: np.ndarray  # reason index
    rates: np.ndarray  # deal rate
    messages: np.ndarray
    unsent: np.ndarray  # not sent (the run was cancelled first)
    # In doubt: the bank's status still PENDING, or it could not say, after asking again (neither
    # booked nor refused).
    doubt: np.ndarray
    earlier: Earlier | None = None


@dataclass(eq=False)  # compared by identity: the engine removes a landed one from its queue
class Booking:
    """A quoted wave and the answers to its bookings (``good``: the quoted trades asked about).

    Answered whole (``parts`` None): ``answers`` gives them all at once. Answered in parts (a
    wave whose every trade is booked, ``good`` = all of it): ``parts`` hands over (start, stop,
    answers to those trades) in order as the bank answers them, then None once the call is over,
    whose error (if any) ``answers`` then raises; ``landed`` trades of the wave are settled.
    """

    wave: Working
    good: np.ndarray
    answers: Future[Answers | None] | None
    parts: queue.SimpleQueue[tuple[int, int, Answers] | None] | None = None
    landed: int = 0
    over: bool = False  # every answer settled

    def in_hand(self) -> np.ndarray:
        """The states of the wave's trades not settled yet."""
        return self.wave.states[self.landed :]


TEXT_FIELDS = ["trade_id", "client_cif", "account_number", "currency_pair", "side", "amount_currency", "delivery",
                "value_date"]  # fmt: skip
WORK_ARRAYS = (
    "src", "keys", "attempt", "last_attempt", "states", "failure", "quote_id", "quote_rate", "quote_expiry",
    "deal_rate", "executing_at", "quoted_at", "finished_at", "not_before", "amount", "amount_zar", "spread_pips",
    "value_day", "amount_is_base", "is_buy", "pair_code", "booking_sent",
)  # fmt: skip


@dataclass
class Working:
    """The trades a run has taken on and not yet persisted as final, as parallel columns."""

    src: np.ndarray
    keys: np.ndarray
    attempt: np.ndarray
    last_attempt: np.ndarray
    states: np.ndarray
    failure: np.ndarray
    quote_id: np.ndarray
    quote_rate: np.ndarray
    quote_expiry: np.ndarray
    deal_rate: np.ndarray
    executing_at: np.ndarray
    quoted_at: np.ndarray
    finished_at: np.ndarray
    not_before: np.ndarray
    amount: np.ndarray
    amount_zar: np.ndarray
    spread_pips: np.ndarray
    value_day: np.ndarray  # the run's value date, days since 1970-01-01
    amount_is_base: np.ndarray  # bool: the amount is in the base currency
    is_buy: np.ndarray
    pair_code: np.ndarray
    booking_sent: np.ndarray  # bool: a booking of the trade was asked for in this run (its deal id was sent)
    deal_ids: pa.Array
    trades: pa.Table

    def __len__(self) -> int:
        return len(self.src)

    @classmethod
    def empty(cls) -> Working:
        kinds = {"keys": np.uint64, "states": np.int8, "failure": np.int8, "is_buy": bool, "amount_is_base": bool,
                 "booking_sent": bool}  # fmt: skip
        ints = {"src", "attempt", "last_attempt", "quote_id", "pair_code"}
        arrays = {
            name: np.zeros(0, dtype=kinds.get(name, np.int64 if name in ints else np.float64)) for name in WORK_ARRAYS
        }
        schema = pa.schema([(f, pa.string()) for f in TEXT_FIELDS])
        return cls(**arrays, deal_ids=pa.array([], type=pa.string()), trades=schema.empty_table())

    def due(self, now: float) -> np.ndarray:
        """Trades waiting for their next attempt whose backoff has passed."""
        waiting = (self.states == CODE_OF[T.PENDING]) | (self.states == CODE_OF[T.EXECUTING])
        return np.asarray(waiting & (self.not_before <= now))

    def final(self) -> np.ndarray:
        return np.isin(self.states, [CODE_OF[T.SUCCESS], CODE_OF[T.FAILED], CODE_OF[T.CANCELLED]])

    def extend(self, other: Working) -> Working:
        if not len(self):
            return other
        arrays = {name: np.concatenate([getattr(self, name), getattr(other, name)]) for name in WORK_ARRAYS}
        return Working(
            **arrays,
            deal_ids=pa.concat_arrays([self.deal_ids, other.deal_ids]),
            trades=_concat(self.trades, other.trades),
        )

    def keep(self, mask: np.ndarray) -> Working:
        arrays = {name: getattr(self, name)[mask] for name in WORK_ARRAYS}
        sel = pa.array(mask)
        return Working(**arrays, deal_ids=self.deal_ids.filter(sel), trades=self.trades.filter(sel))


def _concat(a: pa.Table, b: pa.Table) -> pa.Table:
    """``a`` then ``b`` without copying the text (merged only once the pieces become many)."""
    table = pa.concat_tables([a, b.cast(a.schema)])
    return table.combine_chunks() if table.column(0).num_chunks > 16 else table


def mask_of(n: int, idx: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return mask
