"""The HTTP API's runs: start, follow (events), cancel, resume, and review (trades, failures,
analytics, exports, the ledger, comparisons), with their errors."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fxbatch import Workbench
from fxbatch.api import RunView
from fxbatch.models import FINAL_RUN
from tests.conftest import DATA
from tests.integration.api_helpers import ARROW, Gate, assert_problem, events

FINAL = {s.value for s in FINAL_RUN}


@pytest.fixture
def batch(wb: Workbench) -> int:
    return wb.load(DATA / "sample_trades.csv").batch_id


def start(api: httpx.Client, batch: int, **options: Any) -> int:
    resp = api.post(f"/batches/{batch}/runs", json={"latency_ms": 0, **options})
    assert resp.status_code == 202, resp.text
    run_id: int = resp.json()["run_id"]
    assert resp.json()["url"] == resp.headers["location"] == f"/api/v1/runs/{run_id}"
    return run_id


def follow(api: httpx.Client, run_id: int) -> list[dict[str, Any]]:
    """Every event of the run's stream, to its end."""
    with api.stream("GET", f"/runs/{run_id}/events") as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        return list(events(resp))


@contextmanager
def held_run(api: httpx.Client, wb: Workbench, batch: int) -> Iterator[int]:
    """A run of ``batch`` the bank holds for the block; then released, it is followed to its end."""
    gate = Gate(wb)
    run_id = start(api, batch)
    gate.wait_held()
    try:
        yield run_id
    finally:
        gate.release()
    assert follow(api, run_id)[-1]["status"] in FINAL


@pytest.fixture
def run(api: httpx.Client, batch: int) -> int:
    """A finished run of the sample (seed 3: some trades fail)."""
    run_id = start(api, batch, seed=3, success_rate=0.8)
    assert follow(api, run_id)[-1]["status"] in FINAL
    return run_id


# ---------------------------------------------------------------- starting and following


def test_the_events_of_a_short_run_end_with_the_final_run_object(api: httpx.Client, wb: Workbench, batch: int) -> None:
    run_id = start(api, batch, seed=5)
    seen = follow(api, run_id)
    last = seen[-1]
    assert last["status"] in FINAL and last["progress"] is None
    assert last == wb.run_summary(run_id).to_json() | {"progress": None} == api.get(f"/runs/{run_id}").json()
    assert all(set(e) == set(RunView.model_fields) for e in seen)
    assert all(e["status"] == "RUNNING" and e["progress"]["run_id"] == run_id for e in seen[:-1])


def test_a_running_run_streams_its_progress_then_its_final_state(api: httpx.Client, wb: Workbench, batch: int) -> None:
    gate = Gate(wb)
    run_id = start(api, batch)
    gate.wait_held()
    with api.stream("GET", f"/runs/{run_id}/events") as resp:
        stream = events(resp)
        first = next(stream)
        assert first["status"] == "RUNNING" and first["progress"]["done"] == 0 and first["progress"]["total"] == 200
        # Nothing changes while the bank holds the run: the object is sent again all the same.
        again = next(stream)
        assert again["status"] == "RUNNING" and again["progress"]["status"] == "RUNNING"
        view = api.get(f"/runs/{run_id}").json()
        assert view["progress"]["batch_id"] == batch and view["progress"]["total"] == 200
        assert [r["progress"] is not None for r in api.get("/runs").json()] == [True]
        gate.release()
        rest = list(stream)
    assert rest[-1]["status"] in FINAL and rest[-1]["progress"] is None
    assert all(e["progress"] is not None for e in rest[:-1])


def test_a_server_told_to_stop_ends_the_streams_following_its_runs(
    api: httpx.Client, wb: Workbench, batch: int
) -> None:
    # uvicorn waits for every connection to close before the lifespan's end interrupts the runs:
    # a client following a long run must not hold the server open.
    from fxbatch import serving

    with held_run(api, wb, batch) as run_id:
        try:
            with api.stream("GET", f"/runs/{run_id}/events") as resp:
                stream = events(resp)
                assert next(stream)["status"] == "RUNNING"
                serving.STOPPING.set()
                rest = list(stream)  # ends, though the run (held) goes on
            assert all(e["status"] == "RUNNING" for e in rest)
        finally:
            serving.STOPPING.clear()


