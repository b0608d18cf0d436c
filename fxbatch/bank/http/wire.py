"""The bank's trading API on the wire (DOMAIN.md section 3): every request and answer as a model.

One place holds every path and field name: the client (``fxbatch.bank.http``) builds its requests
from these models and validates every answer with them; the bank simulator
(``fxbatch.banksim``) parses requests with them and builds its answers from them. A real
integration that finds the bank spelling something differently changes this module only.

Where the bank's API summaries are silent, the choice is marked **assumed**:

- ``QuotePayload.quoteRate``: the bank's rate for the quote (booking needs it; not in the summaries);
- ``TXN_NOT_FOUND``: GetTxnStatus for an id the bank has no transaction for answers a failure
  with this ``resultReasonCode``;
- ``TOKEN_PATH``: the simulator's token endpoint (a real bank's is a setting, FXBATCH_BANK_TOKEN_URL).

Answers are validated leniently where the API is (extra fields ignored, ``resultmsg`` and
``resultMsg`` both read) and strictly where the contract matters (a quote id is a 64-bit integer,
never a float or a string; a success carries its payload). A request is validated strictly: the
simulator refuses what a bank refuses, naming the field.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fxbatch.bank.model import NONE, REASON_INDEX
from fxbatch.models import FailureCode

API = "/trading-channel-service/api/v1/"
CREATE_QUOTE, BOOK_DEAL, CANCEL_QUOTE = "createquote", "bookquoteddeal", "cancelquote"
LATEST_QUOTE, TXN_STATUS = "getlatestquote", "GetTxnStatus"
OPERATIONS = (CREATE_QUOTE, BOOK_DEAL, CANCEL_QUOTE, LATEST_QUOTE, TXN_STATUS)
TOKEN_PATH = "/oauth2/token"  # assumed: the simulator's; a real bank's identity provider is configured
TXN_NOT_FOUND = "TRANSACTION_NOT_FOUND"  # assumed: GetTxnStatus's refusal for an unknown id
COMPLETED, PENDING = "COMPLETED", "PENDING"

INT64_MAX = (1 << 63) - 1
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
Int64 = Annotated[StrictInt, Field(ge=1, le=INT64_MAX)]
# A UUID's letters are hex digits of either case (RFC 9562): one deal id, read as lower case.
Uuid = Annotated[str, Field(pattern=UUID_PATTERN), AfterValidator(str.lower)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Rate = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]  # a JSON number: never text or true


class _Wire(BaseModel):
    """Fields by the API's names; unknown fields ignored (a bank may add some)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


# -- common blocks ------------------------------------------------------------------------------
class RequestHeader(_Wire):
    userId: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$", description="The dealer's e-mail.")


class ResponseHeader(_Wire):
    transactionId: str = Field(min_length=1, description="The bank's id of this call (a UUID).")


class FieldError(_Wire):
    validation: str = Field(description="The field at fault.")
    error: str = Field(description="What is wrong with it.")


class Result(_Wire):
    resultCode: StrictInt = Field(ge=0, description="0 = success.")
    # One of the API's examples spells it resultmsg.
    resultMsg: str | None = Field(default=None, validation_alias=AliasChoices("resultMsg", "resultmsg"))
    resultReasonCode: str | None = None
    validationErrors: list[FieldError] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.resultCode == 0

    @classmethod
    def success(cls) -> Result:
        return cls(resultCode=0, resultMsg="Success")

    @classmethod
    def refusal(cls, code: int, reason: str, message: str, errors: list[FieldError] | None = None) -> Result:
        return cls(resultCode=code, resultReasonCode=reason, resultMsg=message, validationErrors=errors or [])


class Answer(_Wire):
    header: ResponseHeader
    result: Result


# -- createquote -----------------------------------------------------------------------------------
class SettlementAccount(_Wire):
    currency: Currency
    accountNumber: str = Field(min_length=1, max_length=34)


class Customer(_Wire):
    cifNo: str = Field(min_length=1, max_length=20)
    fromSettlementAccount: SettlementAccount
    toSettlementAccount: SettlementAccount


class QuoteTrade(_Wire):
    tradeType: Literal["Buy", "Sell"]
    deliveryType: Literal["Spot", "Tom", "Cash"]
    currencyPair: str = Field(pattern=r"^[A-Z]{3}/[A-Z]{3}$")
    dealCurrency: Currency
    dealCurrencyAmount: float = Field(strict=True, gt=0, allow_inf_nan=False)
    settlementDate: str = Field(pattern=r"^\d{8}$", description="YYYYMMDD")
    dealDateTime: datetime

    @field_validator("settlementDate")
    @classmethod
    def _a_real_date(cls, value: str) -> str:
        settlement_day(value)  # ValueError for 20261331
        return value

    @field_validator("dealCurrency")
    @classmethod
    def _deal_currency_in_pair(cls, value: str, info: ValidationInfo) -> str:
        pair = info.data.get("currencyPair")
        if pair and value not in pair.split("/"):
            raise ValueError(f"{value} is not a currency of {pair}")
        return value


