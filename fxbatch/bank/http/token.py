"""The OAuth2 client-credentials token: fetched once, reused, refreshed before it expires.

A 401 on an API call means the bank no longer takes the token (expired early, revoked, the bank
restarted): the caller ``drop``s it and the next ``bearer`` fetches a fresh one. The client secret
goes only into the token request's Basic auth header; it is never logged or put in an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from fxbatch.bank.http.config import HttpBankConfig
from fxbatch.bank.http.wire import json_body
from fxbatch.bank.port import BankUnavailable
from fxbatch.errors import SettingsError


class TokenCache:
    """The bearer token for API calls; use from one event loop."""

    def __init__(self, config: HttpBankConfig, client: httpx.AsyncClient, clock: Callable[[], float]) -> None:
        self.config = config
        self.client = client
        self.clock = clock
        self.fetched = 0  # token requests made
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def bearer(self) -> str:
        """A token that is not about to expire (fetched when there is none)."""
        token = self._token
        if token is not None and self.clock() < self._expires:
            return token
        async with self._lock:  # one fetch however many calls need a token at once
            if self._token is None or self.clock() >= self._expires:
                return await self.fetch()
            return self._token

    def drop(self, token: str) -> None:
        """The bank refused ``token``: the next ``bearer`` fetches another (unless one already did)."""
        if self._token == token:
            self._token = None

    async def fetch(self) -> str:
        """Ask the token endpoint. SettingsError when it refuses the credentials, BankUnavailable
        when it cannot be reached or answers with an error."""
        cfg = self.config
        self.fetched += 1
        try:
            resp = await self.client.post(
                cfg.token_endpoint,
                data={"grant_type": "client_credentials"},
                auth=(cfg.client_id, cfg.client_secret.get_secret_value()),
            )
        except httpx.TransportError as exc:
            raise BankUnavailable(f"token endpoint {cfg.token_endpoint} unreachable ({type(exc).__name__})") from None
        if resp.status_code in (400, 401, 403):
            raise SettingsError(
                f"The bank's token endpoint {cfg.token_endpoint} refused the client credentials "
                f"(HTTP {resp.status_code}); check FXBATCH_BANK_CLIENT_ID and FXBATCH_BANK_CLIENT_SECRET."
            )
        body = json_body(resp)
        if resp.status_code >= 300 or "access_token" not in body:
            raise BankUnavailable(f"token endpoint {cfg.token_endpoint} answered HTTP {resp.status_code}")
        ttl = float(body.get("expires_in", 300))
        self._token = str(body["access_token"])
        # Refresh a little before expiry so no request carries a token about to lapse.
        self._expires = self.clock() + ttl - min(30.0, ttl / 5)
        return self._token
