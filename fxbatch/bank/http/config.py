"""Where the bank is and how to talk to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from fxbatch.bank.http.wire import TOKEN_PATH
from fxbatch.settings import Settings

_NO_SECRET = SecretStr("")  # immutable, so one shared default is safe


@dataclass(frozen=True)
class HttpBankConfig:
    """Where the bank is and how to talk to it (built from Settings by ``from_settings``)."""

    base_url: str
    client_id: str = ""
    client_secret: SecretStr = _NO_SECRET
    token_url: str | None = None  # None: ``base_url`` + /oauth2/token (the simulator's)
    grant: Literal["password", "client_credentials"] = "client_credentials"
    username: str = ""
    password: SecretStr = _NO_SECRET
    scope: str = ""
    user_id: str = "dealer@example.com"
    timeout_s: float = 10.0
    unreachable_window_s: float = 30.0
    max_calls_per_s: float | None = None
    retries: int = 4  # 5xx answers retried per request before giving up on it
    backoff_s: float = 0.05
    backoff_cap_s: float = 1.0

    @property
    def token_endpoint(self) -> str:
        return self.token_url or self.base_url.rstrip("/") + TOKEN_PATH

    @property
    def connect_timeout_s(self) -> float:
        return min(self.timeout_s, 5.0)

    def secrets(self) -> list[str]:
        """The secret values, to keep out of any message."""
        return [s for s in (self.client_secret.get_secret_value(), self.password.get_secret_value()) if s]

    @classmethod
    def from_settings(cls, base_url: str, settings: Settings) -> HttpBankConfig:
        return cls(
            base_url=base_url,
            client_id=settings.bank_client_id,
            client_secret=settings.bank_client_secret,
            token_url=settings.bank_token_url,
            grant=settings.bank_grant,
            username=settings.bank_username,
            password=settings.bank_password,
            scope=settings.bank_scope,
            user_id=settings.bank_user_id,
            timeout_s=settings.bank_timeout_s,
            unreachable_window_s=settings.bank_unreachable_window_s,
            max_calls_per_s=settings.bank_max_calls_per_s,
        )
