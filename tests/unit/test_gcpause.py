from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from fxbatch.gcpause import frozen_heap


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_the_heap_is_frozen_while_a_holder_is_in_and_given_back_after() -> None:
    before = _Node()
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        assert not any(o is before for o in gc.get_objects(generation=2))  # out of the collector's walks
        made = weakref.ref(_Node())  # garbage made meanwhile is still collected
        gc.collect()
        assert made() is None
    assert gc.get_freeze_count() == 0
    assert any(o is before for o in gc.get_objects(generation=2))


def test_the_heap_is_given_back_only_when_the_last_of_overlapping_holders_leaves() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[int] = []

    def second() -> None:
        first_in.wait(30)
        with frozen_heap():
            second_in.set()
            first_out.wait(30)
            seen.append(gc.get_freeze_count())  # the first holder has left: still frozen

    thread = threading.Thread(target=second)
    thread.start()
    with frozen_heap():
        first_in.set()
        second_in.wait(30)
    first_out.set()
    thread.join(30)
    assert seen and seen[0] > 0
    assert gc.get_freeze_count() == 0


def test_a_heap_the_process_froze_itself_stays_frozen() -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    with frozen_heap():
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == frozen


def test_an_error_inside_still_gives_the_heap_back() -> None:
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0
