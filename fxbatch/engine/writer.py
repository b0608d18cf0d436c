"""Final records written on a thread of their own while the run goes on.

DuckDB releases the GIL while it inserts, so the engine can decide the next wave while the
last buffer of final records is being written. At most one write is in progress: the next one
waits for it (which also bounds the memory held), or the caller, told when a write is done,
keeps its rows until the writer is free (``busy``, ``on_done``). Writing a run's final records late is safe:
a trade whose final record is not written yet is taken up again on resume, and its booking,
if any, is in the in-flight rows and the bank's ledger.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from fxbatch.engine import records
from fxbatch.store import Store


class FinalWriter:
    """Writes one run's final records in the background, one insert at a time."""

    def __init__(self, store: Store, run_id: int, on_done: Callable[[], None] | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.on_done = on_done  # called on the writer's thread once each write is over
        self._thread: threading.Thread | None = None
        self._writing = False  # cleared before on_done is called: busy is False once it is
        self._error: BaseException | None = None

    def submit(self, parts: list[records.FinalRows]) -> None:
        """Start writing ``parts`` (as one insert) once the previous write is done (raising its error)."""
        self.wait()
        self._writing = True
        self._thread = threading.Thread(
            target=self._write, args=(parts,), name=f"fxbatch-run-{self.run_id}-writer", daemon=True
        )
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A write is in progress."""
        return self._writing

    def wait(self) -> None:
        """Wait for the write in progress; raise what it raised."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write(self, parts: list[records.FinalRows]) -> None:
        try:
            records.write_final(self.store.cursor(), self.run_id, records.FinalRows.concat(parts))
        except BaseException as exc:  # handed to the run's thread by wait()
            self._error = exc
        finally:
            try:
                self.store.release_cursor()
            finally:
                self._writing = False
                if self.on_done is not None:
                    self.on_done()
