"""A bank simulator service: the trading API over HTTP on loopback, decided by SimulatedBank.

``python -m fxbatch.banksim serve --port PORT --db PATH`` serves it; ``... ledger --db PATH -o
FILE.csv`` writes its booked deals. See ``fxbatch.banksim.service`` for the faults it injects.
"""

from fxbatch.banksim.desk import Desk
from fxbatch.banksim.service import BankServer, Faults, Tokens

__all__ = ["BankServer", "Desk", "Faults", "Tokens"]
