"""Header recognition: which row is the header, which column is which field, which layout.

Header matching ignores case, spaces, underscores and punctuation (DOMAIN.md section 2).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fxbatch.errors import UnusableFileError
from fxbatch.models import Layout, RejectedRow, Rejection


def column_label(index: int) -> str:
    """A file column as a spreadsheet shows it, from its 0-based index: "column A", "column AB"."""
    letters = ""
    n = index + 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("A") + r) + letters
    return f"column {letters}"


# Canonical field -> accepted header spellings (normalised on use).
ALIASES: dict[str, tuple[str, ...]] = {
    "trade_id": ("trade_id", "id", "trade ref", "trade id", "trade reference"),
    "client_cif": ("client_cif", "cif", "cif no", "client cif", "customer cif", "client id"),
    "account_number": (
        "account_number",
        "account",
        "account no",
        "acc no",
        "settlement account",
        "account number",
    ),
    "currency_pair": ("currency_pair", "pair", "ccy pair", "curpair", "currency pair"),
    "side": ("side", "direction", "buy/sell", "trade type"),
    "amount": ("amount", "notional", "deal amount", "amount zar"),
    "amount_currency": ("amount_currency", "deal currency", "ccy", "amount currency"),
    # The desk's "bips" are pips (DOMAIN section 6); older templates called the column spread_bps.
    "spread_pips": (
        "spread_pips",
        "spread",
        "spread bips",
        "spread bps",
        "bips",
        "pips",
        "fixed spread",
        "spread pips",
    ),
    "delivery": ("delivery", "delivery type", "deal type"),
    "value_date": ("value_date", "settlement date", "value date"),
    "reference": ("reference", "external ref", "narrative"),
}
FIELDS: tuple[str, ...] = tuple(ALIASES)
REQUIRED_CANONICAL: tuple[str, ...] = ("client_cif", "account_number", "currency_pair", "side", "amount")
REQUIRED_LEGACY: tuple[str, ...] = ("client_cif", "account_number", "currency_pair", "amount")
# Result columns a previous run wrote into legacy sheets; ignored on load.
LEGACY_RESULT_COLUMNS: tuple[str, ...] = (
    "Quote ID",
    "Quote At",
    "Quote Rate",
    "Quote Expiry",
    "Deal Reference",
    "Spot Rate",
    "Bank Rate",
    "Deal Rate",
)

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise_header(text: object) -> str:
    """``'Client CIF'``, ``'client_cif'`` and ``' CLIENT-CIF '`` all become ``'clientcif'``."""
    return _NON_ALNUM.sub("", str(text if text is not None else "").lower())


_LOOKUP: dict[str, str] = {normalise_header(alias): name for name, aliases in ALIASES.items() for alias in aliases}


def known_headers(column_map: Mapping[str, str] | None) -> dict[str, str]:
    """Header spellings -> field: the aliases plus the analyst's mapping (normalised)."""
    if not column_map:
        return _LOOKUP
    return {**_LOOKUP, **{normalise_header(k): v for k, v in column_map.items()}}


def guess_fields(headers: Sequence[str], column_map: Mapping[str, str] | None = None) -> dict[str, str]:
    """File header -> the field it would map to (recognised aliases, then ``column_map``);
    headers that map to nothing are left out. What a mapping editor starts from."""
    known = known_headers(column_map)
    return {h: known[normalise_header(h)] for h in headers if known.get(normalise_header(h))}


def header_score(cells: Sequence[object], known: Mapping[str, str] | None = None) -> int:
    """How many distinct fields a candidate header row names (``known``: see known_headers)."""
    lookup = _LOOKUP if known is None else known
    return len({lookup[n] for n in (normalise_header(c) for c in cells) if lookup.get(n)})


def find_header_row(rows: Sequence[Sequence[object]], known: Mapping[str, str] | None = None) -> int | None:
    """Index of the first row naming at least three fields (title rows above are skipped)."""
    for index, row in enumerate(rows):
        if header_score(row, known) >= 3:
            return index
    return None


@dataclass
class ColumnPlan:
    """How the file's columns map onto fxbatch fields."""

    layout: Layout
    field_to_index: dict[str, int]
    headers: list[str]
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def column_map(self) -> dict[str, str]:
        """File header -> canonical field, as shown to the analyst."""
        return {self.headers[i]: name for name, i in self.field_to_index.items()}


