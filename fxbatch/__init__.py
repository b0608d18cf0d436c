"""fxbatch: load, execute and review FX trade batches (app, CLI and notebook share this API)."""

from fxbatch.errors import (
    ConflictError,
    DamagedDatabaseError,
    DatabaseLockedError,
    FxBatchError,
    NotADatabaseError,
    NotFoundError,
    SettingsError,
    StoreError,
    UnusableFileError,
)
from fxbatch.models import BatchInfo, LoadResult, Rejection
from fxbatch.settings import Settings
from fxbatch.workbench import Workbench, open

__all__ = [
    "BatchInfo",
    "ConflictError",
    "DamagedDatabaseError",
    "DatabaseLockedError",
    "FxBatchError",
    "LoadResult",
    "NotADatabaseError",
    "NotFoundError",
    "Rejection",
    "Settings",
    "SettingsError",
    "StoreError",
    "UnusableFileError",
    "Workbench",
    "open",
]
