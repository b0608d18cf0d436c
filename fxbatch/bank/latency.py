"""Simulated latency shared by concurrent calls: at most ``max_in_flight`` requests in flight.

A bank call of n requests, each taking ``latency``, holds a slot per request in flight. Calls
made at the same time from more than one thread (the engine quotes a wave while the wave before
is booked) share the slots, as they share an HTTP bank's calls in flight: a request starts on
the first slot free (first come, first served), so two calls together take as long as their
requests need over all the slots, not each its own ``ceil(n / max_in_flight)`` rounds at once.

A call can be stopped (``hold(..., stop=event)``): the requests that had not begun when the
event was set are never sent, and the call waits only for those in flight.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import numpy as np


class SlotClock:
    """Reserves slot time for calls; ``hold`` sleeps until the call's last request is answered."""

    def __init__(
        self,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] | None = None,
    ) -> None:
        self.sleep = sleep
        self.clock = clock
        # Sleeps until the event is set or the time passes; True when the event was set. With
        # real sleeps that is Event.wait; with a test's sleep, the sleep then a look at the event.
        self.wait = wait or (_event_wait if sleep is time.sleep else _slept_then_looked(sleep))
        self._free = np.zeros(0)  # when each slot is free again
        self._owner = np.zeros(0, dtype=np.int64)  # the call that reserved it last
        self._calls = itertools.count(1)
        self._lock = threading.Lock()

    def reserve(self, n: int, max_in_flight: int, latency_s: float) -> tuple[int, float, float]:
        """Slots for ``n`` requests from now; returns (call id, now, when the last one ends)."""
        call, now, begins = self._reserve(n, max_in_flight, latency_s)
        return call, now, float(begins.max()) + latency_s

    def _reserve(self, n: int, max_in_flight: int, latency_s: float) -> tuple[int, float, np.ndarray]:
        """(call id, now, when each of the ``n`` requests begins, in request order)."""
        k = max(1, max_in_flight)
        with self._lock:
            now = self.clock()
            if len(self._free) != k:  # another limit: start afresh (one bank serves one run)
                self._free, self._owner = np.zeros(k), np.zeros(k, dtype=np.int64)
            start = np.maximum(self._free, now)
            # Slot i can start requests at start[i], start[i] + latency, ...: the n earliest of
            # those are this call's (ties in slot order).
            spread = float(start.max() - start.min())
            rounds = -(-n // k) + 1 + int(spread // latency_s)
            begins = (start[:, None] + latency_s * np.arange(rounds)[None, :]).ravel()
            mine = np.argsort(begins, kind="stable")[:n]
            used = np.bincount(mine // rounds, minlength=k)
            call = next(self._calls)
            took = used > 0
            self._free[took] = start[took] + used[took] * latency_s
            self._owner[took] = call
            return call, now, np.sort(begins[mine])

    def release(self, call: int) -> None:
        """The call is over: the slots it reserved last are free from now (a sleep that returned
        early, as a test's does, leaves no phantom requests behind)."""
        with self._lock:
            now = self.clock()
            mine = (self._owner == call) & (self._free > now)
            self._free[mine] = now

    def hold(
        self, n: int, max_in_flight: int, latency_s: float, stop: threading.Event | None = None
    ) -> np.ndarray | None:
        """Sleep as long as ``n`` requests take with the slots shared by every call.

        With ``stop``: once it is set, no request begins; the call waits for the requests in
        flight and returns which were sent (bool per request, in order). None: all were sent.
        """
        if stop is not None and stop.is_set():
            return np.zeros(n, dtype=bool)
        if not n or latency_s <= 0:
            return None
        call, now, begins = self._reserve(n, max_in_flight, latency_s)
        end = float(begins.max()) + latency_s
        try:
            if stop is None:
                self.sleep(end - now)
                return None
            if not self.wait(stop, end - now):
                return None  # not stopped: every request was sent and answered
            at = self.clock()
            sent = begins <= at
            if sent.all():
                self.sleep(max(0.0, end - at))
                return None
            if sent.any():
                self.sleep(max(0.0, float(begins[sent].max()) + latency_s - at))
            return sent
        finally:
            self.release(call)


def _event_wait(event: threading.Event, seconds: float) -> bool:
    return event.wait(seconds)


def _slept_then_looked(sleep: Callable[[float], None]) -> Callable[[threading.Event, float], bool]:
    def wait(event: threading.Event, seconds: float) -> bool:
        sleep(seconds)
        return event.is_set()

    return wait