def plan_columns(headers: Sequence[object], overrides: Mapping[str, str] | None = None) -> ColumnPlan:
    """Map header cells to fields; ``overrides`` maps a file header to a field ('' = ignore).

    Raises UnusableFileError naming what is missing or ambiguous.
    """
    texts = [str(h).strip() if h is not None else "" for h in headers]
    norm_overrides = {normalise_header(k): v for k, v in (overrides or {}).items()}
    for header, target in (overrides or {}).items():
        if target and target not in FIELDS:
            raise UnusableFileError(
                f"Column mapping for {header!r} names unknown field {target!r}; fields are: {', '.join(FIELDS)}",
                code="BAD_MAPPING",
            )
    present = {normalise_header(t) for t in texts if t}
    absent = [h for h in overrides or {} if normalise_header(h) and normalise_header(h) not in present]
    if absent:
        found = ", ".join(repr(t) for t in texts if t) or "no header names"
        raise UnusableFileError(
            f"The column mapping names {', '.join(repr(h) for h in absent)}, which the header row does not have "
            f"(a typing mistake?); its headers are {found}.",
            code="BAD_MAPPING",
        )
    field_to_index: dict[str, int] = {}
    ignored: list[str] = []
    for index, text in enumerate(texts):
        norm = normalise_header(text)
        if not norm:
            continue
        target = norm_overrides[norm] if norm in norm_overrides else _LOOKUP.get(norm, "")
        if not target:
            ignored.append(text)
            continue
        if target in field_to_index:
            first = texts[field_to_index[target]]
            raise UnusableFileError(
                f"Columns {first!r} and {text!r} both mean {target}; keep one, rename the other or map it explicitly.",
                code="AMBIGUOUS_COLUMNS",
            )
        field_to_index[target] = index
    pair_index = field_to_index.get("currency_pair")
    is_legacy = (
        "side" not in field_to_index and pair_index is not None and normalise_header(texts[pair_index]) == "curpair"
    )
    layout = Layout.LEGACY if is_legacy else Layout.CANONICAL
    required = REQUIRED_LEGACY if is_legacy else REQUIRED_CANONICAL
    missing = [name for name in required if name not in field_to_index]
    if missing:
        found = ", ".join(repr(t) for t in texts if t) or "no header names"
        raise UnusableFileError(
            f"Required column(s) missing: {', '.join(missing)}. Expected the template columns "
            f"({', '.join(REQUIRED_CANONICAL)}, ...) or the legacy desk columns (Client CIF, "
            f"Amount ZAR, Account Number, Spread, CurPair); found {found}.",
            code="MISSING_COLUMN",
        )
    if is_legacy and "side" in field_to_index:
        del field_to_index["side"]
    return ColumnPlan(layout, field_to_index, texts, ignored)


def field_headers(column_map: Mapping[str, str]) -> dict[str, str]:
    """Field -> the file's header for it: ``column_map`` (file header -> field) turned round."""
    return {name: header for header, name in column_map.items() if name}


def _spoken(name: str) -> str:
    return name.replace("_", " ")


# Messages open with the field they are about, written as the field ("currency_pair ...") or in
# words ("currency pair ..."); longest first, so "amount currency" wins over "amount".
_OPENINGS = sorted(
    ((spelling, name) for name in FIELDS for spelling in {name, _spoken(name)}), key=lambda s: -len(s[0])
)
_FIELD_TOKEN = re.compile(r"\b(" + "|".join(name for name in FIELDS if "_" in name) + r")\b")


def message_in_file_terms(message: str, headers: Mapping[str, str], field_name: str | None = None) -> str:
    """``message`` with the fields it names written as the file's headers (``headers``: see
    field_headers); a field the file has no column for is written in words ("value date").

    ``field_name``: the field the message is about, when known (else any field it opens with).
    """
    head, rest = "", message
    for spelling, name in _OPENINGS:
        if field_name is not None and name != field_name:
            continue
        if message.startswith(spelling) and message[len(spelling) : len(spelling) + 1] in ("", " ", ":"):
            head, rest = headers.get(name, _spoken(name)), message[len(spelling) :]
            break
    return head + _FIELD_TOKEN.sub(lambda m: headers.get(m.group(1), _spoken(m.group(1))), rest)


def rejections_in_file_terms(rejections: Sequence[Rejection], column_map: Mapping[str, str]) -> list[Rejection]:
    """``rejections`` as the analyst's file names things: ``column`` is the file's header
    ("Ccy Pair", not currency_pair) and messages name headers too. Markers such as "(row)" stay."""
    headers = field_headers(column_map)
    return [
        r.model_copy(
            update={
                "column": headers.get(r.column, _spoken(r.column)) if r.column in FIELDS else r.column,
                "message": message_in_file_terms(r.message, headers, r.column if r.column in FIELDS else None),
            }
        )
        for r in rejections
    ]


def rejected_rows_in_file_terms(rows: Sequence[RejectedRow], column_map: Mapping[str, str]) -> list[RejectedRow]:
    """``rows`` with their problems naming the file's headers; ``values`` stay keyed by field."""
    headers = field_headers(column_map)
    return [r.model_copy(update={"problems": [message_in_file_terms(p, headers) for p in r.problems]}) for r in rows]
