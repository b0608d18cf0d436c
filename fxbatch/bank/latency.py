"""Simulated latency shared by concurrent calls: at most ``max_in_flight`` requests in flight.

A bank call of n requests, each taking ``latency``, holds a slot per request in flight. Calls
made at the same time from more than one thread (the engine quotes a wave while the wave before
is booked) share the slots, as they share an HTTP bank's calls in flight: a request starts on
the first slot free (first come, first served), so two calls together take as long as their
requests need over all the slots, not each its own ``ceil(n / max_in_flight)`` rounds at once.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import numpy as np


class SlotClock:
    """Reserves slot time for calls; ``hold`` sleeps until the call's last request is answered."""

    def __init__(self, sleep: Callable[[float], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.sleep = sleep
        self.clock = clock
        self._free = np.zeros(0)  # when each slot is free again
        self._owner = np.zeros(0, dtype=np.int64)  # the call that reserved it last
        self._calls = itertools.count(1)
        self._lock = threading.Lock()

    def reserve(self, n: int, max_in_flight: int, latency_s: float) -> tuple[int, float, float]:
        """Slots for ``n`` requests from now; returns (call id, now, when the last one ends)."""
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
            return call, now, float(begins[mine].max()) + latency_s

    def release(self, call: int) -> None:
        """The call is over: the slots it reserved last are free from now (a sleep that returned
        early, as a test's does, leaves no phantom requests behind)."""
        with self._lock:
            now = self.clock()
            mine = (self._owner == call) & (self._free > now)
            self._free[mine] = now

    def hold(self, n: int, max_in_flight: int, latency_s: float) -> None:
        """Sleep as long as ``n`` requests take with the slots shared by every call."""
        if not n or latency_s <= 0:
            return
        call, now, end = self.reserve(n, max_in_flight, latency_s)
        try:
            self.sleep(end - now)
        finally:
            self.release(call)
