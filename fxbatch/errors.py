"""Every error fxbatch raises on purpose, in one tree.

::

    FxBatchError                 base; ``code`` (stable, for JSON) and ``message`` (for people)
    ├── UnusableFileError        a file that cannot become a batch at all (empty, no header, ...)
    ├── BadFixError              a correction typed in for a rejected row that cannot apply
    ├── SettingsError            a setting or option with a bad value (names the setting)
    ├── NotFoundError            a batch or run id that does not exist
    ├── ConflictError            an action refused by the current state (e.g. batch running)
    ├── StoreError               the database could not be used
    │   ├── DatabaseLockedError  another process holds the database file
    │   ├── NotADatabaseError    the file is not an fxbatch (DuckDB) database; nothing written
    │   └── DamagedDatabaseError the database file is damaged; refused, with how to recover
    └── ServerError              the fxbatch server (``fxbatch.connect``) could not be used

Errors from DuckDB and the file readers are mapped at the edge (``raise X(...) from exc``) so
callers (CLI, app, notebook) only ever handle these.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


class FxBatchError(Exception):
    """Base of all fxbatch errors: a stable ``code`` and a plain-language ``message``."""

    code = "FXBATCH_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class UnusableFileError(FxBatchError):
    """The file cannot be loaded at all; no batch is created."""

    @classmethod
    def unreadable(cls, name: str, exc: OSError) -> UnusableFileError:
        """The file could not be opened (one wording, whether read here or uploaded to a server)."""
        return cls(f"Cannot open {name}: {exc.strerror or exc}", code="UNREADABLE_FILE")

    code = "UNUSABLE_FILE"
    # The file's header cells, when the header was found but could not be mapped onto the
    # fields (missing or ambiguous columns): what a mapping editor offers to remap.
    headers: list[str] | None = None


class BadFixError(FxBatchError):
    """A correction names a row or field that the checked file does not have."""

    code = "BAD_FIX"


class SettingsError(FxBatchError):
    code = "BAD_SETTING"


class NotFoundError(FxBatchError):
    code = "NOT_FOUND"


class ConflictError(FxBatchError):
    code = "CONFLICT"


class CancelledError(FxBatchError):
    """A what-if sweep was cancelled before its end: nothing of it was stored."""

    code = "CANCELLED"


class StoreError(FxBatchError):
    code = "STORE_ERROR"


class DatabaseLockedError(StoreError):
    code = "DATABASE_LOCKED"

    def __init__(self, path: Path | str, detail: str = "") -> None:
        holder = f" ({detail})" if detail else ""
        super().__init__(
            f"The database file {path} is in use by another process{holder}. "
            "Close the other fxbatch app or command that has it open, or point this one at "
            "another file with --db PATH or FXBATCH_DB."
        )
        self.path = str(path)


class NotADatabaseError(StoreError):
    """An existing file that is not a DuckDB database (by its header), or a DuckDB database that
    fxbatch did not make: refused before anything is written to it."""

    code = "NOT_A_DATABASE"

    def __init__(self, path: Path | str, detail: str = "") -> None:
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"{path} is not an fxbatch/DuckDB database{why}; it was left unchanged. "
            "Pass the database file with --db PATH (e.g. data/fxbatch.duckdb), or a new file name to create one."
        )
        self.path = str(path)


class DamagedDatabaseError(StoreError):
    """The database file is damaged (truncated, overwritten, tables missing): refused unchanged."""

    code = "DAMAGED_DATABASE"

    def __init__(self, path: Path | str, detail: str) -> None:
        super().__init__(
            f"The database file {path} is damaged ({detail}); fxbatch has not written to it. To recover, "
            "stop fxbatch and copy a backup made by `python -m fxbatch backup -o FILE` over it, or move it "
            "aside and export the tables that still read with DuckDB (duckdb.connect(FILE, read_only=True), "
            "COPY table TO 'table.csv'), then start on a new database."
        )
        self.path = str(path)


class ServerError(FxBatchError):
    """The fxbatch server did not answer, or answered outside its API (names the URL)."""

    code = "SERVER_ERROR"


class NotSignedInError(FxBatchError):
    """No signed-in user or valid API token where login is on (HTTP 401): says how to sign in."""

    code = "NOT_SIGNED_IN"


class ForbiddenError(FxBatchError):
    """The signed-in user's role does not allow the action (HTTP 403): names the role needed."""

    code = "FORBIDDEN"


def invalid_values(exc: ValidationError) -> list[str]:
    """Each bad value of a settings model as ``field.path: why`` (a check of fxbatch's own in its
    own words, without pydantic's "Value error, " prefix); the CLI and the run form show them."""
    return [f"{'.'.join(map(str, e['loc']))}: {str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors()]


def rows_text(rows: list[int]) -> str:
    """Row numbers for a message: the first 20, then how many more."""
    shown = ", ".join(str(r) for r in rows[:20])
    return shown + (f" and {len(rows) - 20:,} more" if len(rows) > 20 else "")
