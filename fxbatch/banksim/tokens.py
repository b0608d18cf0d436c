"""The simulator's OAuth2 token endpoint (DOMAIN.md section 3), shaped like the bank's identity provider.

Grants: ``password`` (the documented one: client id and secret, scope, username, password),
``client_credentials`` (client id and secret in the form or as HTTP Basic) and ``refresh_token``
(a refresh token this service issued). Errors are the identity provider's: HTTP 400 or 401 with
``error``, ``error_description``, ``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id``.
A description never repeats a secret or a password.

Without a configured client id any client is accepted, and without a configured username any
dealer: the simulator then only checks that the grant is well formed. A password grant whose
username is an e-mail address issues the dealer's token (``Holder``): the API then takes calls
made with it only as that dealer (header.userId).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from fxbatch.bank.http import wire

REFRESH_TTL_S = 24 * 3600.0
# The identity provider's error codes (Microsoft Entra's numbers, as in the bank's example).
BAD_CLIENT, BAD_USER, BAD_REFRESH, BAD_GRANT_TYPE, MISSING = 7000215, 50126, 70008, 70003, 900144


@dataclass(frozen=True)
class Credentials:
    client_id: str | None = None  # None: any client
    client_secret: str | None = None
    username: str | None = None  # None: any dealer
    password: str | None = None


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison of any text (compare_digest refuses non-ASCII str)."""
    return secrets.compare_digest(given.encode(), expected.encode())


class TokenRefused(Exception):
    def __init__(self, status: int, error: str, description: str, code: int) -> None:
        super().__init__(description)
        self.status, self.error, self.description, self.code = status, error, description, code


@dataclass
class _Grant:
    expires_at: float
    client_id: str
    scope: str
    dealer: str | None


@dataclass(frozen=True)
class Holder:
    """Who a valid access token was issued to: ``dealer``, the e-mail address a password grant
    named as its username, lower-cased (None: a client_credentials token, or a username that is
    not an e-mail address). **Assumed**: the bank takes a password grant's username to be the
    dealer, whose e-mail every call's header.userId then is."""

    dealer: str | None


class Tokens:
    """Issues and checks bearer tokens (kept in memory: a restart logs every caller out)."""

    def __init__(self, creds: Credentials, ttl_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.creds = creds
        self.ttl_s = ttl_s
        self.clock = clock
        self._access: dict[str, tuple[float, Holder]] = {}  # token -> (expiry, holder)
        self._refresh: dict[str, _Grant] = {}
        self._swept = 0.0

    def holder(self, authorization: str | None) -> Holder | None:
        """Who the bearer token of ``authorization`` was issued to; None: no valid token."""
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        found = self._access.get(authorization[7:].strip())
        return found[1] if found is not None and found[0] > self.clock() else None

    def answer(self, body: bytes, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for a token request."""
        try:
            return 200, self._grant(_form(body), authorization)
        except TokenRefused as exc:
            trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
            error = wire.TokenError(error=exc.error, error_description=f"AADSTS{exc.code}: {exc.description} "
                                    f"Trace ID: {trace} Correlation ID: {correlation}", error_codes=[exc.code])  # fmt: skip
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            out = error.model_dump(mode="json") | {"timestamp": stamp, "trace_id": trace, "correlation_id": correlation}
            return exc.status, out

    def _grant(self, form: dict[str, str], authorization: str | None) -> dict[str, Any]:
        grant = form.get("grant_type", "")
        client_id, _ = self._client(form, authorization)
        scope = form.get("scope", "")
        dealer: str | None = None
        if grant == "password":
            username, password = form.get("username", ""), form.get("password", "")
            if not username or not password:
                raise TokenRefused(400, "invalid_request", "The request body must contain username and password.", MISSING)  # fmt: skip
            c = self.creds
            if c.username is not None and not (_same(username, c.username) & _same(password, c.password or "")):
                raise TokenRefused(400, "invalid_grant", "Error validating credentials due to invalid username or password.", BAD_USER)  # fmt: skip
            dealer = username.lower() if "@" in username else None
        elif grant == "refresh_token":
            found = self._refresh.get(form.get("refresh_token", ""))
            if found is None or found.expires_at <= self.clock() or found.client_id != client_id:
                raise TokenRefused(400, "invalid_grant", "The refresh token is unknown, expired or issued to another client.", BAD_REFRESH)  # fmt: skip
            scope = scope or found.scope
            dealer = found.dealer
        elif grant != "client_credentials":
            raise TokenRefused(400, "unsupported_grant_type", "The grant_type must be password, client_credentials or refresh_token.", BAD_GRANT_TYPE)  # fmt: skip
        return self._issue(client_id, scope, dealer)

    def _client(self, form: dict[str, str], authorization: str | None) -> tuple[str, str]:
        """The calling client's id and secret (HTTP Basic or the form), checked when configured."""
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if authorization and authorization[:6].lower() == "basic ":
            try:
                client_id, _, secret = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise TokenRefused(401, "invalid_client", "The Authorization header is not valid Basic credentials.", BAD_CLIENT) from None  # fmt: skip
        c = self.creds
        if c.client_id is not None and not (_same(client_id, c.client_id) & _same(secret, c.client_secret or "")):
            raise TokenRefused(401, "invalid_client", f"Invalid client secret provided for client {client_id!r}, or an unknown client.", BAD_CLIENT)  # fmt: skip
        return client_id, secret

    def _issue(self, client_id: str, scope: str, dealer: str | None) -> dict[str, Any]:
        now = self.clock()
        if now - self._swept > 60:  # forget expired tokens now and then
            self._access = {t: e for t, e in self._access.items() if e[0] > now}
            self._refresh = {t: g for t, g in self._refresh.items() if g.expires_at > now}
            self._swept = now
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        self._access[access] = (now + self.ttl_s, Holder(dealer))
        self._refresh[refresh] = _Grant(now + REFRESH_TTL_S, client_id, scope, dealer)
        answer = wire.TokenAnswer(access_token=access, token_type="Bearer", expires_in=self.ttl_s,
                                  ext_expires_in=2 * self.ttl_s, refresh_token=refresh, scope=scope)  # fmt: skip
        out = answer.model_dump(mode="json")
        for name in ("expires_in", "ext_expires_in"):  # whole seconds as the identity provider sends them
            if float(out[name]).is_integer():
                out[name] = int(out[name])
        return out


def _form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise TokenRefused(400, "invalid_request", "The request body must be form-encoded UTF-8.", MISSING) from None
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
