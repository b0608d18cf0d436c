"""The HTTP API's what-if sweeps: started in the background, polled while running, stored, promoted."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from fxbatch import Workbench
from fxbatch.models import FINAL_RUN
from tests.conftest import DATA
from tests.integration.api_helpers import WAIT, assert_problem, events


@pytest.fixture
def batch(wb: Workbench) -> int:
    return wb.load(DATA / "sample_trades.csv").batch_id


def start_sweep(api: httpx.Client, **body: Any) -> int:
    resp = api.post("/whatif", json=body)
    assert resp.status_code == 202, resp.text
    sweep_id: int = resp.json()["sweep_id"]
    assert resp.json()["url"] == resp.headers["location"] == f"/api/v1/whatif/{sweep_id}"
    return sweep_id


def poll(api: httpx.Client, sweep_id: int) -> dict[str, Any]:
    """The sweep once it is no longer RUNNING."""
    deadline = time.monotonic() + WAIT
    while (state := api.get(f"/whatif/{sweep_id}").json())["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the sweep did not end"
        time.sleep(0.02)
    return state


def test_a_sweep_reports_running_with_its_progress_then_done_with_the_sweep(
    api: httpx.Client, wb: Workbench, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sweep reports one scenario done, then waits until the test has seen it running.
    reported, seen = threading.Event(), threading.Event()
    real = wb.whatif.sweep

    def held(*args: Any, **kwargs: Any) -> Any:
        kwargs["on_progress"](1, 4)
        reported.set()
        assert seen.wait(WAIT)
        return real(*args, **kwargs)

    monkeypatch.setattr(wb.whatif, "sweep", held)
    sweep_id = start_sweep(api, batch_id=batch, success_rates=[0.5, 0.9], seeds=2, name="rates")
    assert reported.wait(WAIT)
    assert api.get(f"/whatif/{sweep_id}").json() == {"sweep_id": sweep_id, "status": "RUNNING", "done": 1, "total": 4}
    seen.set()
    done = poll(api, sweep_id)
    assert done == wb.whatif.get(sweep_id).model_dump(mode="json") | {"status": "DONE"}
    assert done["name"] == "rates" and done["scenario_count"] == 4 and len(done["summary"]) == 2
    listed = api.get("/whatif", params={"batch_id": batch}).json()
    assert listed == [s.model_dump(mode="json") for s in wb.whatif.sweeps(batch)] and listed[0]["sweep_id"] == sweep_id
    assert_problem(api.get("/whatif", params={"batch_id": 99}), 404, "NOT_FOUND")  # not an empty batch


def test_a_sweep_with_seeds_variants_and_a_base_config_runs_them_all(
    api: httpx.Client, wb: Workbench, batch: int
) -> None:
    sweep_id = start_sweep(
        api, batch_id=batch, success_rates=[0.7], seeds=[1, 2], variants={"transient_absorb_share": [0.2, 0.8]},
        base={"max_attempts": 2},
    )  # fmt: skip
    done = poll(api, sweep_id)
    assert done["status"] == "DONE" and done["scenario_count"] == 4
    assert sorted(s["seed"] for s in done["scenarios"]) == [1, 1, 2, 2]


def test_a_failed_sweep_reports_the_problem(
    api: httpx.Client, wb: Workbench, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fxbatch.errors import SettingsError

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise SettingsError("Cannot reach the Dask scheduler at tcp://nowhere:8786")

    monkeypatch.setattr(wb.whatif, "sweep", broken)
    sweep_id = start_sweep(api, batch_id=batch, success_rates=[0.9])
    state = poll(api, sweep_id)
    assert state["status"] == "FAILED" and state["sweep_id"] == sweep_id
    assert state["error"]["code"] == "BAD_SETTING" and "Dask" in state["error"]["detail"]


def test_a_scenario_is_promoted_to_a_full_run(api: httpx.Client, wb: Workbench, batch: int) -> None:
    sweep_id = start_sweep(api, batch_id=batch, success_rates=[0.6])
    poll(api, sweep_id)
    resp = api.post(f"/whatif/{sweep_id}/promote", json={"scenario": 1})
    assert resp.status_code == 202
    run_id = resp.json()["run_id"]
    assert resp.headers["location"] == f"/api/v1/runs/{run_id}"
    with api.stream("GET", f"/runs/{run_id}/events") as stream:
        final = list(events(stream))[-1]
    assert final["status"] in {s.value for s in FINAL_RUN} and final["config"]["bank"]["success_rate"] == 0.6
    assert_problem(api.post(f"/whatif/{sweep_id}/promote", json={"scenario": 9}), 404, "NOT_FOUND")
    assert_problem(api.post(f"/whatif/{sweep_id}/promote", json={"scenario": 0}), 422)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"success_rates": []}, "success_rates"),
        ({"success_rates": [1.5]}, "success rate"),
        ({"success_rates": [0.5], "seeds": 0}, "seeds"),
        ({"success_rates": [0.5], "variants": {"colour": [1]}}, "colour"),
        ({"success_rates": [0.5], "base": {"seed": -1}}, "base.seed"),
        ({"success_rates": [0.5], "workers": 3}, "workers"),
        ({"success_rates": [0.5] * 10, "seeds": 100_000}, "scenarios"),
        ({"success_rates": [0.5], "seeds": 10_001}, "10,001 scenarios"),  # over the cap
    ],
)
def test_a_bad_sweep_is_a_422_naming_what_is_wrong_and_starts_nothing(
    api: httpx.Client, wb: Workbench, batch: int, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(api.post("/whatif", json={"batch_id": batch, **body}), 422)
    assert field in problem["detail"]
    assert wb.whatif.sweeps() == []


def test_unknown_sweeps_and_batches_are_404_problems(api: httpx.Client) -> None:
    assert_problem(api.post("/whatif", json={"batch_id": 99, "success_rates": [0.5]}), 404, "NOT_FOUND")
    assert_problem(api.get("/whatif/99"), 404, "NOT_FOUND")
    assert_problem(api.post("/whatif/99/promote", json={"scenario": 1}), 404, "NOT_FOUND")


def test_a_running_sweep_is_cancelled_stores_nothing_and_says_so(
    api: httpx.Client, wb: Workbench, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sweep holds after its first scenario until the test has asked for the cancel.
    reported, asked = threading.Event(), threading.Event()
    real = wb.whatif.sweep

    def held(*args: Any, **kwargs: Any) -> Any:
        def progress(done: int, total: int) -> None:
            kwargs_progress(done, total)
            if not reported.is_set():
                reported.set()
                assert asked.wait(WAIT)

        kwargs_progress = kwargs["on_progress"]
        return real(*args, **{**kwargs, "on_progress": progress, "workers": 1})

    monkeypatch.setattr(wb.whatif, "sweep", held)
    sweep_id = start_sweep(api, batch_id=batch, success_rates=[0.5, 0.9], seeds=2)
    assert reported.wait(WAIT)
    resp = api.post(f"/whatif/{sweep_id}/cancel")
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"sweep_id": sweep_id, "url": f"/api/v1/whatif/{sweep_id}"}
    asked.set()
    state = poll(api, sweep_id)
    assert state == {
        "sweep_id": sweep_id, "status": "CANCELLED", "done": 1, "total": 4,
        "detail": f"Sweep {sweep_id} was cancelled after 1 of 4 scenarios; nothing of it was stored.",
    }  # fmt: skip
    assert api.get("/whatif").json() == []
    again = assert_problem(api.post(f"/whatif/{sweep_id}/cancel"), 409, "CONFLICT")
    assert "cancelled already" in again["detail"]


def test_only_a_running_sweep_can_be_cancelled(api: httpx.Client, wb: Workbench, batch: int) -> None:
    assert_problem(api.post("/whatif/99/cancel"), 404, "NOT_FOUND")
    sweep_id = start_sweep(api, batch_id=batch, success_rates=[0.9])
    assert poll(api, sweep_id)["status"] == "DONE"
    stored = assert_problem(api.post(f"/whatif/{sweep_id}/cancel"), 409, "CONFLICT")
    assert "has finished and is stored" in stored["detail"]
