"""HttpBank: the bank port over the trading API, one request per trade and operation.

Each port call fans its batch out on one asyncio event loop that runs on its own thread for the
bank's lifetime: ``max_in_flight`` worker coroutines take the next trade's request until none is
left, so at most that many calls are in flight, over httpx's pooled kept-alive connections. The
calling thread waits for the whole batch (bookings can also be handed back part by part as they
are answered: ``book_deals_in_parts``).

Requests are built from the wire models and every answer is validated with them: a refusal
becomes the trade's reason and message (the bank's resultMsg and validation errors); an answer
that breaks the contract raises ``ContractError``, which stops the run INTERRUPTED (resumable).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent import futures
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from fxbatch.bank.http import wire
from fxbatch.bank.http.caller import SHARD, Caller, NoAnswer, NotSent, Sleep
from fxbatch.bank.http.config import HttpBankConfig
from fxbatch.bank.http.token import TokenCache
from fxbatch.bank.model import NONE, REASON_INDEX, TIMEOUT
from fxbatch.bank.port import (
    BankUnavailable,
    BookBatch,
    BookPart,
    BookReplies,
    QuoteBatch,
    QuoteReplies,
    Replies,
    StatusReplies,
    unbookable,
    unbookable_message,
)
from fxbatch.errors import SettingsError
from fxbatch.models import FAILURES, FailureCode

T = TypeVar("T")
_NAN = float("nan")
_VALIDATION = REASON_INDEX[FailureCode.BANK_VALIDATION.value]
_REJECTED = REASON_INDEX[FailureCode.BANK_REJECTED.value]
_DUPLICATE = REASON_INDEX[FailureCode.DUPLICATE_TRANSACTION.value]
# A booking refused with these may be ours already (an earlier try whose answer was lost): the
# bank's transaction status says.
_MAYBE_OURS = frozenset(
    {REASON_INDEX[FailureCode.DUPLICATE_TRANSACTION.value], REASON_INDEX[FailureCode.QUOTE_ALREADY_BOOKED.value]}
)
_PENDING_POLLS = 6  # GetTxnStatus answered PENDING: asked again this many times, after a backoff each
# COMPLETED, PENDING, NOT_FOUND, UNKNOWN (no usable answer), or "status <WORD>": a transaction status
# the documentation does not give (neither booked nor refused for fxbatch; shown to the desk).
Found = str


class _LoopThread:
    """An event loop on a daemon thread; ``run`` executes a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fxbatch-http", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _Slots:
    """Calls in flight across the port calls running at once (the engine quotes a wave while
    the wave before is booked): together they have no more than ``max_in_flight`` in flight, and
    a small call takes a slot as soon as the calls in flight are fewer than that (the limit is
    the bank-wide one, not the call's own width). A freed slot goes to the request waiting
    longest, so a small call (a retry wave's quotes) shares the slots with a big one in flight
    (a wave's bookings) instead of waiting for all of it.

    Background requests (cancelquote: releasing quotes is best effort and no trade waits for
    it) take a slot only when no other request wants it: a freed slot is offered to them only
    after the request that freed it has had the chance to take it again for its call's next
    one, so they fill slots the run's own work leaves idle (between a wave's quotes and its
    bookings, the last retries) instead of delaying quotes and bookings. They never hold more than
    three quarters of the slots (at least one): a call in flight cannot be taken back, so when a
    wave's last bookings were answered and its refused quotes' cancels took every slot, the
    quotes of its retries, asked a few ms later, waited out a whole round for a slot.
    """

    def __init__(self) -> None:
        self.used = 0
        self.used_background = 0  # of ``used``
        self.limit = 1
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._background: deque[asyncio.Future[None]] = deque()
        self._offer: asyncio.Handle | None = None

    @property
    def background_room(self) -> bool:
        return self.used_background < max(1, self.limit * 3 // 4)

    async def acquire(self, limit: int, *, background: bool = False) -> None:
        self.limit = limit
        free = self.used < limit and not self._waiting
        if free and not (background and (self._background or not self.background_room)):
            self.used += 1
            self.used_background += background
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._background if background else self._waiting).append(waiter)
        try:
            await waiter  # handed a slot (``used`` stays as it is for a handover)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(background=background)  # handed a slot, then cancelled: pass it on
            raise

    def release(self, *, background: bool = False) -> None:
        self.used_background -= background
        while self._waiting:  # handed to the longest waiting request, whichever call it is for
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.used -= 1
        if self._background and self._offer is None:
            # Offered once the releasing request's task has gone on (it takes the slot back at
            # once when its call has more to send).
            self._offer = asyncio.get_running_loop().call_soon(self._offer_background)

    def _offer_background(self) -> None:
        self._offer = None
        while self._background and self.used < self.limit and not self._waiting and self.background_room:
            waiter = self._background.popleft()
            if not waiter.done():
                self.used += 1
                self.used_background += 1
                waiter.set_result(None)


