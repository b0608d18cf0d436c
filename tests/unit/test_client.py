"""The API client's own logic: events parsing, query parameters, problems back into errors."""

from __future__ import annotations

import httpx
import pytest

from fxbatch import errors
from fxbatch.client import Client, _error_from, _flat_options, _params
from fxbatch.models import RunConfig, RunStatus, RunView
from fxbatch.workbench import make_config


def test_server_sent_events_yield_each_data_block_and_skip_comments() -> None:
    view = RunView(run_id=1, batch_id=1, status=RunStatus.RUNNING, trades=2, counts={}, failure_reasons={},
                   started_at=None, finished_at=None, elapsed_s=None, config=RunConfig())  # fmt: skip
    text = view.model_dump_json()
    half = text.index(',"', len(text) // 2) + 1  # between two members: a newline there is JSON whitespace
    body = f": keep-alive\n\ndata: {text}\n\nevent: x\ndata: {text[:half]}\ndata: {text[half:]}\n\n"
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    )
    with Client("http://fx.test", transport=transport) as client:
        seen = list(client.events(1))
    assert len(seen) == 2 and seen[0] == view
    assert seen[1] == view  # multi-line data joined with a newline


def test_query_parameters_leave_out_unset_values_and_spell_booleans() -> None:
    assert _params({"a": None, "b": [], "c": [1, 2], "d": True, "e": False, "f": 0}) == {
        "c": [1, 2], "d": "true", "e": "false", "f": 0,
    }  # fmt: skip


def test_run_options_flatten_so_that_the_server_rebuilds_the_same_config() -> None:
    config = make_config(RunConfig(seed=7), success_rate=0.8, concurrency=4, latency_ms=5.0)
    flat = _flat_options(config)
    assert "bank" not in flat and flat["success_rate"] == 0.8 and flat["seed"] == 7
    assert make_config(**flat) == config


@pytest.mark.parametrize(
    ("code", "cls"),
    [("NOT_FOUND", errors.NotFoundError), ("CONFLICT", errors.ConflictError),
     ("UNUSABLE_FILE", errors.UnusableFileError), ("BAD_SETTING", errors.SettingsError)],
)  # fmt: skip
def test_a_problem_answer_becomes_the_error_it_names_with_the_same_message(
    code: str, cls: type[errors.FxBatchError]
) -> None:
    err = _error_from("http://x", {"code": code, "kind": cls.__name__, "detail": "There is no batch 9.", "status": 404})
    assert type(err) is cls and err.message == "There is no batch 9." and err.code == code


def test_an_unknown_kind_keeps_its_code_and_message() -> None:
    err = _error_from("http://x", {"code": "NEW_CODE", "kind": "os.system", "detail": "held"})
    assert type(err) is errors.FxBatchError and err.code == "NEW_CODE" and err.message == "held"


def test_a_special_code_of_a_family_keeps_both() -> None:
    err = _error_from("http://x", {"code": "EMPTY_FILE", "kind": "UnusableFileError", "detail": "x is empty"})
    assert type(err) is errors.UnusableFileError and err.code == "EMPTY_FILE"


def test_an_answer_that_is_not_a_problem_report_names_the_status() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="<html>bad gateway</html>"))
    with Client("http://fx.test", transport=transport) as client, pytest.raises(errors.ServerError, match="502"):
        client.batches()


def test_a_server_that_does_not_answer_is_a_server_error_naming_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = Client("http://fx.test:1", transport=httpx.MockTransport(refuse))
    with client, pytest.raises(errors.ServerError, match=r"http://fx\.test:1 did not answer"):
        client.batches()


def test_a_health_answer_from_something_else_is_refused() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"hello": "world"}))
    with (
        Client("http://fx.test", transport=transport) as client,
        pytest.raises(errors.ServerError, match="not an fxbatch"),
    ):
        client.health()
