"""All settings in one typed object (environment prefix ``FXBATCH_``).

Built once at the edge (CLI, app, notebook) and passed down; nothing deeper reads the
environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fxbatch.calendars import trading_date
from fxbatch.errors import SettingsError
from fxbatch.ingest import limits
from fxbatch.models import check_bank_url
from fxbatch.money import MAX_SPREAD_PIPS

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
DATA_DIR = PROJECT_DIR / "data"
SERVER_URL = re.compile(r"https?://[^\s/]+(/\S*)?")


class Settings(BaseSettings):
    """fxbatch settings; every field can be set as ``FXBATCH_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FXBATCH_", extra="ignore")

    db: Path = Field(
        default=DATA_DIR / "fxbatch.duckdb",
        description="Path of the DuckDB database file (created on first use).",
    )
    rates_file: Path = Field(
        default=DATA_DIR / "rates.csv",
        description="CSV of mid rates per currency pair (columns pair, mid).",
    )
    registry_dir: Path | None = Field(
        default=None,
        description="Folder of the client registry CSVs a server's API runs may name (registry_file: a file name "
        "in it, never a path); empty = a 'registries' folder beside the database.",
    )
    sample_file: Path = Field(
        default=DATA_DIR / "sample_trades.csv",
        description="Bundled sample batch loaded into a new database on first start.",
    )
    load_sample_on_create: bool = Field(
        default=True,
        description="Load the bundled sample batch when the app creates a new database.",
    )
    default_spread_pips: int = Field(
        default=0,
        ge=0,
        le=MAX_SPREAD_PIPS,
        description="Spread in pips (the desk's 'bips': 1 pip = 0.0001 of the rate, 0.01 for JPY-quoted pairs) "
        "used when a row leaves spread_pips empty.",
    )
    today: date | None = Field(
        default=None,
        description="Trading date YYYY-MM-DD for every command and the app (preparing tomorrow's batch; tests); "
        "empty = today in Africa/Johannesburg.",
    )
    header_search_rows: int = Field(
        default=30,
        ge=1,
        le=1000,
        description="How many rows from the top of a sheet are searched for the header row.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Dask scheduler (tcp://host:8786) for what-if sweeps; empty = processes on this machine.",
    )
    max_rejections_shown: int = Field(
        default=1000,
        ge=1,
        description="How many rejections a load lists (the CLI, its JSON, the API's answers, the Upload page); "
        "every one is stored (`rejections BATCH_ID`, GET /batches/{id}/rejections).",
    )
    max_file_mb: int = Field(
        default=limits.MAX_FILE_MB,
        ge=1,
        le=100_000,
        description="Largest file loaded, in MB (MiB), whatever its format; a bigger one is refused naming this "
        "setting. The app's uploader allows the same (server.maxUploadSize in .streamlit/config.toml) and the "
        "HTTP API's api_max_upload_mb defaults to it.",
    )
    max_rows: int = Field(
        default=limits.MAX_ROWS,
        ge=1,
        description="Most rows in one file (CSV lines or sheet rows, header and blank rows included; Excel's own "
        "maximum by default); a longer file is refused before it is read.",
    )
    max_cells: int = Field(
        default=limits.MAX_CELLS,
        ge=1,
        description="Most cells in one file: rows x columns of a sheet's used area (empty cells inside it count: "
        "a workbook reader holds them all), or CSV lines x the widest line's fields; keeps a load within 2 GiB.",
    )
    max_cell_chars: int = Field(
        default=limits.MAX_CELL_CHARS,
        ge=1,
        description="Most characters in one cell (Excel's own maximum by default); a row with a longer cell is "
        "rejected naming its row and column, and the rest of the file loads.",
    )
    max_unzipped_mb: int = Field(
        default=limits.MAX_UNZIPPED_MB,
        ge=1,
        description="Largest unzipped size of a workbook (XLSX, ODS: zip archives of XML), in MB, read from its zip "
        "directory before any sheet is parsed.",
    )
    max_zip_ratio: int = Field(
        default=limits.MAX_ZIP_RATIO,
        ge=1,
        description="Largest ratio of unzipped to stored size of a workbook part over 1 MB; above it the file is "
        "refused as a zip bomb before any sheet is parsed.",
    )
    api_max_upload_mb: int = Field(
        default=limits.MAX_FILE_MB,
        ge=1,
        le=100_000,
        description="Largest body the HTTP API accepts in POST /api/v1/batches, in MB (the default of max_file_mb "
        "and of the app's server.maxUploadSize); a bigger upload is refused with 413 before it is stored, and "
        "the load itself refuses a file over max_file_mb.",
    )
    server: str | None = Field(
        default=None,
        description="URL of a running fxbatch server (http://127.0.0.1:8501) for the CLI and notebooks to work "
        "through; empty = the server recorded beside the database file, if one holds it, else the file itself.",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Let the server listen on an address other machines can reach (not 127.0.0.1 or localhost) "
        "without login (no [auth] section); anyone who reaches it can load, run and delete batches.",
    )
    login: bool = Field(
        default=False,
        description="Require sign-in: the server refuses to start unless the [auth] section of "
        ".streamlit/secrets.toml configures an OpenID Connect provider (a configured [auth] turns login on anyway).",
    )
    admin_email: str | None = Field(
        default=None,
        description="E-mail address of the first admin, given the admin role when the server starts with login "
        "(required with login); admins then grant roles on the Admin page.",
    )
    approval_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 30,
        description="How long a request for a real-money run stays open, and an approval usable, in hours.",
    )
    token_days: int = Field(
        default=90, ge=1, le=366, description="Longest life of a personal API token, in days (also the default)."
    )
    token: SecretStr | None = Field(
        default=None,
        description="Personal API token the CLI and notebooks send to a server with login (FXBATCH_TOKEN; "
        "made on the server's Tokens page).",
    )
    server_url: str | None = Field(
        default=None,
        description="Base URL the server records beside the database for the CLI and notebooks on this machine "
        "(behind a proxy, or under plain uvicorn on a port other than Streamlit's server.port); "
        "empty = from Streamlit's server.address and server.port.",
    )
    bank_url: str | None = Field(
        default=None,
        description="Base URL of the HTTP bank the app's run form offers; empty = none (the simulated bank).",
    )
    bank_token_url: str | None = Field(
        default=None,
        description="OAuth2 token endpoint of the HTTP bank; empty = the bank URL + /oauth2/token.",
    )
    bank_client_id: str = Field(default="fxbatch", description="OAuth2 client id for the HTTP bank.")
    bank_client_secret: SecretStr = Field(
        default=SecretStr(""),
        description="OAuth2 client secret for the HTTP bank (never logged, shown or exported).",
    )
    bank_grant: Literal["password", "client_credentials"] = Field(
        default="client_credentials",
        description="OAuth2 grant for the HTTP bank's token: password (the bank's documented grant: client id, "
        "secret, scope, username, password) or client_credentials.",
    )
    bank_username: str = Field(default="", description="The dealer's user name at the bank (password grant).")
    bank_password: SecretStr = Field(
        default=SecretStr(""),
        description="The dealer's password at the bank (password grant; never logged, shown or exported).",
    )
    bank_scope: str = Field(default="", description="OAuth2 scope asked for with the HTTP bank's token; empty = none.")
    bank_user_id: str = Field(
        default="dealer@example.com",
        description="The dealer's e-mail sent as header.userId on every bank call.",
    )
    bank_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Timeout of one HTTP bank call, in seconds.")
    bank_unreachable_window_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How long the HTTP bank may stay unreachable before the run stops as INTERRUPTED.",
    )
    bank_max_calls_per_s: float | None = Field(
        default=None,
        gt=0,
        description="Upper limit on HTTP bank calls per second across the run; empty = no limit.",
    )

    @field_validator("server_url")
    @classmethod
    def _server_url_is_an_address(cls, url: str | None) -> str | None:
        url = (url or "").strip().rstrip("/")
        if url and not SERVER_URL.fullmatch(url):
            raise ValueError(f"server URL {url!r} is not a web address: for example http://127.0.0.1:8501")
        return url or None

    @field_validator("bank_url")
    @classmethod
    def _bank_url_is_an_address(cls, url: str | None) -> str | None:
        return check_bank_url(url)

    @field_validator("admin_email")
    @classmethod
    def _admin_email_is_an_address(cls, email: str | None) -> str | None:
        from fxbatch.access import normal_email

        try:
            return normal_email(email) if email and email.strip() else None
        except SettingsError as exc:
            raise ValueError(exc.message) from None

    def registry_folder(self) -> Path:
        """Where the API looks up a run's ``registry_file`` (see ``registry_dir``)."""
        return self.registry_dir if self.registry_dir is not None else self.db.parent / "registries"

    def trading_date(self) -> date:
        """Today for the desk: ``today`` when set, else the date in Africa/Johannesburg (not UTC's)."""
        return trading_date(self.today)


