"""fxbatch: load, execute and review FX trade batches (app, CLI and notebook share this API)."""

from fxbatch.errors import (
    ConflictError,
    DatabaseLockedError,
    FxBatchError,
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
    "DatabaseLockedError",
    "FxBatchError",
    "LoadResult",
    "NotFoundError",
    "Rejection",
    "Settings",
    "SettingsError",
    "StoreError",
    "UnusableFileError",
    "Workbench",
    "open",
]