def test_a_second_run_of_a_running_batch_and_its_deletion_are_409_problems(
    api: httpx.Client, wb: Workbench, batch: int
) -> None:
    with held_run(api, wb, batch) as run_id:
        body = assert_problem(api.post(f"/batches/{batch}/runs", json={}), 409, "CONFLICT")
        assert f"run {run_id}" in body["detail"]
        assert_problem(api.delete(f"/batches/{batch}"), 409, "CONFLICT")
    assert start(api, batch) == run_id + 1


def test_cancelling_a_running_run_ends_it_cancelled(api: httpx.Client, wb: Workbench, batch: int) -> None:
    gate = Gate(wb)
    run_id = start(api, batch)
    gate.wait_held()
    resp = api.post(f"/runs/{run_id}/cancel")
    assert resp.status_code == 200 and resp.json()["run_id"] == run_id
    gate.release()
    final = follow(api, run_id)[-1]
    assert final["status"] == "CANCELLED" and final["progress"] is None
    assert_problem(api.post(f"/runs/{run_id}/cancel"), 409, "CONFLICT")


def test_an_interrupted_run_resumes_to_its_end(api: httpx.Client, wb: Workbench, batch: int) -> None:
    gate = Gate(wb)
    run_id = start(api, batch)
    gate.wait_held()
    job = wb.engine.job(run_id)
    assert job is not None
    job.interrupt()
    gate.release()
    assert follow(api, run_id)[-1]["status"] == "INTERRUPTED"
    resp = api.post(f"/runs/{run_id}/resume", json={"bank_url": None})
    assert resp.status_code == 202 and resp.json() == {"run_id": run_id, "url": f"/api/v1/runs/{run_id}"}
    final = follow(api, run_id)[-1]
    assert final["status"] in FINAL and sum(final["counts"].values()) == 200
    assert_problem(api.post(f"/runs/{run_id}/resume"), 409, "CONFLICT")


def test_run_options_become_the_run_config(api: httpx.Client, wb: Workbench, batch: int) -> None:
    run_id = start(api, batch, seed=11, success_rate=0.5, concurrency=4, max_attempts=1, volatility_bps=0.2)
    follow(api, run_id)
    config = wb.run_summary(run_id).config
    assert (config.seed, config.concurrency, config.max_attempts) == (11, 4, 1)
    assert (config.bank.success_rate, config.bank.volatility_bps) == (0.5, 0.2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"colour": "blue"}, "colour"),
        ({"success_rate": 2}, "success_rate"),
        ({"concurrency": "many"}, "concurrency"),
        ({"bank_url": "not a url"}, "bank_url"),
        ({"seed": -1}, "seed"),
    ],
)
def test_a_bad_run_option_is_a_422_naming_it(
    api: httpx.Client, wb: Workbench, batch: int, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(api.post(f"/batches/{batch}/runs", json=body), 422)
    # Named as the request names it (bank settings are at its top level), in the body.
    assert problem["detail"].split(":")[0] == field
    assert [(e["field"], e["location"]) for e in problem["errors"]] == [(field, "body")]
    assert wb.runs() == []


def test_a_body_that_is_not_json_is_a_422(api: httpx.Client, batch: int) -> None:
    resp = api.post(f"/batches/{batch}/runs", content=b"{nope", headers={"content-type": "application/json"})
    problem = assert_problem(resp, 422)
    assert problem["detail"].startswith("body: is not valid JSON")


def test_a_run_of_an_unknown_batch_is_a_404(api: httpx.Client) -> None:
    assert_problem(api.post("/batches/99/runs", json={}), 404, "NOT_FOUND")


def test_runs_are_listed_as_run_objects(api: httpx.Client, wb: Workbench, run: int, batch: int) -> None:
    listed = api.get("/runs").json()
    assert listed == [s.to_json() | {"progress": None} for s in wb.runs()]
    assert api.get("/runs", params={"batch_id": batch}).json() == listed
    assert_problem(api.get("/runs", params={"batch_id": 99}), 404, "NOT_FOUND")  # not an empty batch


# ---------------------------------------------------------------- review


def test_the_trades_page_filters_pages_and_counts(api: httpx.Client, wb: Workbench, run: int) -> None:
    resp = api.get(f"/runs/{run}/trades", params={"status": "FAILED", "limit": 2})
    failed = wb.run_summary(run).counts["FAILED"]
    assert failed > 2 and resp.headers["x-total-count"] == str(failed)
    rows = resp.json()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"FAILED"}
    assert rows[0]["account_number"].startswith("•")
    full = api.get(f"/runs/{run}/trades", params={"status": "FAILED", "limit": 2, "unmask": "true"}).json()
    assert not full[0]["account_number"].startswith("•")
    page = api.get(f"/runs/{run}/trades", params={"offset": 195}).json()
    assert [r["row"] for r in page] == [r["row"] for r in api.get(f"/runs/{run}/trades", params={"limit": 500}).json()][
        195:
    ]
    pair = api.get(f"/runs/{run}/trades", params={"pair": "USD/ZAR", "limit": 1000}).json()
    assert pair and {r["currency_pair"] for r in pair} == {"USD/ZAR"}


