"""The simulator's dealing desk: API requests in, SimulatedBank decisions out.

The service gathers the requests that wait together and hands each kind to the in-process
``SimulatedBank`` as one batch. The bank decides per row from (seed, trade key, attempt) only,
so grouping never changes an answer, and its ledger is this service's own DuckDB file, so
booked deals survive the service being killed. The batcher makes one desk call at a time
(quotes on the event loop, bookings and status lookups on its desk thread), so the bank's quote
book is never used by two threads at once, and each thread has its own database cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from fxbatch.bank.model import CODE_OBJ, TIMEOUT
from fxbatch.bank.port import BookBatch, QuoteBatch
from fxbatch.bank.simulated import SimulatedBank
from fxbatch.rates import RateTable

_TEXT = (
    "trade_id",
    "client_cif",
    "account_number",
    "currency_pair",
    "side",
    "amount_currency",
    "delivery",
    "value_date",
)


@dataclass
class Answer:
    """One row's decision: result code, reason (API string or None), message, payload fields."""

    code: int
    reason: str | None
    message: str | None
    quote_id: int = 0
    rate: float = float("nan")
    expires_at: float = float("nan")
    status: str = ""
    lost: bool = False  # a booking the bank made whose answer is lost on the way back


class Desk:
    """The bank's decisions for groups of requests of one kind; one caller at a time."""

    def __init__(self, bank: SimulatedBank, rates: RateTable) -> None:
        self.bank = bank
        self.rates = rates

    def warm_up(self, kind: str) -> None:
        """Pay a kind's one-off costs before the first client does, on the thread that decides it:
        for quotes, a quote per pair (numpy's first calls, the rate walk's first block); for
        bookings and status lookups, the ledger's index and this thread's database cursor. Nothing
        is booked: the quotes are left to expire."""
        if kind == "quote":
            rows = [
                {"trade_key": 0, "step": 0, "attempt": 1, "run_id": 0, "amount": 1000.0,
                 "amount_currency": pair.split("/")[0], "currency_pair": pair, "side": "BUY", "client_cif": "",
                 "account_number": "", "delivery": "SPOT", "value_date": ""}
                for pair in self.rates.pairs
            ]  # fmt: skip
            self._quote(rows)
        else:
            self.bank.transaction_status(pa.array(["warm-up"], type=pa.string()), 1)
            self.bank.store.cursor().execute("SELECT count(*) FROM sim_ledger_rows").fetchall()

    def decide(self, kind: str, rows: list[dict[str, Any]]) -> list[Answer]:
        """``kind`` is quote, book or status; one answer per row, in order."""
        return {"quote": self._quote, "book": self._book, "status": self._status}[kind](rows)

    # -- the three decisions ----------------------------------------------------------
    def _quote(self, rows: list[dict[str, Any]]) -> list[Answer]:
        pairs = sorted({r["currency_pair"] for r in rows})
        code = {p: i for i, p in enumerate(pairs)}
        factor = {c: self.rates.to_zar(c) for c in {r["amount_currency"] for r in rows}}
        amount = np.array([r["amount"] for r in rows], dtype=np.float64)
        batch = QuoteBatch(
            trade_key=np.array([r["trade_key"] for r in rows], dtype=np.uint64),
            step=np.array([r["step"] for r in rows], dtype=np.int64),
            attempt=np.array([r["attempt"] for r in rows], dtype=np.int64),
            amount=amount,
            amount_zar=amount * np.array([factor[r["amount_currency"]] or np.nan for r in rows]),
            is_buy=np.array([r["side"] == "BUY" for r in rows], dtype=bool),
            pair_code=np.array([code[r["currency_pair"]] for r in rows], dtype=np.int32),
            pair_names=np.array(pairs, dtype=object),
            trades=pa.table({f: pa.array([r.get(f) or "" for r in rows], type=pa.string()) for f in _TEXT}),
        )
        q = self.bank.create_quotes(batch, len(rows))
        self._compact_quote_book()
        reasons = CODE_OBJ[q.reason_idx.astype(np.int64) + 1]
        return [
            Answer(int(q.result_code[i]), reasons[i], q.message[i], int(q.quote_id[i]), float(q.quote_rate[i]),
                   float(q.expires_at[i]))
            for i in range(len(rows))
        ]  # fmt: skip

    def _compact_quote_book(self) -> None:
        """Merge the bank's per-call quote book into one sorted entry, dropping expired quotes.

        SimulatedBank keeps its last 256 calls' quotes; with one small batch per HTTP burst a
        quote would fall off that list long before its 30 s are up. An expired quote and an
        unknown one get the same answer (QUOTE_EXPIRED), so dropping expired ones changes nothing.
        """
        book = self.bank._quotes  # the one private piece the desk relies on
        if len(book) < 16:
            return
        ids = np.concatenate([b[0] for b in book])
        exp = np.concatenate([b[1] for b in book])
        rate = np.concatenate([b[2] for b in book])
        live = exp >= self.bank.clock()
        ids, exp, rate = ids[live], exp[live], rate[live]
        # Newest entry wins for a quote id issued twice (a replayed attempt): keep the max expiry.
        order = np.lexsort((-exp, ids))
        ids, exp, rate = ids[order], exp[order], rate[order]
        first = np.ones(len(ids), dtype=bool)
        first[1:] = ids[1:] != ids[:-1]
        book.clear()
        book.append((ids[first], exp[first], rate[first]))

    def _book(self, rows: list[dict[str, Any]]) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(rows)
        for run_id in sorted({r["run_id"] for r in rows}):  # the ledger keeps one run id per call
            idx = [i for i, r in enumerate(rows) if r["run_id"] == run_id]
            sub = [rows[i] for i in idx]
            ids = pa.array([r["deal_id"] for r in sub], type=pa.string())
            b = self.bank.book_deals(
                BookBatch(
                    quote_id=np.array([r["quote_id"] for r in sub], dtype=np.int64),
                    deal_txn_id=ids,
                    quote_rate=np.array([r["quote_rate"] for r in sub], dtype=np.float64),
                    deal_rate=np.array([r["deal_rate"] for r in sub], dtype=np.float64),
                    trade_key=np.array([r["trade_key"] for r in sub], dtype=np.uint64),
                    attempt=np.array([r["attempt"] for r in sub], dtype=np.int64),
                    trade_id=pa.array([""] * len(sub), type=pa.string()),
                    run_id=run_id,
                    batch_id=0,
                    src_row=np.array([r["step"] for r in sub], dtype=np.int64),
                ),
                len(sub),
            )
            reasons = CODE_OBJ[b.reason_idx.astype(np.int64) + 1]
            # A timeout the bank booked anyway is a lost answer: the service drops the connection.
            # The bank says which deals its ledger holds, so this needs no status lookup.
            assert b.booked is not None  # SimulatedBank always says
            lost = (b.reason_idx == TIMEOUT) & b.booked
            for j, i in enumerate(idx):
                answers[i] = Answer(
                    int(b.result_code[j]), reasons[j], b.message[j], int(sub[j]["quote_id"]), float(b.deal_rate[j]),
                    lost=bool(lost[j]),
                )  # fmt: skip
        return [a for a in answers if a is not None]

    def _status(self, rows: list[dict[str, Any]]) -> list[Answer]:
        st = self.bank.transaction_status(pa.array([r["deal_id"] for r in rows], type=pa.string()), len(rows))
        return [
            Answer(0, None, None, int(st.quote_id[i]), float(st.deal_rate[i]), status=str(st.status[i]))
            for i in range(len(rows))
        ]
