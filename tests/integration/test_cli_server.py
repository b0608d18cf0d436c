"""The CLI and the notebook while a server holds the database: they work through its API.

The server here is the API served in this process over real HTTP, holding the database file
and recording its address beside it as ``make run`` does; the CLI and the notebook kernel are
other processes, which could not open the file themselves (DuckDB lets one process hold it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fxbatch import Workbench
from fxbatch.models import FINAL_RUN, RunStatus
from fxbatch.serving import remove_record, write_record
from tests.conftest import DATA
from tests.integration.api_helpers import WAIT, Gate, serve_api
from tests.integration.test_notebook import execute_notebook

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(wb: Workbench) -> Iterator[str]:
    with serve_api(wb) as url:
        write_record(wb.settings.db, url)
        try:
            yield url
        finally:
            remove_record(wb.settings.db)


def _env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FXBATCH_") or k == "FXBATCH_TODAY"}
    return {**env, "FXBATCH_DB": str(db)}


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fxbatch", *args], cwd=ROOT, env=_env(db), capture_output=True, text=True,
        timeout=WAIT * 2,
    )  # fmt: skip


def test_without_a_server_a_second_process_is_refused_the_held_file(wb: Workbench) -> None:
    done = cli(wb.settings.db, "batches")
    assert done.returncode == 2 and "in use by another process" in done.stderr


def test_cli_load_run_and_export_work_through_the_server(wb: Workbench, served: str, tmp_path: Path) -> None:
    db = wb.settings.db
    loaded = cli(db, "--json", "load", str(DATA / "sample_with_errors.csv"))
    assert loaded.returncode == 0, loaded.stderr
    batch = json.loads(loaded.stdout)["batch_id"]
    assert wb.batch(batch).name == json.loads(loaded.stdout)["name"] and json.loads(loaded.stdout)["rejections"]

    ran = cli(db, "--json", "run", str(batch), "--latency-ms", "0", "--seed", "3", "--progress")
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["status"] in {s.value for s in FINAL_RUN}
    assert summary == wb.run_summary(summary["run_id"]).to_json()
    assert "100.0%" in ran.stderr, "the progress bar, fed by the events stream, reaches the end"

    out = tmp_path / "run.csv"
    exported = cli(db, "export", str(summary["run_id"]), "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert len(pd.read_csv(out)) == summary["trades"] and f"Wrote {summary['trades']:,} rows" in exported.stdout
    as_loaded = cli(db, "export", "--batch", str(batch), "-o", str(tmp_path / "batch.parquet"))
    assert as_loaded.returncode == 0, as_loaded.stderr
    assert len(pd.read_parquet(tmp_path / "batch.parquet")) == wb.batch(batch).trades

    shown = cli(db, "--json", "init")
    assert shown.returncode == 0, shown.stderr
    said = json.loads(shown.stdout)
    assert Path(said["db"]).resolve() == Path(db).resolve() and said["server"] == served


def test_an_error_through_the_server_reads_as_it_does_in_process(wb: Workbench, served: str) -> None:
    remote = cli(wb.settings.db, "--json", "show", "999")
    assert remote.returncode == 2
    assert json.loads(remote.stdout)["error"]["code"] == "NOT_FOUND" and "999" in remote.stderr


def test_server_option_names_the_server_explicitly(wb: Workbench, served: str, tmp_path: Path) -> None:
    done = cli(tmp_path / "elsewhere.duckdb", "--json", "--server", served, "batches")
    assert done.returncode == 0, done.stderr
    assert [b["batch_id"] for b in json.loads(done.stdout)] == [b.batch_id for b in wb.batches()]
    assert not (tmp_path / "elsewhere.duckdb").exists()


def test_ctrl_c_detaches_from_a_run_in_the_server_which_goes_on(wb: Workbench, served: str) -> None:
    batch = wb.load(DATA / "sample_trades.csv").batch_id
    gate = Gate(wb)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fxbatch", "--json", "run", str(batch), "--latency-ms", "0", "--progress"],
        cwd=ROOT, env=_env(wb.settings.db), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        gate.wait_held()
        assert proc.stderr is not None
        assert proc.stderr.read(1) == b"\r", "the bar is drawn once the CLI follows the events"
        proc.send_signal(signal.SIGINT)
        out, err = (text.decode() for text in proc.communicate(timeout=WAIT))
    finally:
        gate.release()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    run_id = wb.runs(batch)[0].run_id
    # A script is told which run goes on, as it stood when it was let go.
    said = json.loads(out)
    assert (said["run_id"], said["status"], said["detached"]) == (run_id, "RUNNING", True)
    assert f"detached: run {run_id} goes on in the server at {served}" in err
    assert f"python -m fxbatch cancel {run_id}" in err
    job = wb.engine.job(run_id)
    assert job is None or job.wait(WAIT)
    final = wb.run_summary(run_id)
    assert final.status in (RunStatus.COMPLETED, RunStatus.PARTIAL), "the run went on to its end after the detach"
    assert final.counts["SUCCESS"] + final.counts["FAILED"] == final.trades


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jupyter_client/zmq internals, not our code
def test_the_notebook_runs_against_a_database_the_server_holds(
    wb: Workbench, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FXBATCH_DB", str(wb.settings.db))
    outputs = execute_notebook()
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert f"fxbatch.Client('{served}')" in text and "200 accepted, 0 rejected" in text
    assert [b.name for b in wb.batches()] == ["Sample (notebook)"]
    assert len(wb.runs()) == 2 and len(wb.whatif.sweeps()) == 1