def test_the_trades_page_as_arrow_equals_its_json(api: httpx.Client, run: int) -> None:
    params = {"limit": 100, "offset": 3}
    as_json = api.get(f"/runs/{run}/trades", params=params).json()
    resp = api.get(f"/runs/{run}/trades", params=params, headers={"Accept": ARROW})
    assert resp.headers["content-type"] == ARROW and resp.headers["x-total-count"] == "200"
    with pa.ipc.open_stream(io.BytesIO(resp.content)) as reader:
        df: pd.DataFrame = reader.read_pandas()
    assert json.loads(df.to_json(orient="records", date_format="iso")) == as_json


@pytest.mark.parametrize("params", [{"status": "LOST"}, {"reason": "BAD_LUCK"}, {"limit": -1}, {"unmask": "maybe"}])
def test_a_bad_trades_filter_is_a_422_naming_it(api: httpx.Client, run: int, params: dict[str, Any]) -> None:
    body = assert_problem(api.get(f"/runs/{run}/trades", params=params), 422)
    assert body["errors"][0]["field"].split(".")[0] == next(iter(params))


def test_one_trade_shows_its_fields_and_timeline(api: httpx.Client, wb: Workbench, run: int) -> None:
    detail = api.get(f"/runs/{run}/trades/5").json()
    expected = wb.trade_detail(run, 5)
    assert detail["row"] == 5 and detail["trade_id"] == expected["trade_id"] and detail["status"] == expected["status"]
    assert [t["stage"] for t in detail["timeline"]] == list(expected["timeline"]["stage"])
    assert detail["account_number"].startswith("•")
    assert not api.get(f"/runs/{run}/trades/5", params={"unmask": "true"}).json()["account_number"].startswith("•")
    assert_problem(api.get(f"/runs/{run}/trades/9999"), 404, "NOT_FOUND")


def test_failures_give_the_reasons_and_the_failed_trades(api: httpx.Client, wb: Workbench, run: int) -> None:
    body = api.get(f"/runs/{run}/failures", params={"limit": 3}).json()
    summary = wb.run_summary(run)
    assert body["total_failed"] == summary.counts["FAILED"]
    assert {r["failure_code"]: r["trades"] for r in body["reasons"]} == summary.failure_reasons
    assert len(body["trades"]) == 3 and {t["status"] for t in body["trades"]} == {"FAILED"}


@pytest.mark.parametrize(
    ("name", "params", "call"),
    [
        ("outcome_counts", {}, lambda wb, r: wb.outcome_counts(r)),
        ("failure_pareto", {}, lambda wb, r: wb.failure_pareto(r)),
        ("outcomes_by", {"by": "client", "top": 3}, lambda wb, r: wb.outcomes_by(r, "client", 3)),
        ("notional_by_outcome", {}, lambda wb, r: wb.notional_by_outcome(r)),
        ("income_by", {"by": "pair"}, lambda wb, r: wb.income_by(r, "pair")),
        ("latency_histogram", {"bins": 5}, lambda wb, r: wb.latency_histogram(r, 5)),
        ("throughput", {}, lambda wb, r: wb.throughput(r)),
    ],
)
def test_each_analytics_table_is_the_library_table(
    api: httpx.Client, wb: Workbench, run: int, name: str, params: dict[str, Any], call: Any
) -> None:
    expected = json.loads(call(wb, run).to_json(orient="records", date_format="iso"))
    assert api.get(f"/runs/{run}/analytics/{name}", params=params).json() == expected


