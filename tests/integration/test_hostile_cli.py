"""Hostile command lines (issue 15, item 7): each gets one clear message, exit 2, JSON with --json,
no traceback, no partial file, and the database holds exactly what it held before."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pydantic import ValidationError

from fxbatch import Settings, Workbench, audit
from fxbatch.banksim.__main__ import build_parser as banksim_parser
from fxbatch.cli import main
from fxbatch.errors import invalid_values
from fxbatch.models import SEED_MAX, RunConfig
from tests.conftest import DATA

Cli = Callable[..., tuple[int, Any, str]]
PASSWORD = "s3cret-Pa55"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A closed database with the bundled sample as a batch and one finished run of it."""
    path = tmp_path_factory.mktemp("hostile") / "template.duckdb"
    with Workbench.open(settings=Settings(db=path)) as wb:
        batch = wb.load(DATA / "sample_trades.csv").batch_id
        run = wb.run(batch, seed=1).run_id
    return path, run


@pytest.fixture
def db(template: tuple[Path, int], tmp_path: Path) -> Path:
    copy = tmp_path / "hostile.duckdb"
    shutil.copyfile(template[0], copy)
    return copy


@pytest.fixture
def run_id(template: tuple[Path, int]) -> int:
    return template[1]


@pytest.fixture
def cli(db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cli("export", "1", "--json")`` -> (exit code, stdout parsed as JSON when it is, stderr)."""
    for name in [n for n in os.environ if n.startswith("FXBATCH_") and n != "FXBATCH_TODAY"]:
        monkeypatch.delenv(name)

    def run(*args: str) -> tuple[int, Any, str]:
        code = main(["--db", str(db), *args])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, (json.loads(out) if out.strip().startswith("{") else out), err

    return run


def contents(db: Path) -> dict[str, Any]:
    """What the database holds: every batch and run row, and the row count of every table."""
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        tables.remove("audit_log")  # a refusal is on record there (fxbatch.audit); nothing else changes
        held: dict[str, Any] = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0] for t in tables}
        held["batches rows"] = con.execute("SELECT * FROM batches ORDER BY batch_id").fetchall()
        held["runs rows"] = con.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
    return held


@pytest.fixture
def unchanged(db: Path) -> Any:
    """Asserts after the test that the database holds exactly what it held before."""
    before = contents(db)
    yield
    assert contents(db) == before


def assert_refused(code: int, out: Any, err: str, *words: str, json_code: str | None = None) -> None:
    assert code == 2
    assert err.startswith("error: ") or "\nerror: " in err
    for word in words:
        assert word in err
    if json_code is not None:
        assert out["error"]["code"] == json_code
        for word in words:
            assert word in out["error"]["message"]


# --- exports to a path that cannot be written -------------------------------------------------


@pytest.mark.parametrize("command", ["export", "ledger"])
def test_an_export_into_proc_is_refused_naming_the_path(cli: Cli, run_id: int, command: str, unchanged: None) -> None:
    args = [command, str(run_id)] if command == "export" else [command, "--run", str(run_id)]
    code, out, err = cli(*args, "-o", "/proc/x.csv", "--json")
    assert_refused(code, out, err, "/proc/x.csv", json_code="UNWRITABLE_PATH")
    assert not Path("/proc/x.csv").exists()


def test_an_export_into_a_missing_folder_is_refused_and_creates_nothing(
    cli: Cli, run_id: int, tmp_path: Path, unchanged: None
) -> None:
    target = tmp_path / "no" / "such" / "run.csv"
    code, out, err = cli("export", str(run_id), "-o", str(target))
    assert_refused(code, out, err, str(target), "does not exist")
    assert out == ""
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("name", ["out.csv", "out"])
def test_an_export_onto_a_folder_is_refused_and_leaves_it_as_it_was(
    cli: Cli, run_id: int, tmp_path: Path, name: str, unchanged: None
) -> None:
    folder = tmp_path / name
    folder.mkdir()
    code, out, err = cli("ledger", "-o", str(folder), "--json")
    assert_refused(code, out, err, str(folder), "folder", json_code="UNWRITABLE_PATH")
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert _files(tmp_path) == sorted(["hostile.duckdb", name])  # no partial file


def test_a_good_export_leaves_no_partial_file_beside_it(cli: Cli, run_id: int, tmp_path: Path) -> None:
    code, out, _ = cli("export", str(run_id), "-o", str(tmp_path / "run.csv"), "--json")
    assert code == 0 and out["rows"] == 200
    assert _files(tmp_path) == ["hostile.duckdb", "run.csv"]


def _files(folder: Path) -> list[str]:
    """The folder's files but the audit trail's head beside the database (``fxbatch.audit``)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(audit.HEAD_SUFFIX))


# --- a password inside a bank URL -------------------------------------------------------------


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_password_in_the_bank_url_is_refused_without_being_echoed(
    cli: Cli, json_flag: list[str], unchanged: None
) -> None:
    code, out, err = cli("run", "1", "--bank", f"http://dealer:{PASSWORD}@127.0.0.1:8600", *json_flag)
    assert_refused(code, out, err, "credentials belong in settings", "FXBATCH_BANK_CLIENT_SECRET",
                   json_code="BAD_SETTING" if json_flag else None)  # fmt: skip
    assert PASSWORD not in json.dumps(out) + err


