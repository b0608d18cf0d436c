"""A bank simulator service: the bank's trading API (DOMAIN.md section 3) as a strict bank answers it.

``python -m fxbatch.banksim serve --port PORT --db PATH`` serves it (FastAPI on uvicorn);
``... ledger --db PATH -o FILE.csv`` writes its booked deals. Parts: ``service`` (settings and
assembly), ``app`` (HTTP routes and envelopes), ``desk`` (the operations and the quote book),
``checks`` (what the bank refuses), ``ledger`` (the durable journal and its group commit),
``tokens`` (the OAuth2 endpoint), ``server`` (uvicorn and its limits).
"""

from fxbatch.banksim.app import create_app
from fxbatch.banksim.server import Limits, serve
from fxbatch.banksim.service import SimConfig, Simulator
from fxbatch.banksim.tokens import Credentials

__all__ = ["Credentials", "Limits", "SimConfig", "Simulator", "create_app", "serve"]