def test_filter_choices_are_a_json_object(api: httpx.Client, wb: Workbench, run: int) -> None:
    resp = api.get(f"/runs/{run}/analytics/filter_choices", headers={"Accept": ARROW})
    assert resp.headers["content-type"] == "application/json" and resp.json() == wb.run_filter_choices(run)


@pytest.mark.parametrize(
    ("path", "field"),
    [("/analytics/nothing", "name"), ("/analytics/outcomes_by?by=desk", "by"), ("/analytics/income_by?top=0", "top")],
)
def test_a_bad_analytics_request_is_a_422_naming_the_field(api: httpx.Client, run: int, path: str, field: str) -> None:
    body = assert_problem(api.get(f"/runs/{run}{path}"), 422)
    assert body["errors"][0]["field"] == field


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_a_run_exports_as_an_attachment_and_leaves_no_file(api: httpx.Client, run: int, fmt: str, spool: Path) -> None:
    resp = api.get(f"/runs/{run}/export", params={"format": fmt})
    assert resp.status_code == 200
    assert resp.headers["content-disposition"] == f'attachment; filename="run-{run}.{fmt}"'
    assert resp.headers["x-row-count"] == "200" and int(resp.headers["content-length"]) == len(resp.content)
    if fmt == "parquet":
        assert pq.read_table(io.BytesIO(resp.content)).num_rows == 200
    elif fmt == "csv":
        assert len(pd.read_csv(io.BytesIO(resp.content))) == 200
    else:
        assert resp.content[:2] == b"PK"
    assert list(spool.iterdir()) == []


def test_the_ledger_holds_the_booked_deals(api: httpx.Client, wb: Workbench, run: int) -> None:
    resp = api.get("/ledger", params={"run_id": run, "format": "parquet"})
    assert resp.headers["content-disposition"] == f'attachment; filename="ledger-run-{run}.parquet"'
    table = pq.read_table(io.BytesIO(resp.content))
    assert table.num_rows == wb.run_summary(run).counts["SUCCESS"] == int(resp.headers["x-row-count"])
    everything = api.get("/ledger")
    assert (
        everything.headers["content-type"].startswith("text/csv")
        and len(pd.read_csv(io.BytesIO(everything.content))) == table.num_rows
    )
    assert_problem(api.get("/ledger", params={"run_id": 99}), 404, "NOT_FOUND")


@pytest.mark.parametrize("params", [{"format": "pdf"}, {"format": ""}])
def test_an_unknown_export_format_is_a_422_naming_format(api: httpx.Client, run: int, params: dict[str, str]) -> None:
    for path in (f"/runs/{run}/export", "/ledger"):
        body = assert_problem(api.get(path, params=params), 422)
        assert body["errors"][0]["field"] == "format"


def test_runs_are_compared_and_their_differing_trades_listed(
    api: httpx.Client, wb: Workbench, run: int, batch: int
) -> None:
    other = start(api, batch, seed=9, success_rate=0.6)
    follow(api, other)
    table = api.get("/compare", params={"run_ids": [run, other]}).json()
    assert table == json.loads(wb.whatif.compare([run, other]).to_json(orient="records", date_format="iso"))
    differing = api.get("/compare/differing", params={"run_a": run, "run_b": other, "limit": 5}).json()
    assert 0 < len(differing) <= 5 and {"status_a", "status_b"} <= set(differing[0])
    assert_problem(api.get("/compare"), 422)
    assert_problem(api.get("/compare", params={"run_ids": [run, 99]}), 404, "NOT_FOUND")


