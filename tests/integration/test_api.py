"""The HTTP API over real HTTP: health and docs, batches (uploads, checks, tables, deletion) and its errors."""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from fxbatch import Settings, Workbench, cli, connect
from fxbatch.masking import mask_rejected_rows, mask_rejections
from fxbatch.models import LoadResult
from fxbatch.tablejson import records
from tests.conftest import DATA, HEADER, good_row
from tests.integration.api_helpers import ARROW, assert_problem, mounted, serve_api
from tests.integration.run_helpers import query

SAMPLE = DATA / "sample_trades.csv"
WITH_ERRORS = DATA / "sample_with_errors.csv"


def upload(
    api: httpx.Client, path: Path, route: str = "/batches", name: str | None = None, **form: Any
) -> httpx.Response:
    with path.open("rb") as fh:
        return api.post(route, files={"file": (name or path.name, fh)}, data=form)


def cli_error(tmp_path: Path, path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``python -m fxbatch load FILE`` prints after ``error:`` (on a database of its own)."""
    assert cli.main(["--db", str(tmp_path / "cli.duckdb"), "load", str(path)]) == 2
    return capsys.readouterr().err.strip().removeprefix("error: ")


# ---------------------------------------------------------------- the server


def test_health_names_the_database_and_the_version(api: httpx.Client, wb: Workbench) -> None:
    body = api.get("/health").json()
    assert body["status"] == "ok" and body["db"] == str(wb.settings.db.resolve())
    assert body["version"] and body["schema_version"] == wb.schema_version()


def test_the_docs_and_the_openapi_schema_are_served_under_api(api: httpx.Client) -> None:
    base = str(api.base_url).removesuffix("/v1/")
    schema = httpx.get(f"{base}/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v1/batches", "/v1/batches:check", "/v1/runs/{run_id}/events", "/v1/whatif/{sweep_id}/promote"):
        assert path in paths
    assert "LoadResult" in schema["components"]["schemas"] and "RunView" in schema["components"]["schemas"]
    upload_form = paths["/v1/batches"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"file", "column_map", "fixes"} <= set(upload_form["properties"])
    assert "application/problem+json" in paths["/v1/batches/{batch_id}"]["get"]["responses"]["404"]["content"]
    docs = httpx.get(f"{base}/docs")
    assert docs.status_code == 200 and "/api/openapi.json" in docs.text


def test_an_unknown_api_path_is_a_404_problem_not_html(api: httpx.Client) -> None:
    assert_problem(api.get("/nothing/here"), 404, "NOT_FOUND")
    base = str(api.base_url).removesuffix("/v1/")
    assert_problem(httpx.get(f"{base}/v2/batches"), 404, "NOT_FOUND")


def test_a_method_a_path_does_not_take_is_a_405_problem_naming_the_allowed_ones(api: httpx.Client) -> None:
    resp = api.put("/batches")
    assert_problem(resp, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in resp.headers["allow"]


# ---------------------------------------------------------------- loading


def test_an_upload_becomes_a_batch_with_the_cli_load_json_object(api: httpx.Client, wb: Workbench) -> None:
    resp = upload(api, SAMPLE, name="desk file.csv", today="2026-11-30")
    assert resp.status_code == 201
    body = resp.json()
    assert resp.headers["location"] == f"/api/v1/batches/{body['batch_id']}"
    stored = wb.batch(body["batch_id"])
    assert set(body) == set(LoadResult.model_fields)
    assert (body["source_file"], body["name"], body["accepted"], body["rejections"]) == (
        "desk file.csv",
        "desk file",
        200,
        [],
    )
    assert (stored.source_file, stored.name, stored.trades, stored.fingerprint) == (
        "desk file.csv", "desk file", 200, body["fingerprint"],
    )  # fmt: skip
    again = upload(api, SAMPLE).json()
    assert again["previously_loaded_as"] == [body["batch_id"]] and again["source_file"] == "sample_trades.csv"


def test_an_upload_with_bad_rows_is_created_and_lists_its_rejections(api: httpx.Client, wb: Workbench) -> None:
    resp = upload(api, WITH_ERRORS, name="with errors")
    assert resp.status_code == 201
    body = resp.json()
    assert body["rejected"] > 0 and len(body["rejections"]) >= body["rejected"]
    assert {"row", "column", "value", "code", "message"} <= set(body["rejections"][0])
    assert wb.batch(body["batch_id"]).rejected == body["rejected"]


def test_the_form_fields_map_columns_apply_fixes_and_name_the_batch(
    api: httpx.Client, write_file: Callable[..., Path]
) -> None:
    header = HEADER.replace("client_cif", "Cust No")
    path = write_file("\n".join([header, good_row(1), good_row(2, amount="abc")]) + "\n", "mapped.csv")
    resp = upload(
        api, path, name="Mapped", column_map=json.dumps({"Cust No": "client_cif"}),
        fixes=json.dumps({"3": {"amount": "2500.00"}}),
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["name"] == "Mapped" and body["accepted"] == 2 and body["fixed"] == [3]
    corrections = api.get(f"/batches/{body['batch_id']}/corrections").json()
    assert corrections == [{"row": 3, "field": "amount", "original": "abc", "corrected": "2500.00"}]
    assert api.get(f"/batches/{body['batch_id']}/corrections", params={"offset": 1}).json() == []


def test_an_unusable_file_is_a_422_with_the_cli_message_and_no_batch(
    api: httpx.Client, wb: Workbench, tmp_path: Path, write_file: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = write_file("", "empty.csv")
    body = assert_problem(upload(api, path), 422, "EMPTY_FILE")
    assert body["detail"] == cli_error(tmp_path, path, capsys)
    assert wb.batches() == []


def test_a_header_that_cannot_be_mapped_carries_the_file_headers(
    api: httpx.Client, tmp_path: Path, write_file: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_file(HEADER.replace(",side", "") + "\n" + good_row(1).replace(",BUY", "") + "\n", "noside.csv")
    body = assert_problem(upload(api, path), 422, "MISSING_COLUMN")
    assert body["detail"] == cli_error(tmp_path, path, capsys)
    assert "side" not in body["headers"] and "client_cif" in body["headers"]


def test_a_file_without_one_valid_row_is_a_422_listing_its_rejections(
    api: httpx.Client, wb: Workbench, write_file: Callable[..., Path]
) -> None:
    path = write_file(HEADER + "\n" + good_row(1, currency_pair="XXX/ZAR") + "\n", "allbad.csv")
    body = assert_problem(upload(api, path), 422, "NO_VALID_ROWS")
    assert "allbad.csv" in body["detail"]
    assert [(r["row"], r["column"]) for r in body["rejections"]] == [(2, "currency_pair")]
    assert body["rejected_rows"][0]["values"]["currency_pair"] == "XXX/ZAR"
    assert body["rejected_rows"][0]["values"]["account_number"].startswith("••")
    assert wb.batches() == []


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"column_map": "{not json"}, "column_map"),
        ({"column_map": "[1, 2]"}, "column_map"),
        ({"fixes": "{\"x\": {}}"}, "fixes"),
        ({"today": "30/11/2026"}, "today"),
        ({"colour": "blue"}, "colour"),
    ],
)  # fmt: skip
def test_a_bad_form_field_is_a_422_naming_it(
    api: httpx.Client, wb: Workbench, form: dict[str, str], field: str
) -> None:
    body = assert_problem(upload(api, SAMPLE, **form), 422)
    assert body["detail"].startswith(field) and body["errors"][0]["field"].startswith(field)
    assert wb.batches() == []


def test_a_request_without_a_file_is_a_422_naming_the_file_field(api: httpx.Client) -> None:
    body = assert_problem(api.post("/batches", data={"name": "x"}), 422)
    assert body["detail"].startswith("file: ")
    body = assert_problem(api.post("/batches", files={"other": ("a.csv", b"x")}), 422)
    assert body["errors"][0]["field"] == "other"


def test_checking_a_file_reports_what_loading_would_do_and_stores_nothing(api: httpx.Client, wb: Workbench) -> None:
    resp = upload(api, WITH_ERRORS, route="/batches:check", limit="2")
    assert resp.status_code == 200
    body = resp.json()
    local = wb.check(WITH_ERRORS, limit=2)
    # Rejected accounts masked, as in every table, unless asked (and then on the audit trail).
    masked = local.model_copy(update={"rejections": mask_rejections(local.rejections, False),
                                      "rejected_rows": mask_rejected_rows(local.rejected_rows, False)})  # fmt: skip
    assert body == masked.model_dump(mode="json") != local.model_dump(mode="json")
    assert all("••" in r["values"]["account_number"] for r in body["rejected_rows"])
    full = upload(api, WITH_ERRORS, route="/batches:check", limit="2", unmask="true").json()
    assert full == local.model_dump(mode="json")
    assert query(wb, "SELECT action, object FROM audit_log WHERE action = 'unmask'") == [
        ("unmask", f"file:{WITH_ERRORS.name}")
    ]
    assert len(body["rejected_rows"]) == 2 and body["rejected"] > 2
    assert wb.batches() == []
    assert_problem(upload(api, WITH_ERRORS, route="/batches:check", limit="-1"), 422)


# ---------------------------------------------------------------- size limits and interrupted uploads


@pytest.fixture
def small_wb(tmp_path: Path) -> Iterator[Workbench]:
    """A workbench taking uploads of at most 1 MB."""
    with Workbench.open(settings=Settings(db=tmp_path / "small.duckdb", api_max_upload_mb=1)) as workbench:
        yield workbench


def _big(size: int) -> bytes:
    """About ``size`` bytes of trade file text (the sample's rows, repeated)."""
    return SAMPLE.read_bytes() * (size // SAMPLE.stat().st_size + 1)


def _multipart(filename: str, content: bytes) -> tuple[bytes, bytes]:
    """(content type, body) of a form with one file."""
    request = httpx.Request("POST", "http://x/", files={"file": (filename, content)})
    return request.headers["content-type"].encode(), request.read()


def _raw_request(url: str, head: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_an_upload_over_the_limit_is_refused_from_its_content_length_before_it_is_sent(
    small_wb: Workbench, spool: Path
) -> None:
    # Only the request head is sent: a 413 can only come from the Content-Length.
    with serve_api(small_wb) as url:
        answer = _raw_request(
            url,
            b"POST /api/v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 2097152\r\nConnection: close\r\n\r\n",
        )
    assert answer.startswith(b"HTTP/1.1 413 ") and b"application/problem+json" in answer
    assert small_wb.batches() == [] and list(spool.iterdir()) == []


def _call(
    app: Any, content_type: bytes, chunks: list[bytes], *, disconnect: bool, on_receive: Any = None
) -> list[dict]:
    """Send a POST /api/v1/batches body in chunks straight to the ASGI app (no Content-Length);
    ``disconnect`` ends it with the client going away instead of the last chunk."""
    sent: list[dict] = []
    queue = list(chunks)

    async def receive() -> dict:
        if on_receive is not None:
            on_receive(len(chunks) - len(queue))
        if not queue:
            return {"type": "http.disconnect"}
        chunk = queue.pop(0)
        more = bool(queue) or disconnect
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/v1/batches", "raw_path": b"/api/v1/batches", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", content_type), (b"host", b"x")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent


def test_an_upload_without_content_length_is_counted_and_refused_once_over_the_limit(
    small_wb: Workbench, spool: Path
) -> None:
    content_type, body = _multipart("big.csv", _big(2_500_000))  # ~2.6 MB
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    read: list[int] = []
    sent = _call(mounted(small_wb), content_type, chunks, disconnect=False, on_receive=read.append)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["code"] == "TOO_LARGE"
    assert max(read) < len(chunks) - 1, "the body was read past the limit"
    assert small_wb.batches() == [] and list(spool.iterdir()) == []


def test_a_client_that_disconnects_mid_upload_leaves_no_batch_and_no_file(wb: Workbench, spool: Path) -> None:
    content_type, body = _multipart("trades.csv", _big(2_500_000))
    half = len(body) // 2
    chunks = [body[i : i + 65536] for i in range(0, half, 65536)]
    spooled: list[int] = []

    def look(_: int) -> None:  # while the body arrives, the partial file is in the spool folder
        spooled.append(sum(f.stat().st_size for f in spool.rglob("trades.csv")))

    _call(mounted(wb), content_type, chunks, disconnect=True, on_receive=look)
    assert max(spooled) > 0
    assert wb.batches() == [] and list(spool.iterdir()) == []


def test_a_loaded_upload_leaves_no_file_behind(api: httpx.Client, spool: Path) -> None:
    assert upload(api, SAMPLE).status_code == 201
    assert list(spool.iterdir()) == []


# ---------------------------------------------------------------- reading and deleting batches


@pytest.fixture
def batch(api: httpx.Client) -> int:
    batch_id: int = upload(api, WITH_ERRORS).json()["batch_id"]
    return batch_id


def test_batches_are_listed_and_read_as_the_cli_prints_them(api: httpx.Client, wb: Workbench, batch: int) -> None:
    assert api.get("/batches").json() == [b.model_dump(mode="json") for b in wb.batches()]
    assert api.get(f"/batches/{batch}").json() == wb.batch(batch).model_dump(mode="json")


def test_a_batch_table_pages_with_limit_and_offset(api: httpx.Client, wb: Workbench, batch: int) -> None:
    rows = api.get(f"/batches/{batch}/trades", params={"limit": 2, "offset": 1}).json()
    expected = json.loads(wb.trades(batch, 2, 1).to_json(orient="records", date_format="iso"))
    for row in expected:  # a value date is a date, not midnight of it
        row["value_date"] = row["value_date"][:10]
    assert rows == expected and len(rows) == 2
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["value_date"]) for r in rows)
    rejections = api.get(f"/batches/{batch}/rejections").json()
    assert len(rejections) == len(wb.rejections(batch)) and {"row", "column", "code", "message"} <= set(rejections[0])
    # A page unless more is asked for: a batch can have a million rows.
    assert len(api.get(f"/batches/{batch}/trades", params={"limit": 3}).json()) == 3
    assert api.get(f"/batches/{batch}/corrections").json() == []


def test_a_batch_table_comes_a_page_at_a_time_unless_more_is_asked_for(
    api: httpx.Client, wb: Workbench, tmp_path: Path
) -> None:
    from fxbatch.api.batches import PAGE
    from fxbatch.samples import make_trades, write_csv

    big = wb.load(write_csv(make_trades(PAGE + 5, seed=1), tmp_path / "big.csv")).batch_id
    assert len(api.get(f"/batches/{big}/trades").json()) == PAGE
    assert len(api.get(f"/batches/{big}/trades", params={"limit": PAGE + 10}).json()) == PAGE + 5
    with connect(str(api.base_url).rstrip("/").removesuffix("/api/v1")) as client:
        assert len(client.trades(big)) == PAGE + 5  # every row, as in process


def test_a_table_read_as_arrow_equals_its_json(api: httpx.Client, batch: int) -> None:
    for path in (f"/batches/{batch}/trades", f"/batches/{batch}/rejections"):
        as_json = api.get(path).json()
        resp = api.get(path, headers={"Accept": ARROW})
        assert resp.headers["content-type"] == ARROW
        with pa.ipc.open_stream(io.BytesIO(resp.content)) as reader:
            df: pd.DataFrame = reader.read_pandas()
        assert records(df) == as_json
        assert len(df) > 0


@pytest.mark.parametrize(
    "path",
    ["/batches/99", "/batches/99/trades", "/batches/99/rejections", "/batches/99/corrections"],
)
def test_an_unknown_batch_is_a_404_problem(api: httpx.Client, path: str) -> None:
    body = assert_problem(api.get(path), 404, "NOT_FOUND")
    assert body["detail"].startswith("There is no batch 99")


@pytest.mark.parametrize(
    "path",
    ["/batches/x", "/batches/-1", "/batches/99999999999", "/batches/1/trades?limit=-1", "/batches/1/trades?offset=a"],
)
def test_a_bad_id_or_paging_value_is_a_422_naming_it(api: httpx.Client, batch: int, path: str) -> None:
    body = assert_problem(api.get(path), 422, "BAD_REQUEST")
    field = body["errors"][0]["field"]
    assert field in ("batch_id", "limit", "offset") and body["detail"].startswith(f"{field}: ")


def test_a_batch_is_deleted_with_204_and_then_is_gone(api: httpx.Client, batch: int) -> None:
    resp = api.delete(f"/batches/{batch}")
    assert resp.status_code == 204 and resp.content == b""
    assert_problem(api.get(f"/batches/{batch}"), 404)
    assert_problem(api.delete(f"/batches/{batch}"), 404)
