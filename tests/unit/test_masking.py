"""The one masking rule (fxbatch.masking): accounts show their last 4 characters unless unmasked."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from fxbatch.masking import account_sql, export_name, export_path, field_value_sql, message_sql

CASES = [
    ("0012345678", "••••••5678"),
    ("12345", "•2345"),
    ("1234", "1234"),  # 4 characters or fewer: nothing to hide behind the last 4
    ("12", "12"),
    ("", ""),
    (None, None),
]


def shown(sql: str, values: list[str | None]) -> list[str | None]:
    with duckdb.connect() as con:
        rows = con.execute(f"SELECT {sql} FROM (SELECT unnest($v) AS a, generate_subscripts($v, 1) AS i) ORDER BY i",
                           {"v": values}).fetchall()  # fmt: skip
    return [r[0] for r in rows]


def test_an_account_shows_its_last_four_characters_behind_dots() -> None:
    assert shown(account_sql("a"), [v for v, _ in CASES]) == [m for _, m in CASES]


def test_empty_short_and_missing_accounts_are_kept_as_they_are() -> None:
    assert shown(account_sql("a"), ["", "7", "1234", None]) == ["", "7", "1234", None]


def test_unmasked_accounts_are_the_stored_text() -> None:
    values = [v for v, _ in CASES]
    assert shown(account_sql("a", unmask=True), values) == values


def test_a_masked_account_keeps_its_length_so_a_reader_sees_how_long_it_was() -> None:
    [masked] = shown(account_sql("a"), ["001234567890123"])
    assert masked is not None and len(masked) == 15 and masked.endswith("0123")


def test_only_the_account_field_of_a_rejection_or_correction_is_masked() -> None:
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT {field_value_sql('f', 'v')}, {message_sql('f', 'v', 'm')} FROM (VALUES "
            "('account_number', '12345678AB', 'account_number 12345678AB must contain digits only'), "
            "('client_cif', '0123456789', 'client_cif 0123456789 unknown'), "
            "('account_number', NULL, 'account_number is required')) t(f, v, m)"
        ).fetchall()
    assert rows == [
        ("••••••78AB", "account_number ••••••78AB must contain digits only"),
        ("0123456789", "client_cif 0123456789 unknown"),
        (None, "account_number is required"),
    ]


def test_unmasked_rejections_keep_their_values_and_messages() -> None:
    assert field_value_sql("f", "v", unmask=True) == "v"
    assert message_sql("f", "v", "m", unmask=True) == "m"


@pytest.mark.parametrize(
    ("name", "unmask", "expected"),
    [
        ("run-12.csv", False, "run-12.csv"),
        ("run-12.csv", True, "run-12-UNMASKED.csv"),
        ("batch_3_trades.parquet", True, "batch_3_trades-UNMASKED.parquet"),
        ("run-12-UNMASKED.xlsx", True, "run-12-UNMASKED.xlsx"),  # said once, not twice
    ],
)
def test_an_unmasked_export_says_so_in_its_file_name(name: str, unmask: bool, expected: str) -> None:
    assert export_name(name, unmask=unmask) == expected
    assert export_path(Path("/out") / name, unmask=unmask) == Path("/out") / expected
