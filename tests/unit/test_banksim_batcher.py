"""The simulator's batcher: requests that wait together go to the desk in one call."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from fxbatch.bank.simulated import SimulatedBank
from fxbatch.banksim.batcher import Batcher
from fxbatch.banksim.desk import Answer, Desk
from fxbatch.models import BankSettings
from fxbatch.rates import RateTable
from fxbatch.settings import load_settings
from fxbatch.store import Store


class FakeDesk:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[str, int]] = []
        self.fail = fail

    def decide(self, kind: str, rows: list[dict[str, Any]]) -> list[Answer]:
        self.batches.append((kind, len(rows)))
        if self.fail:
            raise RuntimeError("desk down")
        return [Answer(0, None, None, quote_id=row["n"]) for row in rows]


def ask_all(desk: FakeDesk, latency_s: float, kinds: list[str]) -> list[Answer | BaseException]:
    async def main() -> list[Answer | BaseException]:
        batcher = Batcher(desk, latency_s)  # type: ignore[arg-type]
        try:
            futures = [batcher.ask(kind, {"n": i}) for i, kind in enumerate(kinds)]
            return list(await asyncio.gather(*futures, return_exceptions=True))
        finally:
            batcher.close()

    return asyncio.run(main())


@pytest.mark.parametrize("latency_s", [0.0, 0.01])
def test_requests_that_arrive_together_are_decided_in_one_desk_call_per_kind(latency_s: float) -> None:
    desk = FakeDesk()
    answers = ask_all(desk, latency_s, ["quote"] * 5 + ["book"] * 3)
    assert sorted(desk.batches) == [("book", 3), ("quote", 5)]
    assert [a.quote_id for a in answers if isinstance(a, Answer)] == list(range(8))  # each its own answer


def test_a_failing_desk_fails_every_waiting_request() -> None:
    answers = ask_all(FakeDesk(fail=True), 0.0, ["book"] * 3)
    assert all(isinstance(a, RuntimeError) for a in answers)


def test_warming_up_pays_the_first_calls_costs_on_their_threads_and_books_nothing() -> None:
    store = Store(None)
    rates = RateTable.from_csv(load_settings().rates_file)
    bank = SimulatedBank(store, BankSettings(), 1, rates.mids)
    desk = Desk(bank, rates)
    warmed: dict[str, str] = {}
    decide = desk.warm_up

    def spy(kind: str) -> None:
        warmed[kind] = threading.current_thread().name
        decide(kind)

    desk.warm_up = spy  # type: ignore[method-assign]

    async def main() -> None:
        batcher = Batcher(desk, 0.01)
        try:
            await batcher.warm_up()
        finally:
            batcher.close()

    asyncio.run(main())
    assert warmed["quote"] == threading.main_thread().name  # quotes are decided on the loop
    assert warmed["book"].startswith("banksim-desk")  # bookings on the desk thread
    assert bank._index is not None  # the ledger's index is loaded
    assert store.cursor().execute("SELECT count(*) FROM sim_ledger").fetchall() == [(0,)]
    store.close()
