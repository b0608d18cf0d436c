"""Requests of one kind that wait together are decided in one desk call.

Bookings and status lookups are decided on a desk thread (their DuckDB work releases the GIL), so
the event loop keeps reading requests meanwhile; quote batches (numpy, under 1 ms) on the loop. A
desk call costs about the same whatever its size (a booking batch ~2-5 ms, mostly its one ledger
insert and commit), so the fewer calls the better; and an answer may not leave before the
simulated latency has passed anyway. So a batch is not started as soon as its
first request arrives but as late as still lets the desk finish by that request's due time (its
arrival + latency - the kind's recent desk time - a margin): the requests that arrive meanwhile
join it. When the desk is slower than that allows, the answers are late anyway; the batch then
waits, from when the desk is free, until every caller's request is in (as many waiting as were
ever open at once lately), or no new one came for ``QUIET_S``, or one desk call's time has
passed: so the callers fall into step and one call takes what would otherwise be two. Without
latency, a batch starts at once.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fxbatch.banksim.desk import Answer, Desk

MARGIN_S = 0.001
QUIET_S = 0.002
BURST_CAP = 1.0  # of the kind's desk time: the longest a late batch waits for its burst to end
PEAK_WINDOW_S = 0.1  # how long the most requests open at once is remembered
_Item = tuple[dict[str, Any], asyncio.Future[Answer]]


class Batcher:
    """Collects requests per kind and hands each batch to the desk, one desk call at a time."""

    # Decided on the loop itself: quote batches are numpy work that holds the GIL anyway, so the
    # desk thread bought no overlap, only a thread hop (~0.5 ms a batch on this box).
    INLINE = frozenset({"quote"})

    def __init__(self, desk: Desk, latency_s: float) -> None:
        self.desk = desk
        self.latency_s = latency_s
        self.pending: dict[str, list[_Item]] = {}
        self.first: dict[str, float] = {}  # arrival of each kind's oldest waiting request
        self.last: dict[str, float] = {}  # and of its newest
        self.cost: dict[str, float] = {}  # each kind's recent desk time (moving average)
        self.calls: dict[str, int] = {}
        self.open = 0  # requests asked and not yet answered (``answered``)
        self._peak = 0  # the most open at once lately
        self._peak_at = 0.0
        self._free_at = 0.0  # when the desk last finished
        self._busy = False
        self._timer: asyncio.Handle | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="banksim-desk")

    async def warm_up(self) -> None:
        """Each kind's one-off first-call costs, paid where it is decided (before serving: the
        first round of requests would otherwise be answered ~25 ms late)."""
        self.desk.warm_up("quote")
        await asyncio.get_running_loop().run_in_executor(self._pool, self.desk.warm_up, "book")

    def ask(self, kind: str, row: dict[str, Any]) -> asyncio.Future[Answer]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        items = self.pending.get(kind)
        self.last[kind] = now = loop.time()
        self.open += 1
        if self.open >= self._peak or now - self._peak_at > PEAK_WINDOW_S:
            self._peak, self._peak_at = self.open, now
        if items is None:
            self.pending[kind] = [(row, future)]
            self.first[kind] = now
            self._schedule(loop)  # a new oldest request may move the next start earlier
        else:
            items.append((row, future))  # later arrivals move it later (_fire looks again)...
            if len(items) >= self._peak:
                self._schedule(loop)  # ...except the last caller's: then it starts now
        return future

    def answered(self) -> None:
        """A request asked for has been answered (its caller may send the next one)."""
        self.open -= 1

    def _start_at(self, kind: str) -> float:
        if self.latency_s <= 0:
            return self.first[kind]
        cost = self.cost.get(kind, 0.0)
        first = self.first[kind]
        on_time = first + self.latency_s - 1.25 * cost - MARGIN_S
        if len(self.pending[kind]) >= self._peak:
            return on_time  # every caller's request is in
        free = self._free_at
        burst_over = min(max(self.last[kind], free) + QUIET_S, max(first, free) + BURST_CAP * cost)
        return max(on_time, burst_over)

    def _schedule(self, loop: asyncio.AbstractEventLoop, fired: bool = False) -> None:
        if self._busy or not self.pending:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        kind = min(self.pending, key=self._start_at)
        delay = self._start_at(kind) - loop.time()
        if delay > 0:
            self._timer = loop.call_later(delay, self._fire, loop)
        elif not fired:
            # Due now: still let the loop read what else has arrived, which joins the batch.
            self._timer = loop.call_soon(self._fire, loop)
        else:
            self._run(loop, kind)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._schedule(loop, fired=True)  # starts the batch, or waits on if requests kept coming

    def _run(self, loop: asyncio.AbstractEventLoop, kind: str) -> None:
        items = self.pending.pop(kind)
        del self.first[kind], self.last[kind]
        self._busy = True
        self.calls[kind] = self.calls.get(kind, 0) + 1
        started = loop.time()
        rows = [row for row, _ in items]
        if kind in self.INLINE:
            work: asyncio.Future[list[Answer]] = loop.create_future()
            try:
                work.set_result(self.desk.decide(kind, rows))
            except Exception as exc:
                work.set_exception(exc)
            self._done(loop, kind, items, work, started)
        else:
            work = loop.run_in_executor(self._pool, self.desk.decide, kind, rows)
            work.add_done_callback(lambda done: self._done(loop, kind, items, done, started))

    def _done(
        self, loop: asyncio.AbstractEventLoop, kind: str, items: list[_Item], done: asyncio.Future[list[Answer]],
        started: float,
    ) -> None:  # fmt: skip
        self._busy = False
        self._free_at = now = loop.time()
        took = now - started
        self.cost[kind] = took if kind not in self.cost else 0.7 * self.cost[kind] + 0.3 * took
        exc = done.exception()
        if exc is not None:  # every waiting request gets an answer, whatever went wrong
            for _, f in items:
                if not f.done():
                    f.set_exception(exc)
        else:
            for (_, f), answer in zip(items, done.result(), strict=True):
                if not f.done():
                    f.set_result(answer)
        self._schedule(loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._pool.shutdown(wait=True)
