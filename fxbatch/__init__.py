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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fxbatch.client import Client, connect


def __getattr__(name: str) -> object:
    """``fxbatch.connect`` and ``fxbatch.Client`` (the API's client), imported on first use: a
    plain ``import fxbatch`` does not pay for the HTTP client."""
    if name in ("connect", "Client"):
        from fxbatch import client

        return getattr(client, name)
    raise AttributeError(f"module 'fxbatch' has no attribute {name!r}")


__all__ = [
    "BatchInfo",
    "Client",
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
    "connect",
    "open",
]
