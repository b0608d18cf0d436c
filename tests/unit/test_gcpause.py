from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from fxbatch.gcpause import frozen_heap


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


def test_the_heap_is_frozen_while_a_holder_is_in_and_given_back_after() -> None:
    kept = [object() for _ in range(1000)]  # noqa: F841 (tracked objects that exist now)
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        made = [[] for _ in range(10)]
        gc.collect()
        assert all(gc.is_tracked(m) for m in made)
    assert gc.get_freeze_count() == 0


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
