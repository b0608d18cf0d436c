"""The bundled mid-rate table: which pairs fxbatch supports and their mid rates."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from fxbatch.errors import SettingsError


@dataclass(frozen=True)
class RateTable:
    """Mid rates keyed by pair ``"USD/ZAR"``; read-only after loading."""

    mids: dict[str, float]

    @classmethod
    def from_csv(cls, path: Path) -> RateTable:
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise SettingsError(f"Cannot read the rate table rates_file={path}: {exc}") from exc
        mids: dict[str, float] = {}
        for line, row in enumerate(rows, start=2):
            pair = (row.get("pair") or "").strip().upper()
            try:
                mid = float(row.get("mid") or "")
            except ValueError as exc:
                raise SettingsError(f"{path} line {line}: mid {row.get('mid')!r} is not a number") from exc
            if len(pair) != 7 or pair[3] != "/" or mid <= 0:
                raise SettingsError(f"{path} line {line}: expected pair like USD/ZAR and mid > 0")
            mids[pair] = mid
        if not mids:
            raise SettingsError(f"The rate table {path} has no rates")
        return cls(mids)

    @property
    def pairs(self) -> list[str]:
        return sorted(self.mids)

    def has_pair(self, pair: str) -> bool:
        return pair in self.mids

    @property
    def currencies(self) -> set[str]:
        """Every currency of the table's pairs."""
        return {c for pair in self.mids for c in pair.split("/")}

    def zar_factors(self) -> dict[str, float]:
        """ZAR value of one unit of every currency the table quotes (ZAR itself included)."""
        return {c: f for c in sorted(self.currencies | {"ZAR"}) if (f := self.to_zar(c)) is not None}

    def to_zar(self, currency: str) -> float | None:
        """Mid value of one unit of ``currency`` in ZAR, directly (X/ZAR, or ZAR/X inverted) or
        through USD."""
        if currency == "ZAR":
            return 1.0
        if f"{currency}/ZAR" in self.mids:
            return self.mids[f"{currency}/ZAR"]
        if f"ZAR/{currency}" in self.mids:
            return 1.0 / self.mids[f"ZAR/{currency}"]
        usd_zar = self.mids.get("USD/ZAR")
        if usd_zar is None:
            return None
        if f"{currency}/USD" in self.mids:
            return self.mids[f"{currency}/USD"] * usd_zar
        if f"USD/{currency}" in self.mids:
            return usd_zar / self.mids[f"USD/{currency}"]
        return None
