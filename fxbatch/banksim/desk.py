"""The simulator's dealing desk: the five operations over its quote book.

The book lives in memory (quotes of the last minutes, every booked deal, each trade's attempts)
and every change to it is journalled (``ledger.Journal``) before the answer that depends on it
goes out. Decisions are made on the event loop without awaiting in between, so two calls can
never both book one quote or both use one deal id; an answer that rests on a change still
being written waits for that write.

Who fails and why is ``BankModel``'s decision, as for the in-process bank: a trade's key is a
hash of what it is (client, account, pair, side, currency, amount, value date), its attempt
1 + the quote requests the bank has had for that key. A quote-stage reason refuses the quote
request; a book-stage reason is kept with the quote and refuses its booking; a transient error
comes on attempt 1 only. A transient TIMEOUT_UNKNOWN at booking books the deal and loses the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from fxbatch.bank.http import wire
from fxbatch.bank.model import BOOK_STAGE, NONE, QUOTE_STAGE, REASONS, TIMEOUT, BankModel, RateWalk
from fxbatch.banksim.checks import Refusal, TradeChecks, iso, refuse
from fxbatch.banksim.ledger import BOOKED, CANCELLED, ISSUED, REFUSED, Event, Journal, Ledger, QuoteState, Snapshot
from fxbatch.models import FailureCode

KEEP_EXPIRED_S = 60.0  # how long an expired quote stays in memory (then it is read from the journal)
# The most a booking's client rate (dealRate) may be off the quote's rate, as a share of it: the
# loader takes spreads up to half a pair's rate (JPY/ZAR: SPREAD_TOO_WIDE), and the quote may have
# moved from the mid they were checked at.
DEAL_RATE_SPAN = 0.75
ORGANISATION, SYSTEM = "FXBATCH BANK SIMULATOR", "banksim"


@dataclass(slots=True)
class Quote:
    quote_id: int
    key: int
    attempt: int
    pair: str
    rate: float
    expires_at: float
    book_reason: int  # the model's refusal of its booking (REASONS index; NONE: it books)
    lose_answer: bool  # the model's lost answer: its booking is made and the answer lost
    user_id: str  # the dealer it was issued to (header.userId, as sent): only they book or cancel it
    cancelled: bool = False
    deal_id: str | None = None
    pending: asyncio.Future[None] | None = None  # its last change, until written


@dataclass(slots=True)
class Deal:
    deal_id: str
    quote_id: int
    booked_at: float
    user_id: str
    bank_txn: str
    pending: asyncio.Future[None] | None = None

    def transaction(self) -> wire.Transaction:
        return wire.Transaction(
            transactionId=self.bank_txn,
            userID=self.user_id,
            organisation=ORGANISATION,
            operation=wire.BOOK_DEAL,
            correlationID=self.deal_id,
            dateTime=iso(self.booked_at),
            status=wire.COMPLETED,
            systemID=SYSTEM,
            context=wire.TxnContext(transactionId=self.bank_txn, thirdPartyDealID=self.deal_id),
        )


@dataclass(frozen=True, slots=True)
class Booked:
    fresh: bool  # booked by this call (not the answer to a repeat)
    lost: bool  # the model's lost answer: the caller must not hear of it


def trade_key(req: wire.CreateQuoteRequest) -> int:
    """A stable 64-bit hash of what the trade is (its identity across attempts and restarts)."""
    t, c = req.trade, req.customer
    parts = (c.cifNo, c.fromSettlementAccount.accountNumber, t.currencyPair, t.tradeType, t.dealCurrency,
             repr(float(t.dealCurrencyAmount)), t.settlementDate)  # fmt: skip
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "little")


class Desk:
    def __init__(
        self,
        model: BankModel,
        walk: RateWalk,
        checks: TradeChecks,
        ledger: Ledger,
        journal: Journal,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model = model
        self.walk = walk
        self.checks = checks
        self.ledger = ledger
        self.journal = journal
        self.clock = clock
        settings = model.settings
        self.ttl_s = settings.quote_ttl_s
        self.tolerance = settings.price_tolerance_bps / 10_000
        self.keep_s = max(KEEP_EXPIRED_S, self.ttl_s)
        self._fates: dict[int, tuple[int, int]] = {}
        snap: Snapshot = ledger.load(clock() - self.keep_s)
        self.first_id, self.next_id = snap.first_id, snap.next_id
        self.attempts = snap.attempts
        self.quotes: dict[int, Quote] = {}
        self._order: deque[tuple[float, int]] = deque()  # (expiry, quote id) oldest first: for pruning
        for q in snap.quotes:
            self._remember(self._from_state(q))
        # Keyed by the id as the wire reads it (lower case), whatever case a journal row has.
        self.deals = {
            d.deal_id.lower(): Deal(d.deal_id, d.quote_id, d.booked_at, d.user_id, d.bank_txn) for d in snap.deals
        }

    # -- the model -----------------------------------------------------------------------------
    def _fate(self, key: int) -> tuple[int, int]:
        """(failing reason, first-attempt transient) of a trade key, as REASONS indices or NONE."""
        fate = self._fates.get(key)
        if fate is None:
            fate = self.model.fate(key)
            if len(self._fates) >= 100_000:
                self._fates.clear()
            self._fates[key] = fate
        return fate

    def _at_booking(self, key: int, attempt: int) -> tuple[int, bool]:
        """What a quote's booking meets: the trade's book-stage reason (every attempt), or on
        attempt 1 its transient error; a transient TIMEOUT_UNKNOWN books and loses the answer."""
        reason, transient = self._fate(key)
        if reason != NONE and BOOK_STAGE[reason + 1]:
            return reason, False
        if attempt == 1 and transient != NONE and BOOK_STAGE[transient + 1]:
            return (NONE, True) if transient == TIMEOUT else (transient, False)
        return NONE, False

    def _from_state(self, q: QuoteState) -> Quote:
        reason, lose = self._at_booking(q.trade_key, q.attempt)
        return Quote(q.quote_id, q.trade_key, q.attempt, q.pair, q.rate, q.expires_at, reason, lose, q.user_id,
                     q.cancelled, q.deal_id)  # fmt: skip

    # -- the book --------------------------------------------------------------------------------
    def _remember(self, quote: Quote) -> None:
        self.quotes[quote.quote_id] = quote
        self._order.append((quote.expires_at, quote.quote_id))

    def _prune(self, now: float) -> None:
        """Forget quotes expired for a while: all their changes are written, the journal has them."""
        order, horizon = self._order, now - self.keep_s
        while order and order[0][0] < horizon:
            self.quotes.pop(order.popleft()[1], None)

    async def _quote(self, quote_id: int) -> Quote | None:
        quote = self.quotes.get(quote_id)
        if quote is None and self.first_id <= quote_id < self.next_id:
            state = await self.journal.read(self.ledger.find_quote, quote_id)
            if state is not None:
                quote = self.quotes.get(quote_id)  # loaded by another call meanwhile?
                if quote is None:
                    quote = self._from_state(state)
                    self._remember(quote)
        return quote

    def _write(
        self, event: Event, holders: tuple[Quote | Deal, ...], undo: Callable[[], object]
    ) -> asyncio.Future[None]:
        """Journal ``event``, a change already made in memory: until it is written it is the
        holders' pending change; should the write fail, ``undo`` takes the change back."""
        change = self.journal.add(event)
        for holder in holders:
            holder.pending = change

        def written(done: asyncio.Future[None]) -> None:
            if done.exception() is not None:
                undo()
            for holder in holders:
                if holder.pending is done:
                    holder.pending = None

        change.add_done_callback(written)
        return change

    @staticmethod
    async def _written(change: asyncio.Future[None] | None) -> None:
        """Wait for the write an answer rests on (an error: the answer becomes a 500). Shielded:
        a caller that goes away does not stop the write."""
        if change is not None:
            await asyncio.shield(change)

    # -- the operations ------------------------------------------------------------------------
    async def create_quote(self, req: wire.CreateQuoteRequest, txn: str) -> Refusal | wire.QuotePayload:
        refusal = self.checks.check(req)
        if refusal is not None:
            return refusal
        key = trade_key(req)
        attempt = self.attempts.get(key, 0) + 1
        self.attempts[key] = attempt
        reason, transient = self._fate(key)
        now = self.clock()
        user, pair = req.header.userId, req.trade.currencyPair
        at_quote = reason if reason != NONE and QUOTE_STAGE[reason + 1] else NONE
        if at_quote == NONE and attempt == 1 and transient != NONE and QUOTE_STAGE[transient + 1]:
            at_quote = transient
        if at_quote != NONE:
            code = REASONS[at_quote]
            event = Event(REFUSED, int(now * 1e6), None, user, txn, key, attempt, code.value, pair)
            await self._written(self.journal.add(event))
            return refuse(code)
        quote_id = self.next_id
        self.next_id += 1
        step = np.array([quote_id - self.first_id], dtype=np.int64)
        rate = float(self.walk.mid(_PAIRS, step, np.array([self.walk.index[pair]]))[0])
        quote = Quote(quote_id, key, attempt, pair, rate, now + self.ttl_s, *self._at_booking(key, attempt), user)
        self._prune(now)
        self._remember(quote)
        event = Event(ISSUED, int(now * 1e6), quote_id, user, txn, key, attempt, None, pair, rate,
                      int(quote.expires_at * 1e6))  # fmt: skip
        await self._written(self._write(event, (quote,), lambda: self.quotes.pop(quote_id, None)))
        expiry = datetime.fromtimestamp(quote.expires_at, UTC)
        return wire.QuotePayload(quoteId=quote_id, quoteExpiryDateTime=expiry, quoteRate=rate)

    async def book_deal(self, req: wire.BookDealRequest, txn: str) -> Refusal | Booked:
        t = req.trade
        quote = await self._quote(t.quoteID)
        deal = self.deals.get(t.dealTransactionID)
        if deal is not None:
            await self._written(deal.pending)  # both answers rest on the deal: once it is written
            if deal.quote_id != t.quoteID:
                return refuse(FailureCode.DUPLICATE_TRANSACTION, ("trade.dealTransactionID", "ALREADY USED FOR ANOTHER QUOTE"))  # fmt: skip
            return Booked(fresh=False, lost=False)  # the same booking again: its answer
        refusal = self._booking_refusal(quote, t, req.header.userId)
        if refusal is not None:
            if quote is not None:
                await self._written(quote.pending)
            return refusal
        assert quote is not None  # refused above otherwise
        now = self.clock()
        deal = Deal(t.dealTransactionID, quote.quote_id, now, req.header.userId, txn)
        self.deals[deal.deal_id] = deal
        quote.deal_id = deal.deal_id
        event = Event(BOOKED, int(now * 1e6), quote.quote_id, deal.user_id, txn, pair=quote.pair,
                      quote_rate=t.quoteRate, deal_id=deal.deal_id, deal_rate=t.dealRate)  # fmt: skip

        def undo() -> None:
            self.deals.pop(t.dealTransactionID, None)
            quote.deal_id = None

        await self._written(self._write(event, (deal, quote), undo))
        return Booked(fresh=True, lost=quote.lose_answer)

    def _booking_refusal(self, quote: Quote | None, t: wire.BookTrade, user: str) -> Refusal | None:
        if quote is None:
            return refuse(FailureCode.QUOTE_NOT_FOUND, ("trade.quoteID", "UNKNOWN QUOTE"))
        if not _same_dealer(quote, user):
            return _other_dealer("trade.quoteID")
        if quote.deal_id is not None:
            return refuse(FailureCode.QUOTE_ALREADY_BOOKED, ("trade.quoteID", "QUOTE ALREADY BOOKED"))
        if quote.cancelled:
            return refuse(FailureCode.QUOTE_CANCELLED, ("trade.quoteID", "QUOTE CANCELLED"))
        if self.clock() > quote.expires_at:
            return refuse(FailureCode.QUOTE_EXPIRED, ("trade.quoteID", f"QUOTE EXPIRED AT {iso(quote.expires_at)}"))
        if abs(t.quoteRate - quote.rate) > self.tolerance * quote.rate:
            return refuse(FailureCode.PRICE_MOVED, ("trade.quoteRate", f"THE QUOTE'S RATE IS {quote.rate!r}"))
        if abs(t.dealRate - quote.rate) > DEAL_RATE_SPAN * quote.rate:
            # The client's rate is the quote moved by the desk's spread: never this far from it.
            return refuse(FailureCode.BANK_VALIDATION, ("trade.dealRate", "DEAL RATE NOT NEAR THE QUOTE'S RATE"))
        if quote.book_reason != NONE:
            return refuse(REASONS[quote.book_reason])
        return None

    async def cancel_quote(self, req: wire.QuoteRequest, txn: str) -> Refusal | None:
        quote = await self._quote(req.quoteID)
        if quote is None:
            return refuse(FailureCode.QUOTE_NOT_FOUND, ("quoteID", "UNKNOWN QUOTE"))
        if not _same_dealer(quote, req.header.userId):
            return _other_dealer("quoteID")
        if quote.deal_id is not None:
            await self._written(quote.pending)
            return refuse(FailureCode.QUOTE_ALREADY_BOOKED, ("quoteID", "QUOTE ALREADY BOOKED"))
        now = self.clock()
        if quote.cancelled or now > quote.expires_at:  # nothing left to cancel: fine, as asked
            await self._written(quote.pending)
            return None
        quote.cancelled = True
        event = Event(CANCELLED, int(now * 1e6), quote.quote_id, req.header.userId, txn, pair=quote.pair)

        def undo() -> None:
            quote.cancelled = False

        await self._written(self._write(event, (quote,), undo))
        return None

    async def latest_quote(self, req: wire.QuoteRequest) -> Refusal | wire.LatestQuotePayload:
        quote = await self._quote(req.quoteID)
        if quote is None:
            return refuse(FailureCode.QUOTE_NOT_FOUND, ("quoteID", "UNKNOWN QUOTE"))
        if not _same_dealer(quote, req.header.userId):
            return _other_dealer("quoteID")
        await self._written(quote.pending)
        if quote.deal_id is not None:
            return refuse(FailureCode.QUOTE_ALREADY_BOOKED, ("quoteID", "QUOTE ALREADY BOOKED"))
        if quote.cancelled:
            return refuse(FailureCode.QUOTE_CANCELLED, ("quoteID", "QUOTE CANCELLED"))
        if self.clock() > quote.expires_at:
            return refuse(FailureCode.QUOTE_EXPIRED, ("quoteID", f"QUOTE EXPIRED AT {iso(quote.expires_at)}"))
        expiry = datetime.fromtimestamp(quote.expires_at, UTC)
        return wire.LatestQuotePayload(quoteId=quote.quote_id, quoteExpiryDateTime=expiry)

    async def txn_status(self, req: wire.TxnStatusRequest) -> Refusal | wire.Transaction:
        """A booking by the caller's dealTransactionID, or by the bank's id of the booking call."""
        deal = self.deals.get(req.transactionID)
        if deal is None:
            found = await self.journal.read(self.ledger.find_booking, req.transactionID)
            if found is not None:
                deal = Deal(found.deal_id, found.quote_id, found.booked_at, found.user_id, found.bank_txn)
        if deal is None:
            msg = f"no transaction {req.transactionID}"
            return Refusal(404, wire.TXN_NOT_FOUND, msg, [wire.FieldError(validation="transactionID", error=msg)])
        await self._written(deal.pending)
        return deal.transaction()


def _same_dealer(quote: Quote, user: str) -> bool:
    """A quote is the dealer's it was issued to (e-mail addresses compared without case)."""
    return quote.user_id == user or quote.user_id.lower() == user.lower()


def _other_dealer(field: str) -> Refusal:
    return refuse(FailureCode.NOT_AUTHORISED, (field, "QUOTE ISSUED TO ANOTHER DEALER"))


_PAIRS = np.array([""], dtype=object)  # RateWalk.mid's pair names, unused when indices are given
