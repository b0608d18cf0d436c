"""The HTTP bank: the bank port over the bank's trading API (DOMAIN.md section 3).

Modules, each one concept:

- ``wire``: paths, JSON bodies and the result envelope (shared with the simulator service);
- ``config``: ``HttpBankConfig``, where the bank is and how to talk to it;
- ``transport``: ``KeepAliveTransport``, an httpx async transport over pooled kept-alive
  connections on one event loop;
- ``token``: the OAuth2 client-credentials token, cached and refreshed;
- ``caller``: one API call with its retry policy (backoff and jitter, calls per second, a
  booking never re-sent blindly, BankUnavailable after the unreachable window);
- ``bank``: ``HttpBank``, the port's four operations fanned out as concurrent requests.
"""

from fxbatch.bank.http.bank import HttpBank
from fxbatch.bank.http.config import HttpBankConfig
from fxbatch.bank.http.transport import KeepAliveTransport
from fxbatch.bank.http.wire import (
    API,
    BOOK_DEAL,
    CANCEL_QUOTE,
    CREATE_QUOTE,
    H_ATTEMPT,
    H_RUN,
    H_STEP,
    H_TRADE_KEY,
    TOKEN_PATH,
    TXN_STATUS,
    map_envelope,
)

__all__ = [
    "API",
    "BOOK_DEAL",
    "CANCEL_QUOTE",
    "CREATE_QUOTE",
    "H_ATTEMPT",
    "H_RUN",
    "H_STEP",
    "H_TRADE_KEY",
    "TOKEN_PATH",
    "TXN_STATUS",
    "HttpBank",
    "HttpBankConfig",
    "KeepAliveTransport",
    "map_envelope",
]