class CreateQuoteRequest(_Wire):
    header: RequestHeader
    customer: Customer
    trade: QuoteTrade


# Assumed: a time the bank sends without an offset is its own local time, South African
# Standard Time (UTC+2, no daylight saving), never the time zone of the machine reading it.
BANK_TIME_ZONE = timezone(timedelta(hours=2), "SAST")


def _in_bank_zone(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=BANK_TIME_ZONE)


BankTime = Annotated[datetime, AfterValidator(_in_bank_zone)]


class QuotePayload(_Wire):
    quoteId: Int64
    quoteExpiryDateTime: BankTime
    quoteRate: Rate = Field(description="Assumed: the bank's rate for the quote (not in the API summaries).")


class CreateQuoteAnswer(Answer):
    payload: QuotePayload | None = None

    @model_validator(mode="after")
    def _success_has_payload(self) -> CreateQuoteAnswer:
        if self.result.ok and self.payload is None:
            raise ValueError("payload: required when resultCode is 0")
        return self


# -- bookquoteddeal --------------------------------------------------------------------------------
class BookTrade(_Wire):
    quoteID: Int64
    dealTransactionID: Uuid
    quoteRate: Rate = Field(description="The bank's quote.")
    dealRate: Rate = Field(description="The client's rate: the quote moved by the desk's spread.")


class BookDealRequest(_Wire):
    header: RequestHeader
    trade: BookTrade


class BookDealAnswer(Answer):
    pass


# -- cancelquote / getlatestquote ------------------------------------------------------------------
class QuoteRequest(_Wire):
    header: RequestHeader
    quoteID: Int64


class CancelQuoteAnswer(Answer):
    pass


class LatestQuotePayload(_Wire):
    quoteId: Int64
    quoteExpiryDateTime: BankTime


class LatestQuoteAnswer(Answer):
    payload: LatestQuotePayload | None = None


# -- GetTxnStatus ----------------------------------------------------------------------------------
class TxnStatusRequest(_Wire):
    header: RequestHeader
    transactionID: Uuid


class TxnContext(_Wire):
    transactionId: str | None = None
    thirdPartyDealID: str | None = None


class Transaction(_Wire):
    transactionId: str
    userID: str | None = None
    organisation: str | None = None
    operation: str | None = None
    correlationID: str | None = None
    dateTime: str | None = None
    status: str = Field(min_length=1, description="COMPLETED, PENDING, ...")
    systemID: str | None = None
    context: TxnContext | None = None


class TxnStatusAnswer(Answer):
    transaction: Transaction | None = None

    @model_validator(mode="after")
    def _success_has_transaction(self) -> TxnStatusAnswer:
        if self.result.ok and self.transaction is None:
            raise ValueError("transaction: required when resultCode is 0")
        return self


# -- the token -----------------------------------------------------------------------------------
class TokenAnswer(_Wire):
    access_token: str = Field(min_length=1)
    token_type: str = "Bearer"
    expires_in: float = Field(default=300.0, gt=0)  # some identity providers send it as a string
    ext_expires_in: float | None = None
    refresh_token: str | None = None
    scope: str | None = None


class TokenError(_Wire):
    error: str = "unknown_error"
    error_description: str | None = None
    error_codes: list[int] = Field(default_factory=list)


ANSWERS: dict[str, type[Answer]] = {
    CREATE_QUOTE: CreateQuoteAnswer,
    BOOK_DEAL: BookDealAnswer,
    CANCEL_QUOTE: CancelQuoteAnswer,
    LATEST_QUOTE: LatestQuoteAnswer,
    TXN_STATUS: TxnStatusAnswer,
}
REQUESTS: dict[str, type[_Wire]] = {
    CREATE_QUOTE: CreateQuoteRequest,
    BOOK_DEAL: BookDealRequest,
    CANCEL_QUOTE: QuoteRequest,
    LATEST_QUOTE: QuoteRequest,
    TXN_STATUS: TxnStatusRequest,
}


# -- helpers ---------------------------------------------------------------------------------------
class ContractError(Exception):
    """The bank's answer breaks the API's contract (not JSON, a field missing or mistyped): not a
    trade's failure, so the run stops INTERRUPTED (resumable) with this message."""


def settlement_day(text: str) -> date:
    """YYYYMMDD as a date (ValueError when it is none)."""
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def settlement_text(iso: str) -> str:
    """2026-12-01 -> 20261201."""
    return iso.replace("-", "")


