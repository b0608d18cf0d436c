"""The largest amount DECIMAL(18, 2) holds is accepted exactly; one beyond it is refused."""

from __future__ import annotations

from decimal import Decimal

from fxbatch import Workbench
from tests.conftest import HEADER, TODAY, good_row


def test_an_amount_just_below_ten_to_the_sixteen_is_stored_exactly(wb: Workbench, write_file) -> None:
    text = "\n".join([HEADER, good_row(1, amount="999999999999999.99"), good_row(2, amount="10000000000000000")])
    result = wb.load(write_file(text + "\n"), today=TODAY)
    assert result.accepted == 1
    assert [(r.row, r.column) for r in result.rejections] == [(3, "amount")]
    stored = wb.store.cursor().execute("SELECT amount FROM trades WHERE batch_id = ?", [result.batch_id]).fetchall()
    assert stored == [(Decimal("999999999999999.99"),)]
