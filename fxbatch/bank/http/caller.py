"""One API call with its retry policy: what may be sent again, when, and when to give up.

- createquote, cancelquote, GetTxnStatus are safe to repeat: connection errors and 5xx answers
  are retried with exponential backoff and jitter (``retries`` 5xx answers at most).
- bookquoteddeal is never re-sent blindly: when it may have reached the bank and no answer came
  (dropped connection, read timeout, bare 5xx) ``post`` raises ``NoAnswer`` and the caller asks
  GetTxnStatus first. A 429 was refused unprocessed, so it is sent again after backoff, or after
  the wait its Retry-After header asks for (as is a retried 5xx).
- A 401 drops the token; the call gets one fresh token and one more try.
- A bank that cannot be reached for ``unreachable_window_s`` raises BankUnavailable, and every
  other call in flight gives up at once (``down``) instead of each waiting out the window.
- After ``halt`` (the run was cancelled) no quote or booking is sent, nor sent again: ``post``
  raises ``NotSent``. cancelquote and GetTxnStatus still go: they release and settle.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import httpx

from fxbatch.bank.http.config import HttpBankConfig
from fxbatch.bank.http.token import TokenCache
from fxbatch.bank.http.wire import API, BOOK_DEAL, CREATE_QUOTE, OPERATIONS
from fxbatch.bank.port import BankUnavailable

Sleep = Callable[[float], Awaitable[None]]
_CONNECT_FAILED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class NoAnswer(Exception):
    """The request may or may not have reached the bank (only bookings care)."""


class NotSent(Exception):
    """``halt`` came first: the quote or booking was not sent (again)."""


_HALTED_OPS = frozenset({CREATE_QUOTE, BOOK_DEAL})


class RateLimiter:
    """At most ``rate`` calls a second (each call reserves the next free slot)."""

    def __init__(self, rate: float | None, sleep: Sleep, clock: Callable[[], float]) -> None:
        self.gap = 1.0 / rate if rate else 0.0
        self.sleep = sleep
        self.clock = clock
        self._next = 0.0

    async def wait(self) -> None:
        if not self.gap:
            return
        now = self.clock()
        slot = max(now, self._next)
        self._next = slot + self.gap
        if slot > now:
            await self.sleep(slot - now)


SHARD = 8


class Caller:
    """POSTs API calls with httpx's AsyncClient, the token and the policy above; one event loop."""

    def __init__(
        self,
        config: HttpBankConfig,
        new_client: Callable[[], httpx.AsyncClient],
        tokens: TokenCache,
        sleep: Sleep,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        # Calls spread over several clients of at most SHARD calls in flight each: httpcore's pool
        # looks over all its connections, more than once, for every request (quadratic in the
        # connections), which at 32 in flight on one client was about a third of a call's CPU.
        self._new_client = new_client
        self.clients: list[httpx.AsyncClient] = []
        self._busy: list[int] = []
        self.tokens = tokens
        self.sleep = sleep
        self.clock = clock
        self.limiter = RateLimiter(config.max_calls_per_s, sleep, clock)
        self.down = False  # set once a call gave up on the bank: the others stop retrying
        self.halted = False  # set by ``halt``: no quote or booking is sent (again) from then on
        self.calls = dict.fromkeys(OPERATIONS, 0)
        api = config.base_url.rstrip("/") + API
        self._urls = {op: httpx.URL(api + op) for op in OPERATIONS}  # parsed once
        self._jitter = random.Random()

    def halt(self) -> None:
        """Send no createquote or bookquoteddeal from now on, not even a retry (any thread)."""
        self.halted = True

    async def backoff(self, attempt: int) -> None:
        cap = min(self.config.backoff_cap_s, self.config.backoff_s * 2.0**attempt)
        await self.sleep(cap * (0.5 + 0.5 * self._jitter.random()))

    async def post(self, op: str, content: bytes, *, resend: bool) -> tuple[int, bytes]:
        """POST one API call's JSON body; returns (HTTP status, answer body).

        Connection failures before the request left are always retried; after it may have left
        (or on a bare 5xx) only when ``resend``, otherwise NoAnswer. Unreachable past the window:
        BankUnavailable.
        """
        failing_since: float | None = None
        tries = 0
        refreshed = False
        while True:
            if self.halted and op in _HALTED_OPS:
                raise NotSent(op)
            if self.down:
                raise BankUnavailable("another request found the bank unreachable")
            await self.limiter.wait()
            token = await self._bearer()
            self.calls[op] += 1
            try:
                resp = await self._send(op, content, token)
            except _CONNECT_FAILED as exc:
                failing_since = self._failing(failing_since, exc)
                await self.backoff(min(tries, 5))
                tries += 1
                continue
            except httpx.TransportError as exc:  # sent, perhaps processed, no answer
                if not resend:
                    raise NoAnswer(type(exc).__name__) from None
                failing_since = self._failing(failing_since, exc)
                await self.backoff(min(tries, 5))
                tries += 1
                continue
            status = resp.status_code
            if status == 401 and not refreshed:
                refreshed = True  # an expired or revoked token: one fresh token, one more try
                self.tokens.drop(token)
                continue
            throttled = status == 429  # refused unprocessed: safe to send again, later
            if throttled or (status >= 500 and not _has_result(resp)):
                if not resend and not throttled:
                    raise NoAnswer(f"HTTP {status}")
                tries += 1
                if tries > self.config.retries:
                    return status, b""
                wait = _retry_after(resp)  # the bank says when: not sooner than that
                if wait is None:
                    await self.backoff(tries)
                else:
                    await self.sleep(wait)
                continue
            return status, resp.content

    async def _send(self, op: str, content: bytes, token: str) -> httpx.Response:
        shard = self._shard()
        self._busy[shard] += 1
        try:
            return await self.clients[shard].post(
                self._urls[op],
                content=content,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )
        finally:
            self._busy[shard] -= 1

    def _shard(self) -> int:
        """The client with the fewest calls in flight (a new one when every client has SHARD)."""
        busy = self._busy
        best = min(range(len(busy)), key=busy.__getitem__) if busy else -1
        if best < 0 or busy[best] >= SHARD:
            self.clients.append(self._new_client())
            busy.append(0)
            best = len(busy) - 1
        return best

    async def _bearer(self) -> str:
        """The token; a token endpoint that stays unreachable past the window: BankUnavailable."""
        started = self.clock()
        tries = 0
        while True:
            try:
                return await self.tokens.bearer()
            except BankUnavailable:
                if self.down or self.clock() - started > self.config.unreachable_window_s:
                    self.down = True
                    raise
                await self.backoff(min(tries, 5))
                tries += 1

    def _failing(self, since: float | None, exc: Exception) -> float:
        now = self.clock()
        since = now if since is None else since
        if now - since > self.config.unreachable_window_s:
            self.down = True
            raise BankUnavailable(
                f"no answer from {self.config.base_url} for {self.config.unreachable_window_s:g} s ({type(exc).__name__})"
            ) from None
        return since


RETRY_AFTER_MAX_S = 60.0  # the longest wait a Retry-After header is heeded for


def _retry_after(resp: httpx.Response) -> float | None:
    """The seconds a 429 or 503 answer's Retry-After header asks to wait (at most
    RETRY_AFTER_MAX_S); None without one in seconds (an HTTP date is left to the backoff)."""
    value = resp.headers.get("retry-after", "").strip()
    if not value.isdigit():
        return None
    return min(float(value), RETRY_AFTER_MAX_S)


def _has_result(resp: httpx.Response) -> bool:
    """A 5xx that carries the API's result block is the bank's answer, not a failed call."""
    return "json" in resp.headers.get("content-type", "") and b'"result"' in resp.content
