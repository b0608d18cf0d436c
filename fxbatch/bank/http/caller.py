"""One API call with its retry policy: what may be sent again, when, and when to give up.

- createquote, cancelquote, GetTxnStatus are safe to repeat: connection errors and 5xx answers
  are retried with exponential backoff and jitter (``retries`` 5xx answers at most).
- bookquoteddeal is never re-sent blindly: when it may have reached the bank and no answer came
  (dropped connection, read timeout, bare 5xx) ``post`` raises ``NoAnswer`` and the caller asks
  GetTxnStatus first. A 429 was refused unprocessed, so it is sent again after backoff.
- A 401 drops the token; the call gets one fresh token and one more try.
- A bank that cannot be reached for ``unreachable_window_s`` raises BankUnavailable, and every
  other call in flight gives up at once (``down``) instead of each waiting out the window.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson

from fxbatch.bank.http.config import HttpBankConfig
from fxbatch.bank.http.token import TokenCache
from fxbatch.bank.http.transport import KeepAliveTransport
from fxbatch.bank.http.wire import API, OPERATIONS, has_envelope, parse_json
from fxbatch.bank.port import BankUnavailable

Sleep = Callable[[float], Awaitable[None]]
_CONNECT_FAILED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class NoAnswer(Exception):
    """The request may or may not have reached the bank (only bookings care)."""


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


class Caller:
    """POSTs API calls through ``transport`` with the token and the policy above; one event loop."""

    def __init__(
        self,
        config: HttpBankConfig,
        transport: httpx.AsyncBaseTransport,
        tokens: TokenCache,
        sleep: Sleep,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.transport = transport
        self.tokens = tokens
        self.sleep = sleep
        self.clock = clock
        self.limiter = RateLimiter(config.max_calls_per_s, sleep, clock)
        self.down = False  # set once a call gave up on the bank: the others stop retrying
        self.calls = dict.fromkeys(OPERATIONS, 0)
        # Parsed once: httpx parses a string URL on every request. The calls skip the Client
        # layer (URL merging, cookies, auth and hook machinery: ~0.5 ms a call) and go to the
        # transport; the token call keeps the Client. Over the KeepAliveTransport a call's
        # request is bytes built here from pre-encoded parts and its answer comes back as
        # (status, headers, body): no httpx Request, Headers or Response objects, which cost
        # about a third of a call's client CPU. Other transports (httpx.MockTransport in the
        # tests, or any httpx transport) get an httpx.Request.
        api = config.base_url.rstrip("/") + API
        self._urls = {op: httpx.URL(api + op) for op in OPERATIONS}
        timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        self._extensions = {"timeout": timeout.as_dict()}
        self._header = {"userId": config.user_id}
        self._raw = transport if isinstance(transport, KeepAliveTransport) else None
        first = self._urls[OPERATIONS[0]]
        self._key = (first.scheme, first.host, first.port or (443 if first.scheme == "https" else 80))
        self._heads = {
            op: b"POST " + url.raw_path + b" HTTP/1.1\r\nHost: " + url.netloc
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            for op, url in self._urls.items()
        }  # fmt: skip
        self._auth: tuple[str | None, bytes] = (None, b"")  # the last token and its header line
        self._jitter = random.Random()

    async def backoff(self, attempt: int) -> None:
        cap = min(self.config.backoff_cap_s, self.config.backoff_s * 2.0**attempt)
        await self.sleep(cap * (0.5 + 0.5 * self._jitter.random()))

    async def post(self, op: str, body: dict[str, Any], headers: dict[str, str], *, resend: bool) -> tuple[int, Any]:
        """POST one API call; returns (HTTP status, JSON body or {}).

        Connection failures before the request left are always retried; after it may have left
        (or on 5xx) only when ``resend``, otherwise NoAnswer. Unreachable past the window:
        BankUnavailable.
        """
        body["header"] = self._header
        content = orjson.dumps(body)
        length = str(len(content)).encode()
        extra = [(k.encode(), v.encode()) for k, v in headers.items()]
        failing_since: float | None = None
        tries = 0
        refreshed = False
        while True:
            if self.down:
                raise BankUnavailable("another request found the bank unreachable")
            await self.limiter.wait()
            token = await self._bearer()
            self.calls[op] += 1
            try:
                status, content_type, answer = await self._send(op, content, length, extra, token)
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
            if status == 401 and not refreshed:
                refreshed = True  # an expired or revoked token: one fresh token, one more try
                self.tokens.drop(token)
                continue
            throttled = status == 429  # refused unprocessed: safe to send again, later
            if throttled or (status >= 500 and not has_envelope(content_type, answer)):
                if not resend and not throttled:
                    raise NoAnswer(f"HTTP {status}")
                tries += 1
                if tries > self.config.retries:
                    return status, {}
                await self.backoff(tries)
                continue
            return status, parse_json(answer)

    async def _send(
        self, op: str, content: bytes, length: bytes, extra: list[tuple[bytes, bytes]], token: str
    ) -> tuple[int, str, bytes]:
        """One request on the wire: (HTTP status, content type, body)."""
        raw = self._raw
        if raw is not None:
            if self._auth[0] != token:
                self._auth = (token, b"\r\nAuthorization: Bearer " + token.encode())
            parts = [self._heads[op], length, self._auth[1]]
            for name, value in extra:
                parts += (b"\r\n", name, b": ", value)
            parts += (b"\r\n\r\n", content)
            status, headers, body = await raw.exchange(
                self._key, b"".join(parts), self.config.connect_timeout_s, self.config.timeout_s
            )
            kind = b""
            for name, value in headers:
                low = name.lower()
                if low == b"content-type":
                    kind = value
                elif low == b"content-encoding":  # not asked for, but decoded as httpx would
                    body = httpx.Response(status, headers=headers, content=body).content
            return status, kind.decode("latin-1"), body
        # stream= with every header given: httpx then skips its header preparation; the
        # transport reads the body from the ByteStream.
        url = self._urls[op]
        request = httpx.Request(
            "POST",
            url,
            headers=[
                (b"Host", url.netloc),
                (b"Content-Type", b"application/json"),
                (b"Content-Length", length),
                (b"Authorization", b"Bearer " + token.encode()),
                *extra,
            ],
            stream=httpx.ByteStream(content),
            extensions=self._extensions,
        )
        resp = await self.transport.handle_async_request(request)
        await resp.aread()
        return resp.status_code, resp.headers.get("content-type", ""), resp.content

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
