"""Optional client registry for the simulated bank: turns on the client checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fxbatch.errors import SettingsError
from fxbatch.models import FailureCode

ACTIVE = "ACTIVE"


@dataclass
class ClientRegistry:
    """Known clients: one row per (cif, account_number) with status and limit in ZAR."""

    table: pd.DataFrame  # columns cif, account_number, status, limit_zar

    @classmethod
    def from_csv(cls, path: Path | str) -> ClientRegistry:
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"Cannot read the client registry registry_file={path}: {exc}") from exc
        df.columns = [c.strip().lower() for c in df.columns]
        missing = {"cif", "account_number", "status", "limit_zar"} - set(df.columns)
        if missing:
            raise SettingsError(f"Client registry {path} lacks column(s): {', '.join(sorted(missing))}")
        out = pd.DataFrame(
            {
                "cif": df["cif"].str.strip(),
                "account_number": df["account_number"].str.strip(),
                "status": df["status"].str.strip().str.upper(),
                "limit_zar": pd.to_numeric(df["limit_zar"], errors="coerce").fillna(np.inf),
            }
        )
        # One row per (cif, account): a repeated pair keeps its first row, as the bank's would.
        return cls(out.drop_duplicates(["cif", "account_number"], keep="first").reset_index(drop=True))

    def check(self, cif: np.ndarray, account: np.ndarray, amount_zar: np.ndarray) -> np.ndarray:
        """The failing client check per trade (object array; None = passes)."""
        known_cif = np.isin(cif.astype(str), self.table["cif"].to_numpy(dtype=str))
        pairs = pd.DataFrame({"cif": cif.astype(str), "account_number": account.astype(str)})
        merged = pairs.merge(self.table, how="left", on=["cif", "account_number"], validate="many_to_one")
        found = merged["status"].notna().to_numpy()
        active = (merged["status"] == ACTIVE).to_numpy()
        within = (amount_zar <= merged["limit_zar"].fillna(np.inf).to_numpy()) | ~found
        out = np.full(len(cif), None, dtype=object)
        out[~within] = FailureCode.LIMIT_EXCEEDED.value
        out[found & ~active] = FailureCode.ACCOUNT_BLOCKED.value
        out[known_cif & ~found] = FailureCode.ACCOUNT_MISMATCH.value
        out[~known_cif] = FailureCode.CLIENT_NOT_FOUND.value
        return out
