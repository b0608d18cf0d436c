"""A run in progress: its job handle and its thread-safe progress."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fxbatch.lifecycle import TRADE_CODES
from fxbatch.models import RunProgress, RunStatus, TradeStatus

T = TradeStatus


# The pace (and so the ETA) is measured over at least this many recent seconds, not since the
# start: a run that slowed down (or sped up) shows the time it will really take.
PACE_WINDOW_S = 10.0


class Progress:
    """Thread-safe progress of one run; read from any thread, never touches the database."""

    def __init__(
        self, run_id: int, total: int, done_before: dict[str, int], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.run_id = run_id
        self.total = total
        self.clock = clock
        self._lock = threading.Lock()
        self._final = {s.value: 0 for s in TradeStatus}
        for key, n in done_before.items():
            if key in (T.SUCCESS, T.FAILED, T.CANCELLED):
                self._final[key] = n
        self._done_at_start = sum(self._final.values())
        self._chunk: dict[str, int] = {}
        self._started = clock()
        # (when, trades done) each time trades became final; the oldest kept is the pace's anchor.
        self._samples: deque[tuple[float, int]] = deque([(self._started, self._done_at_start)])
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
            now = self.clock()
            self._samples.append((now, sum(self._final[s] for s in (T.SUCCESS, T.FAILED, T.CANCELLED))))
            self._trim(now)

    def _trim(self, now: float) -> None:
        """Keep one sample at least PACE_WINDOW_S old (the anchor) and those after it; older ones
        only while the anchor has no trades finished since (a long wave: the pace reaches back)."""
        samples = self._samples
        while len(samples) > 2 and samples[1][0] <= now - PACE_WINDOW_S and samples[1][1] < samples[-1][1]:
            samples.popleft()

    def _pace(self, now: float, done: int) -> float:
        """Trades finished per second over the recent window (since the start while it is shorter)."""
        self._trim(now)
        when, then = self._samples[0]
        return (done - then) / (now - when) if now > when else 0.0

    def snapshot(self, batch_id: int | None = None) -> RunProgress:
        """The run's progress now; ``batch_id`` is stamped on it when the caller knows it."""
        with self._lock:
            counts = dict(self._final)
            for key, n in self._chunk.items():
                counts[key] = counts.get(key, 0) + n
            done = sum(counts[s] for s in (T.SUCCESS, T.FAILED, T.CANCELLED))
            in_flight = counts.get(T.EXECUTING, 0) + counts.get(T.QUOTED, 0)
            counts[T.PENDING.value] = max(0, self.total - done - in_flight)
            now = self.clock()
            elapsed = now - self._started
            rate = self._pace(now, done)
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
    on_cancel: list[Callable[[], None]] = field(default_factory=list)  # called once, on cancel

    def cancel(self) -> None:
        """Stop now: no new quote or booking is sent (the bank's calls in flight finish and
        their trades end as the bank answered); every other trade ends CANCELLED."""
        if self.cancel_requested.is_set():
            return
        self.cancel_requested.set()
        for hook in self.on_cancel:
            hook()

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