@pytest.mark.parametrize(
    "url", [f"http://dealer:{PASSWORD}@bank.example", f"https://{PASSWORD}@bank.example/fx", f"dealer:{PASSWORD}@host"]
)
def test_the_url_check_every_caller_shares_refuses_userinfo_without_echoing_it(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RunConfig(bank_url=url)
    (message,) = invalid_values(caught.value)
    assert "credentials belong in settings" in message and PASSWORD not in message


def test_an_at_sign_after_the_host_is_not_taken_for_a_password() -> None:
    assert RunConfig(bank_url="http://bank.example/fx?desk=a@b").bank_url == "http://bank.example/fx?desk=a@b"


# --- seeds outside 0..2^63-1 ------------------------------------------------------------------


@pytest.mark.parametrize("seed", [str(2**64), str(2**63), "-1", "x"])
@pytest.mark.parametrize("command", ["run", "whatif"])
def test_a_seed_outside_the_range_is_refused_naming_the_option(
    cli: Cli, seed: str, command: str, unchanged: None
) -> None:
    extra = ["--success-rates", "0.5"] if command == "whatif" else []
    code, out, err = cli(command, "1", *extra, f"--seed={seed}", "--json")
    assert_refused(code, out, err, "--seed", "2^63-1", json_code="BAD_ARGUMENT")


@pytest.mark.parametrize("rates", ["0.5:1.0:0", "1:0:0.1", "0.5:1:-0.1", "0:inf:1", "0:1:nan"])
def test_a_success_rate_range_that_never_ends_or_runs_backwards_is_refused_naming_the_option(
    cli: Cli, rates: str, unchanged: None
) -> None:
    code, out, err = cli("whatif", "1", "--success-rates", rates, "--json")
    assert_refused(code, out, err, "--success-rates", "STOP >= START", "STEP above 0", json_code="BAD_ARGUMENT")


def test_the_largest_seed_is_accepted_and_one_more_is_refused() -> None:
    assert RunConfig(seed=SEED_MAX).seed == SEED_MAX
    with pytest.raises(ValidationError):
        RunConfig(seed=SEED_MAX + 1)


def test_the_simulated_bank_service_takes_seeds_exactly_up_to_2_63_minus_1(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["serve", "--port", "0", "--db", "bank.duckdb"]
    assert banksim_parser().parse_args([*base, "--seed", str(SEED_MAX)]).seed == SEED_MAX
    with pytest.raises(SystemExit) as caught:
        banksim_parser().parse_args([*base, "--seed", str(SEED_MAX + 1)])
    assert caught.value.code == 2
    assert "--seed" in capsys.readouterr().err


# --- argument errors with --json --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--json", "batches", "--bogus"], ["unrecognized arguments", "--bogus"]),
        (["run", "--json"], ["batch_id"]),
        (["show", "abc", "--json"], ["invalid int value", "abc"]),
        (["--json", "frobnicate"], ["invalid choice", "frobnicate"]),
    ],
    ids=["unknown option", "missing argument", "bad int", "unknown command"],
)
def test_an_argument_error_with_json_answers_in_json(
    cli: Cli, args: list[str], words: list[str], unchanged: None
) -> None:
    code, out, err = cli(*args)
    assert_refused(code, out, err, *words, json_code="BAD_ARGUMENT")
    assert set(out) == {"error"} and set(out["error"]) == {"code", "message"}


def test_an_argument_error_without_json_prints_usage_on_stderr_only(cli: Cli, unchanged: None) -> None:
    code, out, err = cli("show", "abc")
    assert_refused(code, out, err, "invalid int value")
    assert out == "" and err.startswith("usage: ")


# --- unknown ids are named as unknown ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["runs", "--batch", "99"], "There is no batch 99"),
        (["promote", "99", "1"], "There is no sweep 99"),
        (["sweeps", "--batch", "99"], "There is no batch 99"),
        (["cancel-sweep", "99"], "There is no sweep 99"),
    ],
)
def test_an_unknown_batch_or_sweep_is_named_not_taken_for_an_empty_one(
    cli: Cli, args: list[str], said: str, unchanged: None
) -> None:
    code, out, err = cli(*args, "--json")
    assert_refused(code, out, err, said, json_code="NOT_FOUND")


def test_a_success_rate_range_of_more_steps_than_a_sweep_takes_is_refused_before_it_is_built(
    cli: Cli, unchanged: None
) -> None:
    code, out, err = cli("whatif", "1", "--success-rates", "0:1:1e-9", "--json")
    assert_refused(code, out, err, "--success-rates", ",000 success rates; a sweep takes at most 10,000")
    code, out, err = cli("whatif", "1", "--success-rates", "0.5,0.6", "--seeds", "2000000000", "--json")
    assert code == 2 and "A sweep of 4,000,000,000 scenarios" in err


def test_a_sweep_that_has_finished_is_not_cancelled(cli: Cli) -> None:
    code, out, _ = cli("whatif", "1", "--success-rates", "0.9", "--workers", "1", "--json")
    assert code == 0
    sweep_id = out["sweep_id"]
    code, out, err = cli("cancel-sweep", str(sweep_id), "--json")
    assert_refused(code, out, err, f"Sweep {sweep_id} has finished and is stored", json_code="CONFLICT")
