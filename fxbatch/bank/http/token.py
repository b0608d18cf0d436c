"""The OAuth2 token: fetched once, reused, refreshed before it expires.

The grant is the bank's documented ``password`` grant (client id, secret, scope, username,
password: a form POST to the identity provider) or ``client_credentials``, chosen by
FXBATCH_BANK_GRANT. When the provider gives a ``refresh_token``, the token is renewed with it
shortly before expiry (a failed refresh falls back to the grant). A 401 on an API call means the
bank no longer takes the token (expired early, revoked, the bank restarted): the caller ``drop``s
it and the next ``bearer`` fetches a fresh one.

The client secret and the password go only into the token request's form; a refusal is reported
with the provider's ``error`` and ``error_description``, never a secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from pydantic import ValidationError

from fxbatch.bank.http.config import HttpBankConfig
from fxbatch.bank.http.wire import TokenAnswer, TokenError
from fxbatch.bank.port import BankUnavailable
from fxbatch.errors import SettingsError

_SETTINGS = {
    "password": "FXBATCH_BANK_CLIENT_ID, FXBATCH_BANK_CLIENT_SECRET, FXBATCH_BANK_USERNAME, "
    "FXBATCH_BANK_PASSWORD and FXBATCH_BANK_SCOPE",
    "client_credentials": "FXBATCH_BANK_CLIENT_ID, FXBATCH_BANK_CLIENT_SECRET and FXBATCH_BANK_SCOPE",
}


class TokenCache:
    """The bearer token for API calls; use from one event loop."""

    def __init__(self, config: HttpBankConfig, client: httpx.AsyncClient, clock: Callable[[], float]) -> None:
        self.config = config
        self.client = client
        self.clock = clock
        self.fetched = 0  # token requests made (refreshes included)
        self._token: str | None = None
        self._refresh: str | None = None
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

    def _form(self) -> dict[str, str]:
        cfg = self.config
        form = {
            "grant_type": cfg.grant,
            "client_id": cfg.client_id,
            "client_secret": cfg.client_secret.get_secret_value(),
        }
        if cfg.grant == "password":
            form |= {"username": cfg.username, "password": cfg.password.get_secret_value()}
        if cfg.scope:
            form["scope"] = cfg.scope
        return form

    async def fetch(self) -> str:
        """Ask the token endpoint (with the refresh token when there is one). SettingsError when
        it refuses the credentials, BankUnavailable when it cannot be reached or answers with an error."""
        if self._refresh is not None:
            cfg = self.config
            form = {"grant_type": "refresh_token", "refresh_token": self._refresh, "client_id": cfg.client_id,
                    "client_secret": cfg.client_secret.get_secret_value()}  # fmt: skip
            if cfg.scope:
                form["scope"] = cfg.scope
            self._refresh = None
            try:
                return await self._ask(form)
            except SettingsError:
                pass  # the refresh token was refused (expired, revoked): the grant itself
        return await self._ask(self._form())

    async def _ask(self, form: dict[str, str]) -> str:
        cfg = self.config
        self.fetched += 1
        try:
            resp = await self.client.post(cfg.token_endpoint, data=form)
        except httpx.TransportError as exc:
            raise BankUnavailable(f"token endpoint {cfg.token_endpoint} unreachable ({type(exc).__name__})") from None
        if resp.status_code in (400, 401, 403):
            raise SettingsError(
                f"The bank's token endpoint {cfg.token_endpoint} refused the {form['grant_type']} grant "
                f"(HTTP {resp.status_code}{self._error(resp)}); check {_SETTINGS[cfg.grant]}."
            )
        try:
            answer = TokenAnswer.model_validate_json(resp.content) if resp.status_code < 300 else None
        except ValidationError:
            answer = None
        if answer is None:
            raise BankUnavailable(
                f"token endpoint {cfg.token_endpoint} answered HTTP {resp.status_code} without a token"
            )
        ttl = answer.expires_in
        self._token = answer.access_token
        self._refresh = answer.refresh_token
        # Renew a little before expiry so no request carries a token about to lapse.
        self._expires = self.clock() + ttl - min(30.0, ttl / 5)
        return self._token

    def _error(self, resp: httpx.Response) -> str:
        """``: invalid_grant: AADSTS50126 ...`` from the provider's error answer (no secret in it)."""
        try:
            err = TokenError.model_validate_json(resp.content)
        except ValidationError:
            return ""
        text = f": {err.error}" + (f": {err.error_description}" if err.error_description else "")
        for secret in self.config.secrets():
            text = text.replace(secret, "***")
        return text[:400]