class HttpBank:
    """Implements ``fxbatch.bank.port.Bank`` over HTTP."""

    def __init__(
        self,
        config: HttpBankConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        connect_now: bool = True,
    ) -> None:
        self.config = config
        try:
            self._header = wire.RequestHeader(userId=config.user_id)
        except ValidationError:
            raise SettingsError(
                f"FXBATCH_BANK_USER_ID must be the dealer's e-mail address (header.userId), not {config.user_id!r}."
            ) from None
        timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        limits = httpx.Limits(max_connections=SHARD, max_keepalive_connections=SHARD, keepalive_expiry=30.0)

        # One SSL context for every client (each would build and load its own CA bundle), made
        # as httpx makes its default one (SSL_CERT_FILE / SSL_CERT_DIR honoured); none at all
        # when neither the API nor the token endpoint is https (loading the bundle takes ~30 ms
        # before a run's first call; plain-HTTP requests never use the context).
        uses_tls = any(u.lower().startswith("https:") for u in (config.base_url, config.token_endpoint))
        ssl_context: ssl.SSLContext | bool = httpx.create_ssl_context() if uses_tls else False

        def new_client() -> httpx.AsyncClient:
            return httpx.AsyncClient(verify=ssl_context, timeout=timeout, limits=limits, transport=transport)

        self.client = new_client()  # the token's
        self.tokens = TokenCache(config, self.client, clock)
        self.caller = Caller(config, new_client, self.tokens, sleep, clock)
        self._slots = _Slots()
        self._running = 0  # port calls in progress
        self._loop = _LoopThread()
        if connect_now:
            # Bad credentials surface here, before a run exists; a bank that is down now is
            # found out by the run, which then ends INTERRUPTED rather than failing trades.
            try:
                with contextlib.suppress(BankUnavailable):
                    self._loop.run(self.tokens.fetch())
            except BaseException:
                self.close()
                raise

    @property
    def calls(self) -> dict[str, int]:
        """Requests sent per operation (retries included), and token requests."""
        return {**self.caller.calls, "token": self.tokens.fetched}

    # -- fan-out -------------------------------------------------------------------
    def _fan_out(
        self, fn: Callable[[int], Awaitable[T]], n: int, max_in_flight: int, *, background: bool = False
    ) -> list[T]:
        if not n:
            return []
        return self._loop.run(self._gather(fn, n, max_in_flight, background))

    async def _gather(self, fn: Callable[[int], Awaitable[T]], n: int, max_in_flight: int, background: bool) -> list[T]:
        """``fn(i)`` for every i below ``n``, taken in order by at most ``max_in_flight`` workers."""
        limit = max(1, min(max_in_flight, 1024))
        width = min(limit, n)
        caller, slots = self.caller, self._slots
        if not self._running:
            caller.down = False  # a new start (not while another port call is still failing)
        self._running += 1
        out: list[Any] = [None] * n
        todo = iter(range(n))
        first: list[BaseException] = []  # the error that stopped the call (not the others' giving up)

        async def worker() -> None:
            for i in todo:  # shared: each worker takes the next trade
                await slots.acquire(limit, background=background)
                try:
                    out[i] = await fn(i)
                except NotSent:
                    pass  # stop_sending came first: out[i] stays None (not sent)
                except BaseException as exc:
                    if not caller.down or not first:
                        first.append(exc)
                    if not background or isinstance(exc, BankUnavailable):
                        # The others give up quickly instead of each waiting out the window. A
                        # background call's own failure (a cancel's answer breaking the contract)
                        # ends that call only: the quotes and bookings in flight go on.
                        caller.down = True
                    raise
                finally:
                    slots.release(background=background)

        try:
            # Wait for all, so no request outlives the call.
            await asyncio.gather(*(worker() for _ in range(width)), return_exceptions=True)
        finally:
            self._running -= 1
        if first:
            raise first[0]
        return out

    def stop_sending(self) -> None:
        self.caller.halt()

    @staticmethod
    def _columns(rows: list[Any], missing: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], np.ndarray | None]:
        """The fan-out's rows as columns, a row never sent (None) given ``missing``; and which
        rows were sent (None: all)."""
        sent = np.array([r is not None for r in rows], dtype=bool)
        if not sent.all():
            rows = [missing if r is None else r for r in rows]
        col = list(zip(*rows, strict=True)) if rows else [()] * len(missing)
        return col, None if sent.all() else sent

    # -- one answer --------------------------------------------------------------------
    @staticmethod
    def _answer(op: str, status: int, content: bytes) -> tuple[wire.Answer | None, tuple[int, int, str | None]]:
        """The validated answer (None for an HTTP-level failure) and its (code, reason, message).

        A 2xx must be the operation's documented answer, a 4xx its result block (else
        ContractError, see ``wire.error_result``).
        """
        answer, block = HttpBank._answer_block(op, status, content)
        return answer, wire.map_result(status, block)

    @staticmethod
    def _answer_block(op: str, status: int, content: bytes) -> tuple[wire.Answer | None, wire.Result | None]:
        """The validated answer of a 2xx (None otherwise) and the answer's result block (None
        where an error answer has none)."""
        if 200 <= status < 300:
            answer = wire.parse_answer(op, status, content)
            return answer, answer.result
        return None, wire.error_result(op, status, content)

    # -- the port ----------------------------------------------------------------------
    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> QuoteReplies:
        cif, account = batch.column("client_cif").tolist(), batch.column("account_number").tolist()
        ccy, delivery = batch.column("amount_currency").tolist(), batch.column("delivery").tolist()
        value_date, pair = batch.column("value_date").tolist(), batch.pair.tolist()
        is_buy, amount = batch.is_buy.tolist(), batch.amount.tolist()
        post, header = self.caller.post, self._header

        async def one(i: int) -> tuple[int, int, str | None, str | None, int, float, float]:
            base, quote = str(pair[i]).split("/")
            pays, gets = (quote, base) if is_buy[i] else (base, quote)
            try:
                request = wire.CreateQuoteRequest(
                    header=header,
                    customer=wire.Customer(
                        cifNo=cif[i],
                        # Assumed: the trade names one settlement account (a multi-currency one).
                        fromSettlementAccount=wire.SettlementAccount(currency=pays, accountNumber=account[i]),
                        toSettlementAccount=wire.SettlementAccount(currency=gets, accountNumber=account[i]),
                    ),
                    trade=wire.QuoteTrade(
                        tradeType="Buy" if is_buy[i] else "Sell",
                        deliveryType=str(delivery[i] or "SPOT").title(),
                        currencyPair=str(pair[i]),
                        dealCurrency=ccy[i],
                        dealCurrencyAmount=float(amount[i]),
                        settlementDate=wire.settlement_text(str(value_date[i] or "")),
                        dealDateTime=datetime.now(UTC),
                    ),
                )
            except ValidationError as exc:  # the bank would refuse it: not sent
                detail = "; ".join(f"{e.validation}: {e.error}" for e in wire.field_errors(exc))
                return 1, _VALIDATION, f"not sent, the bank would refuse it: {detail}", None, 0, _NAN, _NAN
            status, content = await post(wire.CREATE_QUOTE, request.model_dump_json(exclude_none=True).encode(),
                                         resend=True)  # fmt: skip
            answer, (code, reason, msg) = self._answer(wire.CREATE_QUOTE, status, content)
            txn = answer.header.transactionId if answer is not None else None
            if code or not isinstance(answer, wire.CreateQuoteAnswer) or answer.payload is None:
                return code or 1, reason, msg, txn, 0, _NAN, _NAN
            p = answer.payload
            return 0, NONE, None, txn, p.quoteId, p.quoteRate, p.quoteExpiryDateTime.timestamp()

        rows = self._fan_out(one, len(batch), max_in_flight)
        col, sent = self._columns(rows, (1, NONE, None, None, 0, _NAN, _NAN))
        return QuoteReplies(
            np.array(col[0], dtype=np.int64), np.array(col[1], dtype=np.int8), np.array(col[2], dtype=object),
            np.array(col[3], dtype=object), np.array(col[4], dtype=np.int64), np.array(col[5], dtype=np.float64),
            np.array(col[6], dtype=np.float64), sent=sent,
        )  # fmt: skip

    def book_deals(self, batch: BookBatch, max_in_flight: int) -> BookReplies:
        return self._book_replies(self._fan_out(self._booker(batch), len(batch), max_in_flight))

    def book_deals_in_parts(self, batch: BookBatch, max_in_flight: int, part_rows: int) -> Iterator[BookPart]:
        """``book_deals`` handed back part by part: (start, stop, the replies to ``batch[start:stop]``),
        in order, each as soon as every request of its part is answered (the requests go out in
        order, ``max_in_flight`` at a time, as in ``book_deals``), so the caller can act on the
        first answers (re-quote a refused booking) while the rest are still in flight.

        If the call fails (the bank went away), the parts before the first one holding a failed
        request are handed back, then its error is raised (parts after it go unreported even when
        answered: the caller treats them as unanswered). If the caller stops early, the requests
        not sent yet are not sent. The call's requests all end before the iterator does.
        """
        n = len(batch)
        if not n:
            return
        part_rows = max(1, part_rows)
        one = self._booker(batch)
        rows: list[Any] = [None] * n
        left = [min(part_rows, n - lo) for lo in range(0, n, part_rows)]
        answered: queue.SimpleQueue[int | None] = queue.SimpleQueue()

        def count(i: int) -> None:
            k = i // part_rows
            left[k] -= 1
            if not left[k]:
                answered.put(k)

        closing = False  # the caller stopped taking parts: send nothing more

        async def counted(i: int) -> Any:
            # Answered (or not sent: the caller stopped sending): one request fewer to wait for. A
            # request that failed is never counted, so its part is never handed back as answered:
            # the call's error is raised in its place.
            try:
                if closing:
                    raise NotSent(wire.BOOK_DEAL)
                rows[i] = await one(i)
            except NotSent:
                count(i)
                raise
            count(i)
            return rows[i]

        call = asyncio.run_coroutine_threadsafe(self._gather(counted, n, max_in_flight, False), self._loop.loop)
        call.add_done_callback(lambda _: answered.put(None))
        ready: set[int] = set()
        try:
            for k in range(len(left)):
                while k not in ready:
                    got = answered.get()
                    if got is None:  # the call is over: every part it answered was put first
                        call.result()  # its error
                        raise RuntimeError("a booking call ended with parts unanswered")  # pragma: no cover
                    ready.add(got)
                lo = k * part_rows
                hi = min(lo + part_rows, n)
                yield lo, hi, self._book_replies(rows[lo:hi])
            call.result()
        finally:
            closing = True
            futures.wait([call])  # no request outlives the call, even when the caller stops early

    def _booker(
        self, batch: BookBatch
    ) -> Callable[[int], Awaitable[tuple[int, int, str | None, str | None, float, bool, bool]]]:
        """The coroutine that books ``batch``'s i-th deal: (code, reason, message, the bank's
        transaction id, deal rate, resolved with the bank's status inside the call, booked by an
        earlier try with another quote: see ``BookReplies.earlier``)."""
        ids = batch.deal_txn_id.cast(pa.string()).to_pylist()
        quote_id, quote_rate, deal_rate = batch.quote_id.tolist(), batch.quote_rate.tolist(), batch.deal_rate.tolist()
        post, header = self.caller.post, self._header
        timeout = FAILURES[FailureCode.TIMEOUT_UNKNOWN]
        bad = unbookable(batch.deal_rate).tolist()

        async def one(i: int) -> tuple[int, int, str | None, str | None, float, bool, bool]:
            if bad[i]:  # the bank would refuse it: not sent
                return 1, _VALIDATION, unbookable_message(quote_rate[i], deal_rate[i]), None, _NAN, False, False
            trade = wire.BookTrade(quoteID=int(quote_id[i]), dealTransactionID=ids[i], quoteRate=float(quote_rate[i]),
                                   dealRate=float(deal_rate[i]))  # fmt: skip
            body = wire.BookDealRequest(header=header, trade=trade).model_dump_json().encode()
            for _ in range(3):
                try:
                    status, content = await post(wire.BOOK_DEAL, body, resend=False)
                except NoAnswer:
                    found = await self._status_one(ids[i])
                    if found == "COMPLETED":
                        return 0, NONE, None, None, deal_rate[i], True, False
                    if found == "NOT_FOUND":
                        continue  # the bank has no such deal: book it (same id, so never twice)
                    break  # PENDING or the bank cannot say: not booked again; the caller asks later
                answer, (code, reason, msg) = self._answer(wire.BOOK_DEAL, status, content)
                txn = answer.header.transactionId if answer is not None else None
                if not code:
                    return 0, NONE, None, txn, deal_rate[i], False, False
                if reason == TIMEOUT or reason in _MAYBE_OURS:
                    # The bank cannot say whether it booked, or the deal id or quote is taken (by
                    # an earlier try of ours whose answer was lost?): its status says, in this slot.
                    found = await self._status_one(ids[i])
                    if found == "COMPLETED":
                        # A duplicate deal id is booked with another quote: an earlier try's.
                        return 0, NONE, None, txn, deal_rate[i], True, reason == _DUPLICATE
                    if found != "NOT_FOUND":
                        # PENDING (the deal id is taken, so by an earlier try of ours) or no
                        # answer: unresolved; the caller asks again and never books it with
                        # another quote.
                        return timeout.result_code, TIMEOUT, timeout.message, txn, _NAN, False, False
                    if reason == TIMEOUT:  # the bank has no such deal: resolved
                        return code, reason, msg, txn, _NAN, True, False
                return code, reason, msg, txn, _NAN, False, False
            # No answer to the last try (it may still be on its way) or the deal PENDING: unresolved,
            # so the caller asks the bank's status again once the whole call is over.
            return timeout.result_code, TIMEOUT, timeout.message, None, _NAN, False, False

        return one

    def _book_replies(self, rows: list[Any]) -> BookReplies:
        col, sent = self._columns(rows, (1, NONE, None, None, _NAN, False, False))
        return BookReplies(
            np.array(col[0], dtype=np.int64), np.array(col[1], dtype=np.int8), np.array(col[2], dtype=object),
            np.array(col[3], dtype=object), np.array(col[4], dtype=np.float64),
            resolved=np.array(col[5], dtype=bool), earlier=np.array(col[6], dtype=bool), sent=sent,
        )  # fmt: skip

    def cancel_quotes(self, quote_ids: np.ndarray, max_in_flight: int) -> Replies:
        ids = quote_ids.tolist()
        header = self._header

        async def one(i: int) -> tuple[int, int, str | None]:
            body = wire.QuoteRequest(header=header, quoteID=int(ids[i])).model_dump_json().encode()
            status, content = await self.caller.post(wire.CANCEL_QUOTE, body, resend=True)
            try:
                return self._answer(wire.CANCEL_QUOTE, status, content)[1]
            except wire.ContractError as exc:  # best effort: that cancel failed, the others go on
                return 1, _REJECTED, str(exc)

        rows = self._fan_out(one, len(ids), max_in_flight, background=True)
        col = list(zip(*rows, strict=True)) if rows else [()] * 3
        return Replies(
            np.array(col[0], dtype=np.int64), np.array(col[1], dtype=np.int8), np.array(col[2], dtype=object)
        )

    async def _status_one(self, deal_id: str) -> Found:
        """GetTxnStatus for a deal transaction id: COMPLETED (booked), NOT_FOUND (the bank has no
        such transaction: book it again with the same id), PENDING (still so after asking again a
        few times, each after a backoff), UNKNOWN (no usable answer) or "status <WORD>" (a status the
        documentation does not give): the last two are never booked again blindly."""
        body = wire.TxnStatusRequest(header=self._header, transactionID=deal_id).model_dump_json().encode()
        for poll in range(_PENDING_POLLS + 1):
            status, content = await self.caller.post(wire.TXN_STATUS, body, resend=True)
            # The bank's "no such transaction" is read from its result block, whatever the HTTP
            # status it comes with (a 404 as well as a 200).
            answer, result = self._answer_block(wire.TXN_STATUS, status, content)
            if answer is None or result is None or result.resultCode:
                return (
                    "NOT_FOUND" if result is not None and result.resultReasonCode == wire.TXN_NOT_FOUND else "UNKNOWN"
                )
            assert isinstance(answer, wire.TxnStatusAnswer) and answer.transaction is not None  # validated
            found = answer.transaction.status.upper()
            if found == wire.COMPLETED:
                return "COMPLETED"
            if found != wire.PENDING:
                return f"status {found}"
            if poll < _PENDING_POLLS:
                await self.caller.backoff(poll + 1)
        return "PENDING"

    def transaction_status(
        self, deal_txn_ids: pa.Array, max_in_flight: int, run_id: int | None = None
    ) -> StatusReplies:
        ids = deal_txn_ids.cast(pa.string()).to_pylist()
        found = self._fan_out(lambda i: self._status_one(ids[i]), len(ids), max_in_flight)
        # The documented transaction object carries no quote id or rate: the caller knows what it sent.
        n = len(found)
        return StatusReplies(np.array(found, dtype=object), np.zeros(n, dtype=np.int64), np.full(n, np.nan))

    async def _close_clients(self) -> None:
        for client in [self.client, *self.caller.clients]:
            await client.aclose()

    def close(self) -> None:
        if not self._loop.loop.is_closed():
            try:
                self._loop.run(self._close_clients())
            finally:
                self._loop.close()
