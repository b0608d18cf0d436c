"""Sign-in settings: the ``[auth]`` section of ``.streamlit/secrets.toml``, checked before the server starts.

Streamlit signs users in with OpenID Connect (``st.login``, Authlib underneath) from that section::

    [auth]
    redirect_uri = "https://fxbatch.desk.example/oauth2callback"
    cookie_secret = "a long random string"
    client_id = "..."
    client_secret = "..."
    server_metadata_url = "https://login.example.com/.well-known/openid-configuration"

or with the provider's keys in one named sub-section (``[auth.okta]``). Streamlit itself only
complains when someone clicks "Sign in"; ``login_config`` refuses a missing or wrong section at
startup, naming the key at fault, so a server never runs half-configured. Nothing here imports
Streamlit (``server.py`` and the pages hand the section in).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fxbatch.errors import SettingsError

if TYPE_CHECKING:
    from fxbatch.settings import Settings

WHERE = "the [auth] section of .streamlit/secrets.toml"
SHARED = ("redirect_uri", "cookie_secret")
PROVIDER = ("client_id", "client_secret", "server_metadata_url")
_URL = re.compile(r"https?://[^\s/]+(/\S*)?")
MIN_COOKIE_SECRET = 32


@dataclass(frozen=True)
class LoginConfig:
    """Login is on: ``provider`` is the name ``st.login`` takes (None: the section's own keys)."""

    provider: str | None
    first_admin: str


def _text(section: Mapping[str, object], key: str, where: str) -> str:
    value = section.get(key)
    if value is None or not str(value).strip():
        raise SettingsError(f"Login is not configured: {key} is missing from {where}.")
    if not isinstance(value, str):
        raise SettingsError(f"Login is not configured: {key} in {where} must be text.")
    return value.strip()


def _check_provider(section: Mapping[str, object], where: str) -> None:
    for key in PROVIDER:
        _text(section, key, where)
    url = _text(section, "server_metadata_url", where)
    if not _URL.fullmatch(url):
        raise SettingsError(
            f"Login is not configured: server_metadata_url in {where} is not a web address "
            "(your provider's https://.../.well-known/openid-configuration)."
        )


def login_config(auth: object, settings: Settings) -> LoginConfig | None:
    """The sign-in configuration, None for single-user (no ``[auth]`` and FXBATCH_LOGIN off);
    SettingsError naming the key when the section is missing but asked for, or wrong."""
    if auth is None or (isinstance(auth, Mapping) and not auth):
        if settings.login:
            raise SettingsError(
                f"Setting FXBATCH_LOGIN asks for sign-in, but {WHERE} is missing: add it with redirect_uri, "
                "cookie_secret, client_id, client_secret and server_metadata_url (your OpenID Connect provider's)."
            )
        return None
    if not isinstance(auth, Mapping):
        raise SettingsError(f"Login is not configured: {WHERE} must be a section of keys.")
    for key in SHARED:
        _text(auth, key, WHERE)
    redirect = _text(auth, "redirect_uri", WHERE)
    if not _URL.fullmatch(redirect) or not redirect.rstrip("/").endswith("/oauth2callback"):
        raise SettingsError(
            f"Login is not configured: redirect_uri in {WHERE} must be this server's address + /oauth2callback "
            f"(for example https://fxbatch.desk.example/oauth2callback); got {redirect!r}."
        )
    if len(_text(auth, "cookie_secret", WHERE)) < MIN_COOKIE_SECRET:
        raise SettingsError(
            f"Login is not configured: cookie_secret in {WHERE} must be at least {MIN_COOKIE_SECRET} characters "
            "of random text (python -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )
    named = {k: v for k, v in auth.items() if isinstance(v, Mapping)}
    if any(k in auth for k in PROVIDER) or not named:
        _check_provider(auth, WHERE)
        provider = None
    elif len(named) == 1:
        provider = next(iter(named))
        _check_provider(named[provider], f"the [auth.{provider}] section of .streamlit/secrets.toml")
    else:
        raise SettingsError(
            f"Login is not configured: {WHERE} names {len(named)} providers ({', '.join(sorted(named))}); "
            "fxbatch signs in with one."
        )
    if not settings.admin_email:
        raise SettingsError(
            "Setting FXBATCH_ADMIN_EMAIL is required with sign-in: the e-mail address of the first admin, "
            "who then gives everyone else their role on the Admin page."
        )
    return LoginConfig(provider=provider, first_admin=settings.admin_email)
