"""Shorter garbage-collection pauses while runs go on: the heap that was there is frozen.

A full (generation 2) collection walks every tracked object of the process: in a workbench with
pandas, DuckDB, pydantic and httpx loaded that is about 60 ms with every thread stopped. During a
run against an HTTP bank each such pause holds up all the calls in flight; ``make bench`` showed
two of them in a 2,000-trade run. ``gc.freeze()`` moves what exists when the first run starts out
of the collector's reach, so the run's collections only walk what was made since; the last run
to end gives it back (``gc.unfreeze()``), so nothing is kept from the collector for longer than
runs go on. Objects freed by reference counting (almost all of them) are freed as usual.

A process that froze its heap itself (a pre-forking server) is left as it is.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_holders = 0
_froze = False


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the heap that exists now out of the collector's walks until the last holder leaves."""
    global _holders, _froze
    with _lock:
        if _holders == 0:
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _froze:
                gc.unfreeze()
                _froze = False
