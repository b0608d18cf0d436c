"""The one object the app, the CLI and notebooks use: ``Workbench.open()``.

>>> import fxbatch
>>> wb = fxbatch.open()              # FXBATCH_DB or data/fxbatch.duckdb
>>> result = wb.load("trades.csv")
>>> wb.trades(result.batch_id).head()
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from types import TracebackType

import pandas as pd

from fxbatch import batches
from fxbatch.models import BatchInfo, LoadResult
from fxbatch.rates import RateTable
from fxbatch.settings import Settings
from fxbatch.store import Store


class Workbench:
    """Settings + database + rate table, and the operations on them."""

    def __init__(self, settings: Settings, store: Store, rates: RateTable) -> None:
        self.settings = settings
        self.store = store
        self.rates = rates

    @classmethod
    def open(
        cls, db: Path | str | None = None, settings: Settings | None = None, *, seed_sample: bool = False
    ) -> Workbench:
        """Open (creating and migrating if needed) the database at ``db`` or ``settings.db``.

        With ``seed_sample`` a newly created database gets the bundled sample batch.
        """
        settings = settings or Settings()
        if db is not None:
            settings = settings.model_copy(update={"db": Path(db)})
        rates = RateTable.from_csv(settings.rates_file)
        store = Store(settings.db)
        wb = cls(settings, store, rates)
        if seed_sample and store.created and settings.load_sample_on_create:
            wb.load(settings.sample_file, name="Sample batch")
        return wb

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Workbench:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- batches ---------------------------------------------------------------
    def load(
        self,
        path: Path | str,
        *,
        name: str | None = None,
        sheet: str | None = None,
        column_map: Mapping[str, str] | None = None,
        today: date | None = None,
        display_name: str | None = None,
    ) -> LoadResult:
        """Validate a CSV/XLSX/Parquet file and store its good rows as a new batch."""
        return batches.load_file(
            self.store,
            self.settings,
            self.rates,
            path,
            name=name,
            sheet=sheet,
            column_map=column_map,
            today=today,
            display_name=display_name,
        )

    def batches(self) -> list[BatchInfo]:
        return batches.list_batches(self.store)

    def batches_df(self) -> pd.DataFrame:
        rows = [b.model_dump() for b in self.batches()]
        return pd.DataFrame(rows, columns=list(BatchInfo.model_fields))

    def batch(self, batch_id: int) -> BatchInfo:
        return batches.get_batch(self.store, batch_id)

    def trades(self, batch_id: int) -> pd.DataFrame:
        return batches.batch_trades(self.store, batch_id)

    def rejections(self, batch_id: int) -> pd.DataFrame:
        return batches.batch_rejections(self.store, batch_id)


def open(db: Path | str | None = None, settings: Settings | None = None) -> Workbench:
    """Shortcut for ``Workbench.open``."""
    return Workbench.open(db, settings)
