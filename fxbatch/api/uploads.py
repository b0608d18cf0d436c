"""Uploads: a multipart form streamed to a file in a private temporary folder, within a size limit.

The limit is checked against Content-Length before anything is read, and against the bytes
actually received while they are written (a chunked body has no Content-Length). The file keeps
the upload's own name, so that fxbatch's messages name it as the CLI would ("trades.csv is
empty ..."). The folder is removed when the request is done with it, also when the client goes
away mid-upload: nothing is loaded from a partial file.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, Json, ValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from fxbatch.api.problems import ProblemError

MB = 1024 * 1024  # Streamlit's server.maxUploadSize counts MiB
FILE_FIELD = "file"
_MAX_FIELD_BYTES = 16 * MB  # a text field (column map, fixes) is held in memory
_FLUSH_BYTES = MB  # file data is written in the threadpool once this much is pending


class UploadForm(BaseModel):
    """The text fields that go with the file in ``POST /batches``."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Batch name (default: the file name without its suffix).")
    sheet: str | None = Field(None, description="Workbook sheet to read (default: the first).")
    column_map: Json[dict[str, str]] | None = Field(
        None, description='JSON object: file header -> field ("" ignores the column).'
    )
    fixes: Json[dict[int, dict[str, str | None]]] | None = Field(
        None, description='JSON object of corrections: {"<row>": {"<field>": "<text or null>"}} (file row numbers).'
    )
    today: date | None = Field(None, description="Trading date YYYY-MM-DD the file is checked for (default: today).")
    unmask: bool = Field(
        False,
        description="Rejected account numbers in full in the answer (default: their last 4 digits; recorded on the "
        "audit trail).",
    )


class CheckForm(UploadForm):
    """``POST /batches:check``: the same form and how many rejected rows to return."""

    limit: int = Field(1000, ge=0, le=1_000_000, description="Rejected rows returned at most.")


def form_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """The multipart request body of an upload route, for /docs (the route reads the stream itself)."""
    schema = model.model_json_schema()
    schema["properties"] = {
        FILE_FIELD: {"type": "string", "format": "binary", "description": "The CSV, XLSX or Parquet file."},
        **schema.get("properties", {}),
    }
    schema["required"] = [FILE_FIELD]
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


@dataclass
class Upload:
    path: Path  # the received file, named as the upload (``display_name``)
    filename: str
    size: int
    fields: dict[str, str]


def safe_name(filename: str) -> str:
    """The upload's own file name without any folder part, usable as a file name here."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "").strip()
    if name in ("", ".", ".."):
        return "upload"
    if len(name.encode()) > 200:  # file systems stop at 255 bytes
        stem, dot, suffix = name.rpartition(".")
        name = (stem[:100] + dot + suffix[:16]) if dot else name[:100]
    return name


def parse_form(model: type[UploadForm], fields: dict[str, str]) -> UploadForm:
    """The form's text fields, validated; an empty field counts as not given (as browsers send them)."""
    try:
        return model.model_validate({k: v for k, v in fields.items() if v != ""})
    except ValidationError as exc:
        items = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(items) from exc


@dataclass
class _Spool:
    """python-multipart callbacks: text fields in memory, the file part on disk."""

    directory: Path
    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    filename: str | None = None
    ended: bool = False
    _handle: BinaryIO | None = None
    _pending: list[bytes] = field(default_factory=list)
    _pending_bytes: int = 0
    _header_name: bytes = b""
    _header_value: bytes = b""
    _disposition: bytes = b""
    _name: str = ""
    _data: bytearray = field(default_factory=bytearray)
    _to_file: bool = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_val, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end,
        }  # fmt: skip

    def _part_begin(self) -> None:
        self._disposition, self._name, self._data, self._to_file = b"", "", bytearray(), False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_val(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = _text(options.get(b"name", b""))
        if b"filename" not in options:
            return
        if self._name != FILE_FIELD or self.path is not None:
            raise _bad_form(self._name or "file", "only one file is taken, in the field 'file'")
        self.filename = safe_name(_text(options[b"filename"]))
        self.path = self.directory / self.filename
        self._handle = self.path.open("wb")
        self._to_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._to_file:
            self._pending.append(bytes(data[start:end]))
            self._pending_bytes += end - start
            return
        if len(self._data) + end - start > _MAX_FIELD_BYTES:
            raise _bad_form(self._name, f"a text field may hold at most {_MAX_FIELD_BYTES // MB} MB")
        self._data.extend(data[start:end])

    def _part_end(self) -> None:
        if not self._to_file:
            self.fields[self._name] = _text(bytes(self._data))

    def _end(self) -> None:
        self.ended = True

    def needs_flush(self) -> bool:
        return self._pending_bytes >= _FLUSH_BYTES

    def flush(self) -> None:
        """Write the pending file data (in a worker thread: disks can be slow)."""
        if self._handle is not None and self._pending:
            self._handle.writelines(self._pending)
        self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _bad_form(name: str, why: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", name), "msg": why, "type": "value_error"}])


def too_large(limit_bytes: int) -> ProblemError:
    return ProblemError(
        413,
        f"The upload is larger than the server accepts ({limit_bytes // MB} MB, setting FXBATCH_API_MAX_UPLOAD_MB).",
        "TOO_LARGE",
        limit_bytes=limit_bytes,
    )


@asynccontextmanager
async def receive_upload(request: Request, limit_bytes: int) -> AsyncIterator[Upload]:
    """Stream the request's multipart body into a private temporary folder and yield the upload;
    the folder is removed on exit, whatever happened (``ClientDisconnect`` included)."""
    media_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise _bad_form(FILE_FIELD, "is required: send the file as multipart/form-data")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit_bytes:  # before reading a byte of it
        raise too_large(limit_bytes)
    directory = Path(tempfile.mkdtemp(prefix="fxbatch-upload-"))
    spool = _Spool(directory)
    try:
        received = 0
        try:
            parser = MultipartParser(boundary, spool.callbacks())  # type: ignore[arg-type]
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit_bytes:
                    raise too_large(limit_bytes)
                parser.write(chunk)
                if spool.needs_flush():
                    await anyio.to_thread.run_sync(spool.flush)
            parser.finalize()
            await anyio.to_thread.run_sync(spool.flush)
        except FormParserError as exc:
            raise _bad_form(FILE_FIELD, f"the multipart body cannot be read ({exc})") from exc
        finally:
            spool.close()
        if not spool.ended:
            raise _bad_form(FILE_FIELD, "the multipart body ended before its closing boundary")
        if spool.path is None or spool.filename is None:
            raise _bad_form(FILE_FIELD, "is required")
        yield Upload(spool.path, spool.filename, spool.path.stat().st_size, spool.fields)
    finally:
        # Not awaited: a cancelled request (the client went away) must still remove it.
        shutil.rmtree(directory, ignore_errors=True)
