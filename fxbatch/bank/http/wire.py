"""The trading API on the wire (DOMAIN.md section 3): paths, JSON bodies, the result envelope.

Shared by the client (``fxbatch.bank.http``) and the bank simulator service (``fxbatch.banksim``).
The extra ``X-Fxbatch-*`` headers carry the engine's trade key, step and attempt so the simulator
decides exactly as the in-process simulated bank; a real bank ignores them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from fxbatch.bank.model import NONE, REASON_INDEX
from fxbatch.models import FAILURES, FailureCode

API = "/trading-channel-service/api/v1/"
CREATE_QUOTE, BOOK_DEAL, CANCEL_QUOTE, TXN_STATUS = "createquote", "bookquoteddeal", "cancelquote", "GetTxnStatus"
OPERATIONS = (CREATE_QUOTE, BOOK_DEAL, CANCEL_QUOTE, TXN_STATUS)
TOKEN_PATH = "/oauth2/token"
H_TRADE_KEY, H_STEP, H_ATTEMPT = "X-Fxbatch-Trade-Key", "X-Fxbatch-Step", "X-Fxbatch-Attempt"
H_RUN = "X-Fxbatch-Run-Id"

_UNAVAILABLE = REASON_INDEX[FailureCode.SERVICE_UNAVAILABLE.value]
_NOT_AUTHORISED = REASON_INDEX[FailureCode.NOT_AUTHORISED.value]
_VALIDATION = REASON_INDEX[FailureCode.BANK_VALIDATION.value]
_REJECTED = REASON_INDEX[FailureCode.BANK_REJECTED.value]
_BY_RESULT_CODE = {info.result_code: REASON_INDEX[c.value] for c, info in reversed(FAILURES.items())}


def quote_body(
    cif: str, account: str, pair: str, is_buy: bool, currency: str, amount: float, delivery: str, value_date: str
) -> dict[str, Any]:
    """createquote: the client's side of the pair settles from ``account``."""
    base, quote = pair.split("/")
    return {
        "customer": {
            "cifNo": cif,
            "fromSettlementAccount": {"currency": quote if is_buy else base, "accountNumber": account},
        },
        "trade": {
            "tradeType": "Buy" if is_buy else "Sell",
            "deliveryType": (delivery or "SPOT").title(),
            "currencyPair": pair,
            "dealCurrency": currency,
            "dealCurrencyAmount": amount,
            "settlementDate": (value_date or "").replace("-", ""),
            "dealDateTime": datetime.now(UTC).isoformat(),
        },
    }


def book_body(quote_id: int, deal_id: str, quote_rate: float, deal_rate: float) -> dict[str, Any]:
    """bookquoteddeal: ``deal_id`` is the caller's idempotency key, the same on every retry."""
    return {
        "trade": {"quoteID": quote_id, "dealTransactionID": deal_id, "quoteRate": quote_rate, "dealRate": deal_rate}
    }


def epoch(text: str | None) -> float:
    """An ISO-8601 timestamp as epoch seconds (UTC when it has no zone; NaN when absent)."""
    if not text:
        return float("nan")
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def map_envelope(status_code: int, body: dict[str, Any]) -> tuple[int, int, str | None]:
    """(resultCode, reason index, message) of one answer, by one rule for every call:

    1. a resultReasonCode fxbatch knows (DOMAIN section 5) is that reason;
    2. validationErrors: BANK_VALIDATION (the documented refusal, resultCode 1 on cifNo), never retried;
    3. HTTP 401/403: NOT_AUTHORISED; HTTP 5xx or 429: SERVICE_UNAVAILABLE (retried);
    4. a resultCode of fxbatch's own table (the simulator's codes): its reason;
    5. anything else: BANK_REJECTED, not retried, with the bank's own code in the message.
    """
    result = body.get("result") or {}
    code = int(result.get("resultCode", status_code if status_code >= 400 else 0))
    if code == 0:
        return 0, NONE, None
    # One of the API's examples spells the message resultmsg.
    message = result.get("resultMsg") or result.get("resultmsg") or f"HTTP {status_code}"
    errors = [e for e in result.get("validationErrors") or [] if isinstance(e, dict)]
    reason = REASON_INDEX.get(str(result.get("resultReasonCode")))
    if reason is None:
        if errors:
            reason = _VALIDATION
        elif status_code in (401, 403):
            reason = _NOT_AUTHORISED
        elif status_code >= 500 or status_code == 429:
            reason = _UNAVAILABLE
        else:
            reason = _BY_RESULT_CODE.get(code, _REJECTED)
    if reason == _REJECTED:
        bank_code = result.get("resultReasonCode") or code
        message = f"{message} (bank code {bank_code})"
    if errors:
        detail = "; ".join(f"{e.get('validation')}: {e.get('error')}" for e in errors)
        message = f"{message} ({detail})"
    return code, reason, message


def transaction_id(body: dict[str, Any]) -> str | None:
    """The bank's ``header.transactionId`` of an answer."""
    header = body.get("header")
    return header.get("transactionId") if isinstance(header, dict) else None


def parse_json(content: bytes) -> dict[str, Any]:
    """A body's JSON object, or {} when it has none."""
    try:
        body = orjson.loads(content) if content else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def json_body(resp: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or {} when it has none."""
    return parse_json(resp.content)


def has_envelope(content_type: str, content: bytes) -> bool:
    """A 5xx that carries the API's result block is the bank's answer, not a failed call."""
    return "json" in content_type and isinstance(parse_json(content).get("result"), dict)
