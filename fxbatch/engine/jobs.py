"""A run in progress: its job handle and its thread-safe progress."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from fxbatch.lifecycle import TRADE_CODES
from fxbatch.models import RunProgress, RunStatus, TradeStatus

T = TradeStatus


class Progress:
    """Thread-safe progress of one run; read from any thread, never touches the database."""

    def __init__(self, run_id: int, total: int, done_before: dict[str, int]) -> None:
        self.run_id = run_id
        self.total = total
        self._lock = threading.Lock()
        self._final = {s.value: 0 for s in TradeStatus}
        for key, n in done_before.items():
            if key in (T.SUCCESS, T.FAILED, T.CANCELLED):
                self._final[key] = n
        self._done_at_start = sum(self._final.values())
        self._chunk: dict[str, int] = {}
        self._started = time.monotonic()
        self.status = RunStatus.RUNNING
        self.error: str | None = None

    def chunk_state(self, states: np.ndarray) -> None:
        counts = np.bincount(states, minlength=len(TRADE_CODES))
        with self._lock:
            self._chunk = {TRADE_CODES[i].value: int(c) for i, c in enumerate(counts) if c}

    def finished(self, statuses: dict[str, int]) -> None:
        with self._lock:
            for key, n in statuses.items():
                self._final[key] = self._final.get(key, 0) + n
            self._chunk = {}

    def snapshot(self, batch_id: int | None = None) -> RunProgress:
        """The run's progress now; ``batch_id`` is stamped on it when the caller knows it."""
        with self._lock:
            counts = dict(self._final)
            for key, n in self._chunk.items():
                counts[key] = counts.get(key, 0) + n
            done = sum(counts[s] for s in (T.SUCCESS, T.FAILED, T.CANCELLED))
            in_flight = counts.get(T.EXECUTING, 0) + counts.get(T.QUOTED, 0)
            counts[T.PENDING.value] = max(0, self.total - done - in_flight)
            elapsed = time.monotonic() - self._started
            rate = (done - self._done_at_start) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - done) / rate if rate > 0 else None
            return RunProgress(
                run_id=self.run_id,
                batch_id=batch_id,
                status=self.status,
                done=done,
                total=self.total,
                fraction=done / self.total if self.total else 1.0,
                counts=counts,
                trades_per_s=rate,
                eta_s=eta,
                elapsed_s=elapsed,
                error=self.error,
            )


@dataclass
class Job:
    """A run executing in a worker thread."""

    run_id: int
    batch_id: int
    progress: Progress
    thread: threading.Thread | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop after the chunk in hand; trades not started end CANCELLED."""
        self.cancel_requested.set()

    def interrupt(self) -> None:
        """Stop after the chunk in hand and leave the run INTERRUPTED (resumable)."""
        self.stop_requested.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the end of the run (and of its thread); False on timeout."""
        if not self.done.wait(timeout):
            return False
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        return True

    @property
    def running(self) -> bool:
        return not self.done.is_set()
