"""A database from before the compact ledger (schema v3) upgrades with its booked deals intact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from fxbatch.bank.port import BookBatch
from fxbatch.bank.simulated import SimulatedBank
from fxbatch.models import BankSettings
from fxbatch.store import SCHEMA_VERSION, Store
from tests.integration.run_helpers import database_at


def _v3_database(path: Path) -> None:
    con = database_at(path, 3)
    con.execute(
        "INSERT INTO sim_ledger VALUES (hash('FXB-old-1-5'), 'FXB-old-1-5', 77, 1, 5, 18.5, TIMESTAMP '2026-01-02 03:04:05')"
    )
    con.close()


def test_an_old_ledger_keeps_its_deals_and_the_bank_does_not_book_them_again(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _v3_database(path)
    store = Store(path)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        cur = store.cursor()
        assert cur.execute("SELECT deal_transaction_id, quote_id, run_id, src_row FROM sim_ledger").fetchall() == [
            ("FXB-old-1-5", 77, 1, 5)
        ]
        bank = SimulatedBank(store, BankSettings(success_rate=1.0), 1, {"USD/ZAR": 18.0})
        status = bank.transaction_status(pa.array(["FXB-old-1-5", "FXB-old-1-6"]), 16)
        assert list(status.status) == ["COMPLETED", "NOT_FOUND"]
        assert list(status.quote_id) == [77, 0]
        # A repeated booking of the old deal answers with it and adds nothing to the ledger.
        replies = bank.book_deals(
            BookBatch(
                quote_id=np.array([123]), deal_txn_id=pa.array(["FXB-old-1-5"]), quote_rate=np.array([18.0]),
                deal_rate=np.array([18.0]), trade_key=np.array([1], dtype=np.uint64), attempt=np.array([1]),
                trade_id=pa.array(["T5"]), run_id=1, batch_id=1, src_row=np.array([5]),
            ),
            16,
        )  # fmt: skip
        assert replies.ok.all() and replies.deal_rate[0] == 18.5
        assert cur.execute("SELECT count(*) FROM sim_ledger").fetchall() == [(1,)]
    finally:
        store.close()
