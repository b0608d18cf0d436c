"""The one masking rule: client account numbers show only their last 4 characters unless unmasked.

Every read path that leaves fxbatch for a person or a file applies it by default: the run's
trades page and trade detail, a batch's trades, rejections and corrections, and every export.
An unmasked export says so in its file name (``run-12-UNMASKED.csv``).

The rule is SQL (``account_sql``), so a 1M-trade export masks in DuckDB, never row by row in
Python: ``0012345678`` -> ``••••••5678``; values of 4 characters or fewer, empty text and NULL
are left as they are (there is nothing to hide behind the last 4). Client CIFs are not masked:
the desk filters and groups by them, and the domain treats the account as the sensitive field.
"""

from __future__ import annotations

from pathlib import Path

from fxbatch.models import RejectedRow, Rejection

ACCOUNT_FIELD = "account_number"
SHOWN = 4  # trailing characters left visible
DOT = "•"
UNMASKED = "UNMASKED"  # the word an unmasked export carries in its file name


def account_sql(expr: str, *, unmask: bool = False) -> str:
    """SQL for the account in ``expr`` as shown: masked unless ``unmask`` (NULL stays NULL)."""
    if unmask:
        return expr
    return f"repeat('{DOT}', greatest(length({expr}) - {SHOWN}, 0)) || right({expr}, {SHOWN})"


def field_value_sql(field: str, value: str, *, unmask: bool = False) -> str:
    """SQL for ``value`` masked when the row's ``field`` is the account (rejections, corrections)."""
    if unmask:
        return value
    return f"CASE WHEN {field} = '{ACCOUNT_FIELD}' THEN {account_sql(value)} ELSE {value} END"


def message_sql(field: str, value: str, message: str, *, unmask: bool = False) -> str:
    """SQL for ``message`` with the account in ``value`` masked where it quotes it (a rejection's reason)."""
    if unmask:
        return message
    return (
        f"CASE WHEN {field} = '{ACCOUNT_FIELD}' AND length({value}) > {SHOWN} "
        f"THEN replace({message}, {value}, {account_sql(value)}) ELSE {message} END"
    )


def export_path(path: Path | str, *, unmask: bool = False) -> Path:
    """Where an export is written: ``path``, or with ``-UNMASKED`` before its suffix when unmasked
    (unless the name already says so), so a file with full account numbers is never anonymous."""
    path = Path(path)
    if not unmask or UNMASKED in path.name.upper():
        return path
    return path.with_name(f"{path.stem}-{UNMASKED}{path.suffix}")


def export_name(name: str, *, unmask: bool = False) -> str:
    """A download's file name under the same rule as ``export_path``."""
    return export_path(name, unmask=unmask).name


def mask_account(value: str | None) -> str | None:
    """``account_sql`` for one value in Python, for the few rows a page holds (an upload's rejected
    rows before anything is stored): ``0012345678`` -> ``••••••5678``."""
    if value is None or len(value) <= SHOWN:
        return value
    return DOT * (len(value) - SHOWN) + value[-SHOWN:]


def mask_message(message: str, value: str | None) -> str:
    """``message`` with the account in ``value`` masked where it quotes it (``message_sql`` in Python)."""
    if value is None or len(value) <= SHOWN:
        return message
    return message.replace(value, mask_account(value) or value)


def mask_rejected_rows(rows: list[RejectedRow], unmask: bool) -> list[RejectedRow]:
    """The rejected rows as shown: the account masked in its cell and in the problems quoting it."""
    if unmask:
        return rows
    masked = []
    for r in rows:
        account = r.values.get(ACCOUNT_FIELD)
        masked.append(
            r.model_copy(
                update={
                    "values": {**r.values, ACCOUNT_FIELD: mask_account(account)} if account else r.values,
                    "problems": [mask_message(p, account) for p in r.problems],
                }
            )
        )
    return masked


def mask_rejections(rejections: list[Rejection], unmask: bool) -> list[Rejection]:
    """Rejections as shown: the account masked where a rejection quotes it (the one masking rule)."""
    if unmask:
        return rejections
    return [
        r.model_copy(update={"value": mask_account(r.value), "message": mask_message(r.message, r.value)})
        if r.column == ACCOUNT_FIELD
        else r
        for r in rejections
    ]
