"""Server-sent events of a run: ``data: <run object>`` on every change, the final object last.

The run's progress lives in memory (``wb.progress``), so it is polled on the event loop every
50 ms without touching the database; the stored part of the run object is read in the
threadpool about once a second, in the background, so that no event waits behind the run's writes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.sse import format_sse_event

from fxbatch.models import RunProgress, RunStatus
from fxbatch.serving import STOPPING
from fxbatch.workbench import Workbench

SSE = "text/event-stream"
POLL_S = 0.05
HEARTBEAT_S = 1.0

ReadRun = Callable[[Workbench, int], dict[str, Any]]


def event(body: dict[str, Any]) -> bytes:
    return format_sse_event(data_str=json.dumps(body, separators=(",", ":"), default=str))


def _key(progress: dict[str, Any] | RunProgress | None) -> tuple[Any, ...]:
    """What makes progress news: not the clock (elapsed, pace), only the figures."""
    if progress is None:
        return ()
    p = progress.model_dump(mode="json") if isinstance(progress, RunProgress) else progress
    return (p["status"], p["done"], tuple(sorted(p["counts"].items())), p["error"])


async def run_events(wb: Workbench, run_id: int, first: dict[str, Any], read: ReadRun) -> AsyncIterator[bytes]:
    yield event(first)
    if first["progress"] is None and first["status"] != RunStatus.RUNNING.value:
        return  # not executing: the first object is already the last
    # While the run executes, an event is its stored object (read again in the background about
    # once a second: a read may wait behind the run's own writes) with the live progress, so an
    # event never waits for the database.
    stored, stored_at = first, time.monotonic()
    refresh: asyncio.Future[dict[str, Any]] | None = None
    last, sent_at = _key(first["progress"]), time.monotonic()
    try:
        while True:
            await asyncio.sleep(POLL_S)
            if STOPPING.is_set():
                return  # the server is stopping: its runs are interrupted once the streams have ended
            snap = wb.progress(run_id)
            if snap is None or snap.status is not RunStatus.RUNNING:
                # The run's status is final before it lets go of its job (the quotes it released are
                # being cancelled at the bank, its bank closed): the last event waits for that, so a
                # client that goes on (the batch's next run, a delete) when it comes is not refused.
                job = wb.engine.job(run_id)
                while job is not None and not job.done.is_set() and not STOPPING.is_set():
                    await asyncio.sleep(POLL_S)
                    if time.monotonic() - sent_at >= HEARTBEAT_S:
                        yield b": the run is letting go of its job\n\n"  # a comment: keeps the stream alive
                        sent_at = time.monotonic()
                # The run's record is written before its progress leaves RUNNING: this read is final.
                yield event(await run_in_threadpool(read, wb, run_id))
                return
            now = time.monotonic()
            if refresh is not None and refresh.done():
                if refresh.exception() is None:
                    stored = refresh.result()
                refresh = None
            if refresh is None and now - stored_at >= HEARTBEAT_S:
                refresh, stored_at = asyncio.ensure_future(run_in_threadpool(read, wb, run_id)), now
            key = _key(snap)
            if key != last or now - sent_at >= HEARTBEAT_S:
                yield event({**stored, "progress": snap.model_dump(mode="json")})
                last, sent_at = key, now
    finally:
        if refresh is not None:
            refresh.cancel()