def test_runs_of_different_batches_cannot_be_diffed(api: httpx.Client, wb: Workbench, run: int) -> None:
    other_batch = wb.load(DATA / "sample_trades.csv").batch_id
    other = start(api, other_batch)
    follow(api, other)
    assert_problem(api.get("/compare/differing", params={"run_a": run, "run_b": other}), 409, "CONFLICT")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/runs/99"), ("GET", "/runs/99/events"), ("POST", "/runs/99/cancel"), ("POST", "/runs/99/resume"),
        ("GET", "/runs/99/trades"), ("GET", "/runs/99/trades/2"), ("GET", "/runs/99/failures"),
        ("GET", "/runs/99/analytics/outcome_counts"), ("GET", "/runs/99/analytics/filter_choices"),
        ("GET", "/runs/99/export"),
    ],
)  # fmt: skip
def test_an_unknown_run_is_a_404_problem(api: httpx.Client, method: str, path: str) -> None:
    body = assert_problem(api.request(method, path), 404, "NOT_FOUND")
    assert "99" in body["detail"]


# ---------------------------------------------------------------- client registries on the server


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("/etc/passwd", "not a path"),
        ("../fxbatch.duckdb", "not a path"),
        ("sub/clients.csv", "not a path"),
        ("clients.csv", "has no such file"),
    ],
)
def test_a_run_names_a_client_registry_of_the_servers_folder_by_file_name_only(
    api: httpx.Client, wb: Workbench, batch: int, name: str, said: str
) -> None:
    """The server must not read, nor say whether there is, any file a caller names."""
    problem = assert_problem(api.post(f"/batches/{batch}/runs", json={"registry_file": name}), 422)
    assert said in problem["detail"] and "FXBATCH_REGISTRY_DIR" in problem["detail"]
    assert wb.runs() == []
    for body in ({"base": {"bank": {"registry_file": name}}}, {"variants": {"registry_file": [name]}}):
        problem = assert_problem(api.post("/whatif", json={"batch_id": batch, "success_rates": [0.9], **body}), 422)
        assert said in problem["detail"]
    assert wb.whatif.sweeps() == []


def test_a_registry_in_the_servers_folder_checks_the_runs_clients(api: httpx.Client, wb: Workbench, batch: int) -> None:
    trades = wb.trades(batch, unmask=True)
    dropped = sorted(set(trades["client_cif"]))[0]  # one client the registry does not know
    known = trades[trades["client_cif"] != dropped]
    folder = wb.settings.registry_folder()
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["cif,account_number,status,limit_zar"]
    lines += [f"{r.client_cif},{r.account_number},ACTIVE,1000000000" for r in known.itertuples()]
    (folder / "clients.csv").write_text("\n".join(lines) + "\n")
    run_id = start(api, batch, registry_file="clients.csv", success_rate=1.0)
    assert follow(api, run_id)[-1]["status"] in FINAL
    summary = wb.run_summary(run_id)
    assert summary.config.bank.registry_file == str(folder / "clients.csv")
    assert summary.failure_reasons.get("CLIENT_NOT_FOUND", 0) == int((trades["client_cif"] == dropped).sum()) > 0


def test_a_stored_runs_registry_path_is_taken_back_and_a_link_out_of_the_folder_is_not(
    api: httpx.Client, wb: Workbench, batch: int, tmp_path: Path
) -> None:
    """A run's config holds the registry's path in the folder: passing that config back (a re-run,
    a retry, a request) works; a link in the folder that leads elsewhere reads nothing."""
    folder = wb.settings.registry_folder()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clients.csv").write_text("cif,account_number,status,limit_zar\n1,2,ACTIVE,10\n")
    first = start(api, batch, registry_file="clients.csv", success_rate=1.0)
    follow(api, first)
    stored = wb.run_summary(first).config.bank.registry_file
    assert stored == str(folder.resolve() / "clients.csv")
    again = start(api, batch, registry_file=stored, success_rate=1.0)
    follow(api, again)
    assert wb.run_summary(again).config.bank.registry_file == stored
    outside = tmp_path / "outside.csv"
    outside.write_text("cif,account_number,status,limit_zar\n")
    (folder / "linked.csv").symlink_to(outside)
    for name in ("linked.csv", str(outside), str(folder / ".." / "outside.csv")):
        problem = assert_problem(api.post(f"/batches/{batch}/runs", json={"registry_file": name}), 422)
        assert "registry folder (FXBATCH_REGISTRY_DIR)" in problem["detail"]