def settings_from_secrets(secrets: Mapping[str, object], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment over ``secrets`` (the app's ``[fxbatch]`` secrets section).

    Keys are setting names without the prefix (``bank_client_secret = "..."``); a variable set in
    the environment wins over the same secret. An unknown key or a bad value raises SettingsError
    naming it.
    """
    env = os.environ if environ is None else environ
    _refuse_renamed(env)
    for key in secrets:
        if key not in Settings.model_fields:
            raise SettingsError(
                f"Secret fxbatch.{key} is not an fxbatch setting; settings are: {', '.join(Settings.model_fields)}."
            )
    given = {k: v for k, v in secrets.items() if f"FXBATCH_{k.upper()}" not in env}
    return _build(given, from_secrets=frozenset(given))


# Settings renamed when their meaning changed: a value set under the old name must not be ignored.
RENAMED = {"FXBATCH_DEFAULT_SPREAD_BPS": "FXBATCH_DEFAULT_SPREAD_PIPS (the desk's spread is in pips, not basis points)"}


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value raises SettingsError naming the variable."""
    _refuse_renamed(os.environ)
    return _build(overrides)


def _refuse_renamed(env: Mapping[str, str]) -> None:
    for old, new in RENAMED.items():
        if old in env:
            raise SettingsError(f"Setting {old} is no longer read: set {new} instead.")


def _build(values: Mapping[str, object], from_secrets: frozenset[str] = frozenset()) -> Settings:
    """Settings(**values), or SettingsError naming the variable or secret at fault. The bad value
    is shown for an environment variable, never for a secret or a secret-holding setting."""
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        if name in from_secrets:
            where, shown = f"secret fxbatch.{name}", ""
        else:
            where = f"FXBATCH_{name.upper()}"
            shown = "" if "secret" in name else f" (got {first.get('input')!r})"
        raise SettingsError(f"Setting {where} is not valid: {first['msg']}{shown}.") from exc
