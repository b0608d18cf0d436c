"""One bank simulator: its settings (``SimConfig``, from the command line only) and its parts.

``Simulator(config)`` opens the ledger, reloads the quote book and is ready for ``create_app``;
``close()`` writes what is pending and closes the file. Nothing here reads request headers:
how the bank behaves is decided when it starts.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from fxbatch import calendars
from fxbatch.bank.model import BankModel, RateWalk
from fxbatch.bank.registry import ClientRegistry
from fxbatch.banksim.checks import TradeChecks
from fxbatch.banksim.desk import Desk
from fxbatch.banksim.ledger import Journal, Ledger
from fxbatch.banksim.tokens import Credentials, Tokens
from fxbatch.models import BankSettings
from fxbatch.rates import RateTable

MAX_AMOUNT = 100_000_000.0
MAX_GROUP_WAIT_S = 0.025  # the longest a change waits for others to share its transaction


@dataclass(frozen=True)
class SimConfig:
    """How the simulated bank behaves (every field is a ``serve`` flag)."""

    db: Path
    rates: RateTable
    bank: BankSettings = field(default_factory=BankSettings)  # success rate, failure mix, quote TTL, ...
    seed: int = 42
    latency_ms: float = 0.0
    error_rate: float = 0.0  # share of API calls answered with a bare 503
    drop_after_book_rate: float = 0.0  # share of bookings whose answer is lost
    hang_after_bookings: int | None = None  # bookings answered before the booking service hangs
    max_amount: float = MAX_AMOUNT
    today: date | None = None  # the bank's trade date; None: today in Johannesburg
    credentials: Credentials = field(default_factory=Credentials)
    token_ttl_s: float = 300.0
    registry: ClientRegistry | None = None


class Faults:
    """The network's faults, drawn from their own seeded stream."""

    def __init__(self, config: SimConfig) -> None:
        self.latency_s = config.latency_ms / 1000
        self.error_rate = config.error_rate
        self.drop_rate = config.drop_after_book_rate
        self.hang_after = config.hang_after_bookings
        self.bookings_taken = 0
        self._rng = random.Random(config.seed)

    def error(self) -> bool:
        return self.error_rate > 0 and self._rng.random() < self.error_rate

    def drop(self) -> bool:
        return self.drop_rate > 0 and self._rng.random() < self.drop_rate

    def hung(self) -> bool:
        """A booking request that comes once the service has taken ``hang_after`` bookings: it is
        never looked at nor answered (a hung booking service; the caller's timeout is what ends it)."""
        if self.hang_after is None:
            return False
        if self.bookings_taken >= self.hang_after:
            return True
        self.bookings_taken += 1
        return False


def transaction_ids() -> Iterator[str]:
    """The bank's id of each call: UUID-shaped, a random prefix per start and a counter."""
    head = uuid.uuid4().hex
    prefix = f"{head[:8]}-{head[8:12]}-4{head[13:16]}-8{head[17:20]}-"
    for n in itertools.count(1):
        yield f"{prefix}{n:012x}"


class Simulator:
    def __init__(self, config: SimConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.faults = Faults(config)
        self.tokens = Tokens(config.credentials, config.token_ttl_s)
        fixed = config.today
        today: Callable[[], date] = (lambda: fixed) if fixed is not None else calendars.trading_date
        checks = TradeChecks(config.rates, config.registry, config.max_amount, today)
        # The calendars a settlement date is checked on, built before the first request rather
        # than inside it (value dates go up to a year ahead: this year's and the next).
        year = today().year
        calendars.warm(config.rates.currencies, (year, year + 1))
        self.ledger = Ledger(config.db)
        # Changes wait for company up to half the latency: their answers wait that long anyway.
        self.journal = Journal(self.ledger, window_s=min(MAX_GROUP_WAIT_S, self.faults.latency_s / 2))
        try:
            model = BankModel(config.seed, config.bank)
            walk = RateWalk(config.seed, config.rates.mids, config.bank.volatility_bps)
            self.desk = Desk(model, walk, checks, self.ledger, self.journal, clock=clock)
        except BaseException:
            self.ledger.close()
            raise
        self.txn_ids = transaction_ids()
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.journal.close()
            self.ledger.close()
