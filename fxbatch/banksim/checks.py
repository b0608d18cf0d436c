"""What the bank checks in a quote request beyond its wire model, and how it says no.

The wire model (``fxbatch.bank.http.wire``) checks shapes and formats; here are the bank's own
rules: the largest deal it takes, settlement accounts in the pair's currencies, a pair it
quotes, a value date that fits the delivery (DOMAIN.md section 6), and, with a client registry,
the client checks. Each refusal names the field at fault in ``validationErrors``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError, field_validator

from fxbatch.bank.http import wire
from fxbatch.bank.registry import ACTIVE, ClientRegistry
from fxbatch.calendars import not_business_day_reason, value_dates
from fxbatch.models import FAILURES, FailureCode
from fxbatch.rates import RateTable
from fxbatch.valuedates import MAX_FORWARD_DAYS

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Refusal:
    """A business refusal: HTTP 200 with resultCode > 0 (the API's way of saying no), or the
    ``status`` a gateway answers with (503 for SERVICE_UNAVAILABLE), the result block still sent."""

    code: int
    reason: str
    message: str
    errors: list[wire.FieldError] = field(default_factory=list)
    status: int = 200

    def result(self) -> wire.Result:
        return wire.Result.refusal(self.code, self.reason, self.message, self.errors)


# The field the bank names when it refuses for one of the model's reasons (its failure mix): a
# refusal names the field at fault, as every other refusal of the simulator does.
_FIELD_AT_FAULT: dict[FailureCode, tuple[str, str]] = {
    FailureCode.CURRENCY_NOT_SUPPORTED: ("trade.currencyPair", "CURRENCY PAIR NOT OFFERED"),
    FailureCode.BELOW_MINIMUM: ("trade.dealCurrencyAmount", "BELOW THE MINIMUM DEAL AMOUNT"),
    FailureCode.INSUFFICIENT_FUNDS: ("customer.fromSettlementAccount.accountNumber", "INSUFFICIENT FUNDS"),
    FailureCode.MARKET_CLOSED: ("trade.dealDateTime", "OUTSIDE TRADING HOURS"),
    FailureCode.INVALID_VALUE_DATE: ("trade.settlementDate", "NOT A SETTLEMENT DATE THE BANK CAN MEET"),
    FailureCode.RATE_UNAVAILABLE: ("trade.currencyPair", "NO RATE AVAILABLE NOW"),
    FailureCode.QUOTE_EXPIRED: ("trade.quoteID", "QUOTE EXPIRED"),
    FailureCode.PRICE_MOVED: ("trade.quoteRate", "PRICE MOVED"),
    FailureCode.NOT_AUTHORISED: ("header.userId", "DEALER NOT AUTHORISED"),
}


def refuse(reason: FailureCode, *errors: tuple[str, str], message: str | None = None) -> Refusal:
    """A refusal for one of DOMAIN section 5's reasons, with its resultCode, naming the field at
    fault (``errors``, else the reason's usual one); SERVICE_UNAVAILABLE comes as an HTTP 503."""
    info = FAILURES[reason]
    if not errors and reason in _FIELD_AT_FAULT:
        errors = (_FIELD_AT_FAULT[reason],)
    found = [wire.FieldError(validation=where, error=what) for where, what in errors]
    status = 503 if reason is FailureCode.SERVICE_UNAVAILABLE else 200
    return Refusal(info.result_code, reason.value, message or info.message, found, status)


def invalid(errors: list[wire.FieldError]) -> Refusal:
    """The API's documented refusal: resultCode 1, the fields at fault in validationErrors."""
    return Refusal(1, FailureCode.BANK_VALIDATION.value, "Validation failed", errors)


# -- the request models, as strict as a bank ---------------------------------------------------
class StrictQuoteTrade(wire.QuoteTrade):
    """dealDateTime as an ISO-8601 date and time: not a bare date or a number of seconds."""

    @field_validator("dealDateTime", mode="before")
    @classmethod
    def _iso_date_time(cls, value: object) -> object:
        if not isinstance(value, str) or len(value) < 16 or value[10] not in "Tt":
            raise ValueError("must be an ISO-8601 date and time, like 2026-11-30T09:15:00Z")
        return value


class StrictCreateQuoteRequest(wire.CreateQuoteRequest):
    trade: StrictQuoteTrade


def parse(model: type[M], body: bytes) -> M | Refusal:
    """The body as ``model``, or the validation refusal naming every field at fault."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        return invalid(wire.field_errors(exc))


class _Sent(Protocol):
    @property
    def header(self) -> wire.RequestHeader: ...


R = TypeVar("R", bound=_Sent)


def as_dealer(req: R | Refusal, dealer: str | None) -> R | Refusal:
    """``req`` unless its header.userId is not ``dealer``, the dealer the call's token was issued
    to (None: a token that names none): then refused NOT_AUTHORISED, naming header.userId."""
    if dealer is None or isinstance(req, Refusal) or req.header.userId.lower() == dealer:
        return req
    return refuse(FailureCode.NOT_AUTHORISED, ("header.userId", "NOT THE DEALER THE ACCESS TOKEN WAS ISSUED TO"))


# -- the trade checks -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _dates(pair: str, trade_date: date) -> dict[str, date]:
    return value_dates(pair, trade_date)


def value_date_problem(pair: str, delivery: str, settle: date, trade_date: date) -> str | None:
    """Why ``settle`` cannot settle a ``delivery`` trade in ``pair`` traded on ``trade_date``."""
    if settle < trade_date:
        return f"{settle.isoformat()} is before the trade date {trade_date.isoformat()}"
    if settle > trade_date + timedelta(days=MAX_FORWARD_DAYS):
        return f"{settle.isoformat()} is more than {MAX_FORWARD_DAYS} days ahead"
    closed = not_business_day_reason(pair, settle)
    if closed is not None:
        return f"not a business day for {pair}: {closed}"
    due = _dates(pair, trade_date)
    if delivery == "Cash" and settle != due["CASH"]:
        return f"Cash settles on the trade date {due['CASH'].isoformat()}"
    if delivery == "Tom" and settle != due["TOM"]:
        return f"Tom settles on {due['TOM'].isoformat()}"
    if delivery == "Spot" and settle < due["SPOT"]:
        return f"Spot settles on {due['SPOT'].isoformat()} or later (a forward)"
    return None


class Clients:
    """The client registry as dictionaries: ``ClientRegistry.check``'s rules, one trade at a time."""

    def __init__(self, registry: ClientRegistry) -> None:
        t = registry.table
        self.cifs = frozenset(t["cif"].tolist())
        self.accounts = {
            (c, a): (s, float(lim))
            for c, a, s, lim in zip(t["cif"], t["account_number"], t["status"], t["limit_zar"], strict=True)
        }

    def check(self, cif: str, account: str, amount_zar: float, to_account: str | None = None) -> Refusal | None:
        """The client, the account it pays from (whose limit the deal must be within) and, when
        given, the account it is paid into: both the client's own, and active."""
        if cif not in self.cifs:
            return refuse(FailureCode.CLIENT_NOT_FOUND, ("cifNo", "INVALID CIF NUMBER"))
        # Named by their path in the request, as the request's own checks name fields (cifNo as the
        # bank's documented refusal names it).
        named = [("customer.fromSettlementAccount.accountNumber", account)]
        if to_account is not None:
            named.append(("customer.toSettlementAccount.accountNumber", to_account))
        for where, number in named:
            found = self.accounts.get((cif, number))
            if found is None:
                return refuse(FailureCode.ACCOUNT_MISMATCH, (where, "ACCOUNT DOES NOT BELONG TO THE CIF"))
            if found[0] != ACTIVE:
                return refuse(FailureCode.ACCOUNT_BLOCKED, (where, f"ACCOUNT {found[0]}"))
        limit = self.accounts[(cif, account)][1]  # the paying account's
        if not amount_zar <= limit:  # a deal whose ZAR value is unknown is over any limit
            return refuse(FailureCode.LIMIT_EXCEEDED, ("trade.dealCurrencyAmount", "OVER THE CLIENT'S LIMIT"))
        return None


class TradeChecks:
    """The bank's checks of a parsed createquote request, in the order a bank makes them."""

    def __init__(
        self, rates: RateTable, registry: ClientRegistry | None, max_amount: float, today: Callable[[], date]
    ) -> None:
        self.rates = rates
        self.clients = Clients(registry) if registry is not None else None
        self.max_amount = max_amount
        self.today = today

    def check(self, req: wire.CreateQuoteRequest) -> Refusal | None:
        trade, customer = req.trade, req.customer
        base, quote = trade.currencyPair.split("/")
        pays, gets = (quote, base) if trade.tradeType == "Buy" else (base, quote)
        errors: list[wire.FieldError] = []
        if trade.dealCurrencyAmount > self.max_amount:
            errors.append(_error("trade.dealCurrencyAmount", f"must be at most {self.max_amount:,.2f}"))
        if customer.fromSettlementAccount.currency != pays:
            errors.append(_error("customer.fromSettlementAccount.currency", f"must be {pays}: the client pays it"))
        if customer.toSettlementAccount.currency != gets:
            errors.append(_error("customer.toSettlementAccount.currency", f"must be {gets}: the client gets it"))
        if errors:
            return invalid(errors)
        if not self.rates.has_pair(trade.currencyPair):
            return refuse(FailureCode.CURRENCY_NOT_SUPPORTED, ("trade.currencyPair", "CURRENCY PAIR NOT OFFERED"))
        settle = wire.settlement_day(trade.settlementDate)
        problem = value_date_problem(trade.currencyPair, trade.deliveryType, settle, self.today())
        if problem is not None:
            return refuse(FailureCode.INVALID_VALUE_DATE, ("trade.settlementDate", problem))
        if self.clients is not None:
            factor = self.rates.to_zar(trade.dealCurrency)
            amount_zar = trade.dealCurrencyAmount * factor if factor is not None else math.nan
            return self.clients.check(
                customer.cifNo, customer.fromSettlementAccount.accountNumber, amount_zar,
                customer.toSettlementAccount.accountNumber,
            )  # fmt: skip
        return None


def _error(where: str, what: str) -> wire.FieldError:
    return wire.FieldError(validation=where, error=what)


def iso(epoch_s: float) -> str:
    """ISO-8601 UTC with a Z, to the millisecond."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
