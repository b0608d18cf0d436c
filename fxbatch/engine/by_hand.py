"""Bookings in doubt settled by hand: the desk's word in place of the bank's GetTxnStatus.

A booking whose answer was lost is settled by the bank's transaction status. When the bank cannot
say (it stays PENDING, answers a status fxbatch does not know, or is gone), the run stays
INTERRUPTED and nothing is booked again. The desk then asks the bank's dealers, and an approver
records what they said: booked (the trade ends SUCCESS with the quote it was sent with) or not
booked (it ends FAILED, TIMEOUT_UNKNOWN, with the approver's note; a retry run may book it anew).

``HandSettlement`` is a bank that answers only ``transaction_status``, from those decisions, so
the run's own worker settles the trades exactly as it settles the bank's answers on resume: same
records, rates, income and final status. It sends nothing anywhere; it is never asked to quote or book.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from fxbatch.bank.port import BookBatch, BookReplies, QuoteBatch, QuoteReplies, Replies, StatusReplies

BOOKED = "COMPLETED"
NOT_BOOKED = "NOT_BOOKED"
UNSETTLED = "NOT_SETTLED"


class HandSettlement:
    """The desk's decisions (deal transaction id -> booked?) answered as transaction statuses;
    any other deal is NOT_SETTLED (it stays in doubt)."""

    def __init__(self, decisions: Mapping[str, bool], message: str) -> None:
        self.decisions = dict(decisions)
        self.message = message  # the FAILED trades' message: who settled them, and their note

    def transaction_status(
        self, deal_txn_ids: pa.Array, max_in_flight: int, run_id: int | None = None
    ) -> StatusReplies:
        ids = deal_txn_ids.cast(pa.string()).to_pylist()
        said = [self.decisions.get(i) if i is not None else None for i in ids]
        status = np.array([UNSETTLED if s is None else BOOKED if s else NOT_BOOKED for s in said], dtype=object)
        n = len(ids)
        message = np.array([self.message if s is False else None for s in said], dtype=object)
        return StatusReplies(status, np.zeros(n, dtype=np.int64), np.full(n, np.nan), message)

    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> QuoteReplies:
        raise RuntimeError("settling by hand never asks for a quote")

    def book_deals(self, batch: BookBatch, max_in_flight: int) -> BookReplies:
        raise RuntimeError("settling by hand never books")

    def cancel_quotes(self, quote_ids: np.ndarray, max_in_flight: int) -> Replies:
        raise RuntimeError("settling by hand never cancels a quote")

    def stop_sending(self) -> None:
        pass  # it sends nothing

    def close(self) -> None:
        pass
