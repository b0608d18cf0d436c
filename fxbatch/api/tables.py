"""Tables over HTTP: JSON records by default, an Arrow IPC stream when the client asks for one.

JSON is ``fxbatch.tablejson.records_json`` (what ``--json`` prints: NaN and missing values become
null, dates as dates); Arrow is the same DataFrame as an IPC stream, so a notebook
reads it back with its types (``pa.ipc.open_stream(body).read_pandas()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
from fastapi import Request, Response

from fxbatch.tablejson import records, records_json

ARROW = "application/vnd.apache.arrow.stream"
JSON = "application/json"


def wants_arrow(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == ARROW for part in accept.split(","))


def arrow_bytes(df: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def table_response(request: Request, df: pd.DataFrame, headers: Mapping[str, str] | None = None) -> Response:
    if wants_arrow(request):
        return Response(arrow_bytes(df), media_type=ARROW, headers=headers)
    return Response(records_json(df), media_type=JSON, headers=headers)


def jsonable_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """One record of scalars (timestamps, numpy numbers, NaN) and nested tables, as JSON values."""
    tables = {k: records(v) for k, v in values.items() if isinstance(v, pd.DataFrame)}
    scalars = {k: v for k, v in values.items() if not isinstance(v, pd.DataFrame)}
    row = records(pd.DataFrame([scalars], columns=list(scalars)))[0] if scalars else {}
    return {k: tables[k] if k in tables else row[k] for k in values}


# OpenAPI: what a table route answers.
TABLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": f"The table: JSON records (dates ISO, missing values null), or an Arrow IPC stream "
        f"with `Accept: {ARROW}`.",
        "content": {
            JSON: {"schema": {"type": "array", "items": {"type": "object", "additionalProperties": True}}},
            ARROW: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
