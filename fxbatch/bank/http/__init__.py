"""The HTTP bank: the bank port over the bank's trading API (DOMAIN.md section 3).

Modules, each one concept:

- ``wire``: paths and pydantic models of every request and answer (shared with the simulator);
- ``config``: ``HttpBankConfig``, where the bank is and how to talk to it;
- ``token``: the OAuth2 token (password or client-credentials grant), cached and refreshed;
- ``caller``: one API call with its retry policy (backoff and jitter, calls per second, a
  booking never re-sent blindly, BankUnavailable after the unreachable window);
- ``bank``: ``HttpBank``, the port's operations fanned out as concurrent requests.
"""

from fxbatch.bank.http.bank import HttpBank
from fxbatch.bank.http.config import HttpBankConfig

__all__ = ["HttpBank", "HttpBankConfig"]