def field_errors(exc: ValidationError) -> list[FieldError]:
    """A pydantic error as the API's validationErrors (dotted field paths)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        out.append(FieldError(validation=where, error=str(err["msg"]).removeprefix("Value error, ")))
    return out


def contract_error(op: str, status: int, exc: ValidationError | ValueError) -> ContractError:
    """ContractError naming the call and the first field at fault."""
    if isinstance(exc, ValidationError) and exc.errors():
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "the body"
        msg = str(err["msg"]).removeprefix("Value error, ")
        what = f"field {where}: {msg}" if err["loc"] else f"field {msg}"
    else:
        what = f"not a JSON object ({exc})"
    return ContractError(f"The bank's {op} answer (HTTP {status}) breaks the API contract: {what}.")


def parse_answer(op: str, status: int, content: bytes) -> Answer:
    """The answer to ``op`` validated against its model, or ContractError."""
    model = ANSWERS[op]
    try:
        return model.model_validate_json(content)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()) or not content.strip().startswith(b"{"):
            raise contract_error(op, status, ValueError("the body is not JSON")) from None
        raise contract_error(op, status, exc) from None


def error_result(op: str, status: int, content: bytes) -> Result | None:
    """The result block of an error answer (HTTP 4xx/5xx) to ``op``.

    DOMAIN: every answer carries a result block, a refusal's included (its header is not needed
    to read it). An answer without one is the API's only where the HTTP status says it all: 401
    and 403 (not authorised), 429 and 5xx (a gateway or the bank busy; retried): then None. Any
    other status with a body that is not the API's (a proxy's HTML page for a wrong path, an
    empty 404) breaks the contract: ContractError naming the call, not a trade's refusal.
    """
    try:
        return Answer.model_validate_json(content).result
    except ValidationError:
        pass
    try:
        body = json.loads(content) if content.strip() else None
        if isinstance(body, dict) and isinstance(body.get("result"), dict):
            return Result.model_validate(body["result"])
    except (ValueError, ValidationError):
        pass
    if status in (401, 403, 429) or status >= 500:
        return None
    kind = "empty" if not content.strip() else "not the API's answer (no result block)"
    raise ContractError(
        f"The bank's {op} answer (HTTP {status}) breaks the API contract: its body is {kind}. "
        "Check the bank's URL (FXBATCH_BANK_URL) and the API path."
    )


_UNAVAILABLE = REASON_INDEX[FailureCode.SERVICE_UNAVAILABLE.value]
_NOT_AUTHORISED = REASON_INDEX[FailureCode.NOT_AUTHORISED.value]
_VALIDATION = REASON_INDEX[FailureCode.BANK_VALIDATION.value]
_REJECTED = REASON_INDEX[FailureCode.BANK_REJECTED.value]


def map_result(status_code: int, result: Result | dict[str, Any] | None) -> tuple[int, int, str | None]:
    """(resultCode, reason index, message) of one answer, by one rule for every call:

    1. a resultReasonCode fxbatch knows (DOMAIN section 5) is that reason;
    2. validationErrors: BANK_VALIDATION (the documented refusal, resultCode 1 on cifNo), never retried;
    3. HTTP 401/403: NOT_AUTHORISED; HTTP 5xx or 429: SERVICE_UNAVAILABLE (retried);
    4. anything else: BANK_REJECTED, not retried, with the bank's own code in the message (DOMAIN
       section 5; a bare resultCode is the bank's own number, whatever fxbatch's simulator uses).

    The message is the bank's resultMsg, with its validation errors (``cifNo: INVALID CIF NUMBER``).
    """
    if not isinstance(result, Result):
        try:
            result = Result.model_validate(result or {"resultCode": status_code if status_code >= 400 else 0})
        except ValidationError:
            result = Result(resultCode=status_code if status_code >= 400 else 0)
    code = result.resultCode
    if code == 0:
        return 0, NONE, None
    message = result.resultMsg or f"HTTP {status_code}"
    errors = result.validationErrors
    reason = REASON_INDEX.get(str(result.resultReasonCode))
    if reason is None:
        if errors:
            reason = _VALIDATION
        elif status_code in (401, 403):
            reason = _NOT_AUTHORISED
        elif status_code >= 500 or status_code == 429:
            reason = _UNAVAILABLE
        else:
            reason = _REJECTED
    if reason == _REJECTED:
        message = f"{message} (bank code {result.resultReasonCode or code})"
    if errors:
        message = f"{message}: " + "; ".join(f"{e.validation}: {e.error}" for e in errors)
    return code, reason, message


def map_envelope(status_code: int, body: dict[str, Any]) -> tuple[int, int, str | None]:
    """``map_result`` of a decoded answer body (its ``result`` block)."""
    result = body.get("result") if isinstance(body, dict) else None
    return map_result(status_code, result if isinstance(result, dict) else None)
