"""One masking rule (issue 16): accounts are masked in every read path and export unless unmasked,
and an unmasked export says so in its file name: library, CLI, HTTP API and client alike."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from python_calamine import CalamineWorkbook

from fxbatch import Settings, Workbench
from fxbatch.cli import main
from fxbatch.client import Client, connect
from tests.conftest import HEADER, TODAY, good_row
from tests.integration.api_helpers import api_client, serve_api

ACCOUNTS = {2: "0012345678", 3: "0098765432", 5: "0099999999"}  # row -> account of the accepted trades
REJECTED = "12345678AB"  # row 4: an account with letters stays rejected
FIXED = ("99999999XY", "0099999999")  # row 5: corrected at load
ROWS = [
    good_row(1, account_number=ACCOUNTS[2]),
    good_row(2, account_number=ACCOUNTS[3]),
    good_row(3, account_number=REJECTED),
    good_row(4, account_number=FIXED[0]),
]


class Loaded:
    def __init__(self, path: Path, batch: int, run: int) -> None:
        self.path, self.batch, self.run = path, batch, run


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    """A closed database with one batch (a rejected account, a corrected one) and one run of it."""
    folder = tmp_path_factory.mktemp("masking")
    source = folder / "accounts.csv"
    source.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    db = folder / "masking.duckdb"
    with Workbench.open(settings=Settings(db=db)) as wb:
        result = wb.load(source, fixes={5: {"account_number": FIXED[1]}}, today=TODAY)
        assert result.accepted == 3 and result.rejected == 1, result.rejections
        run = wb.run(result.batch_id, success_rate=1.0).run_id
    return Loaded(db, result.batch_id, run)


@pytest.fixture
def db(loaded: Loaded, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.duckdb"
    shutil.copyfile(loaded.path, copy)
    return copy


@pytest.fixture
def wb(db: Path) -> Iterator[Workbench]:
    with Workbench.open(settings=Settings(db=db)) as workbench:
        assert isinstance(workbench, Workbench)  # no server holds this database
        yield workbench


def masked(account: str) -> str:
    return "•" * (len(account) - 4) + account[-4:]


def read(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    if path.suffix == ".parquet":
        records: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        return records
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    return [dict(zip([str(h) for h in rows[0]], r, strict=True)) for r in rows[1:]]


def accounts_of(rows: list[dict[str, Any]]) -> dict[int, str]:
    return {int(r["row"]): str(r["account_number"]) for r in rows}


FULL = ACCOUNTS
MASKED = {row: masked(a) for row, a in ACCOUNTS.items()}


# -- the library ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".parquet"])
def test_a_run_export_masks_accounts_by_default_in_every_format(
    wb: Workbench, loaded: Loaded, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"run{suffix}"
    assert wb.export_run(loaded.run, path) == 3
    assert accounts_of(read(path)) == MASKED


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".parquet"])
def test_an_unmasked_run_export_has_full_accounts_and_says_so_in_its_name(
    wb: Workbench, loaded: Loaded, tmp_path: Path, suffix: str
) -> None:
    assert wb.export_run(loaded.run, tmp_path / f"run{suffix}", unmask=True) == 3
    assert not (tmp_path / f"run{suffix}").exists()
    assert accounts_of(read(tmp_path / f"run-UNMASKED{suffix}")) == FULL


def test_a_batch_export_follows_the_same_rule(wb: Workbench, loaded: Loaded, tmp_path: Path) -> None:
    assert wb.export_batch(loaded.batch, tmp_path / "batch.csv") == 3
    assert accounts_of(read(tmp_path / "batch.csv")) == MASKED
    wb.export_batch(loaded.batch, tmp_path / "batch.csv", unmask=True)
    assert accounts_of(read(tmp_path / "batch-UNMASKED.csv")) == FULL


def test_a_batchs_trades_rejections_and_corrections_are_masked_unless_unmasked(wb: Workbench, loaded: Loaded) -> None:
    assert dict(zip(wb.trades(loaded.batch)["row"], wb.trades(loaded.batch)["account_number"], strict=True)) == MASKED
    full = wb.trades(loaded.batch, unmask=True)
    assert dict(zip(full["row"], full["account_number"], strict=True)) == FULL

    [rejection] = wb.rejections(loaded.batch).to_dict("records")
    assert rejection["value"] == masked(REJECTED) and REJECTED not in rejection["message"]
    assert masked(REJECTED) in rejection["message"]
    [clear] = wb.rejections(loaded.batch, unmask=True).to_dict("records")
    assert clear["value"] == REJECTED and REJECTED in clear["message"]

    [correction] = wb.corrections(loaded.batch).to_dict("records")
    assert (correction["original"], correction["corrected"]) == (masked(FIXED[0]), masked(FIXED[1]))
    [fixed] = wb.corrections(loaded.batch, unmask=True).to_dict("records")
    assert (fixed["original"], fixed["corrected"]) == FIXED


def test_the_ledger_export_carries_no_account_numbers(wb: Workbench, loaded: Loaded, tmp_path: Path) -> None:
    assert wb.export_ledger(tmp_path / "ledger.csv", loaded.run) == 3
    text = (tmp_path / "ledger.csv").read_text(encoding="utf-8")
    assert "account" not in text.splitlines()[0]
    assert not any(a in text for a in ACCOUNTS.values())


# -- the command line ----------------------------------------------------------------------------

Cli = Callable[..., tuple[int, Any]]


@pytest.fixture
def cli(db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    for name in [n for n in os.environ if n.startswith("FXBATCH_") and n != "FXBATCH_TODAY"]:
        monkeypatch.delenv(name)

    def run(*args: str) -> tuple[int, Any]:
        code = main(["--db", str(db), *args, "--json"])
        out, _ = capsys.readouterr()
        return code, json.loads(out)

    return run


def test_cli_export_masks_accounts_by_default(cli: Cli, loaded: Loaded, tmp_path: Path) -> None:
    out = tmp_path / "run.csv"
    code, payload = cli("export", str(loaded.run), "-o", str(out))
    assert code == 0 and payload == {"run_id": loaded.run, "rows": 3, "path": str(out), "unmasked": False}
    assert accounts_of(read(out)) == MASKED


def test_cli_export_unmask_writes_full_accounts_to_an_unmasked_file_name(
    cli: Cli, loaded: Loaded, tmp_path: Path
) -> None:
    code, payload = cli("export", str(loaded.run), "-o", str(tmp_path / "run.csv"), "--unmask")
    written = tmp_path / "run-UNMASKED.csv"
    assert code == 0 and payload["path"] == str(written) and payload["unmasked"] is True
    assert not (tmp_path / "run.csv").exists()
    assert accounts_of(read(written)) == FULL


def test_cli_trades_and_rejections_mask_unless_unmasked(cli: Cli, loaded: Loaded) -> None:
    assert accounts_of(cli("trades", str(loaded.batch))[1]) == MASKED
    assert accounts_of(cli("trades", str(loaded.batch), "--unmask")[1]) == FULL
    assert cli("rejections", str(loaded.batch))[1][0]["value"] == masked(REJECTED)
    assert cli("rejections", str(loaded.batch), "--unmask")[1][0]["value"] == REJECTED


def test_cli_load_masks_a_rejected_account_in_its_text_json_and_refusal(
    cli: Cli, loaded: Loaded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "accounts.csv"
    source.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    code, payload = cli("load", str(source))
    assert code == 0 and [r["value"] for r in payload["rejections"]] == [masked(REJECTED), masked(FIXED[0])]
    assert REJECTED not in json.dumps(payload)
    assert main(["--db", str(loaded.path.parent / "x.duckdb"), "load", str(source)]) == 0
    assert REJECTED not in capsys.readouterr().out
    only_bad = tmp_path / "bad.csv"
    only_bad.write_text("\n".join([HEADER, ROWS[2]]) + "\n", encoding="utf-8")
    assert main(["--db", str(loaded.path.parent / "y.duckdb"), "load", str(only_bad)]) != 0
    out, err = capsys.readouterr()
    assert "is valid, so no batch was created" in out + err and REJECTED not in out + err


# -- the HTTP API and the client -----------------------------------------------------------------


@pytest.fixture
def api(wb: Workbench) -> Iterator[httpx.Client]:
    with api_client(wb) as client:
        yield client


def test_api_export_masks_by_default_and_unmask_true_names_the_file(api: httpx.Client, loaded: Loaded) -> None:
    resp = api.get(f"/runs/{loaded.run}/export")
    assert resp.status_code == 200
    assert resp.headers["content-disposition"] == f'attachment; filename="run-{loaded.run}.csv"'
    assert accounts_of(list(csv.DictReader(io.StringIO(resp.text)))) == MASKED

    resp = api.get(f"/runs/{loaded.run}/export", params={"unmask": "true", "format": "parquet"})
    assert resp.headers["content-disposition"] == f'attachment; filename="run-{loaded.run}-UNMASKED.parquet"'
    assert accounts_of(pq.read_table(io.BytesIO(resp.content)).to_pylist()) == FULL


def test_api_batch_tables_mask_by_default(api: httpx.Client, loaded: Loaded) -> None:
    assert accounts_of(api.get(f"/batches/{loaded.batch}/trades").json()) == MASKED
    assert accounts_of(api.get(f"/batches/{loaded.batch}/trades", params={"unmask": "true"}).json()) == FULL
    assert api.get(f"/batches/{loaded.batch}/rejections").json()[0]["value"] == masked(REJECTED)
    assert api.get(f"/batches/{loaded.batch}/corrections", params={"unmask": "true"}).json()[0]["original"] == FIXED[0]


def test_api_load_answer_masks_a_rejected_account(api: httpx.Client, tmp_path: Path) -> None:
    source = tmp_path / "accounts.csv"
    source.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    with source.open("rb") as fh:
        resp = api.post("/batches", files={"file": ("accounts.csv", fh, "text/csv")})
    assert resp.status_code == 201, resp.text
    assert [r["value"] for r in resp.json()["rejections"]] == [masked(REJECTED), masked(FIXED[0])]
    assert REJECTED not in resp.text


@pytest.fixture
def client(wb: Workbench) -> Iterator[Client]:
    with serve_api(wb) as url, connect(url) as remote:
        yield remote


def test_the_client_passes_unmask_through(client: Client, wb: Workbench, loaded: Loaded, tmp_path: Path) -> None:
    assert client.export_run(loaded.run, tmp_path / "run.parquet") == 3
    assert accounts_of(read(tmp_path / "run.parquet")) == MASKED
    assert client.export_run(loaded.run, tmp_path / "run.parquet", unmask=True) == 3
    assert accounts_of(read(tmp_path / "run-UNMASKED.parquet")) == FULL
    pd.testing.assert_frame_equal(
        client.trades(loaded.batch, unmask=True), wb.trades(loaded.batch, unmask=True), check_dtype=False
    )
    assert client.rejections(loaded.batch)["value"].tolist() == [masked(REJECTED)]
    assert client.corrections(loaded.batch, unmask=True)["corrected"].tolist() == [FIXED[1]]
