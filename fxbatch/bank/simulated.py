"""The in-process simulated bank: the port's operations over the deterministic BankModel.

It keeps its own durable ledger of booked deals (``sim_ledger``) keyed by the caller's deal
transaction id and never books one twice: a repeated booking answers with the deal already
booked. An in-memory index of the ledger (64-bit hashes of the ids, loaded once from the table)
makes that check vectorised. ``sim_ledger`` is a view: an id made from a run's prefix and the trade's row (what
the engine sends, ``fxbatch.bank.dealids``) is stored as a prefix id in ``sim_ledger_rows``, any
other id as it came.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fxbatch.bank import dealids
from fxbatch.bank.latency import SlotClock
from fxbatch.bank.model import (
    BOOK_STAGE,
    MESSAGE_OBJ,
    NONE,
    QUOTE_STAGE,
    REASON_INDEX,
    RESULT_CODE,
    TIMEOUT,
    BankModel,
    Fates,
    RateWalk,
)
from fxbatch.bank.port import (
    BookBatch,
    BookReplies,
    QuoteBatch,
    QuoteReplies,
    Replies,
    StatusReplies,
    unbookable,
    unbookable_message,
)
from fxbatch.bank.registry import ClientRegistry
from fxbatch.models import BankSettings, FailureCode
from fxbatch.store import Store, insert_arrow

_EXPIRED = REASON_INDEX[FailureCode.QUOTE_EXPIRED.value]
_MOVED = REASON_INDEX[FailureCode.PRICE_MOVED.value]
_VALIDATION = REASON_INDEX[FailureCode.BANK_VALIDATION.value]
_UNSUPPORTED = REASON_INDEX[FailureCode.CURRENCY_NOT_SUPPORTED.value]

_M64 = (1 << 64) - 1
_MUL = 0xD6E8FEB86659FD93
_PY_HASH_MAX = 512  # ids hashed in Python; more go to one DuckDB query
_PROBES = ("", "a", "run-1", "abcdefgh", "abcdefghijkl", "abcdefghijklm", "fx-2f3c9a7e-1234567", "é€ü" * 7)
_py_hash_ok: bool | None = None


def duckdb_hash(text: str) -> int:
    """DuckDB's ``hash()`` of a VARCHAR (its HashBytes: 8-byte blocks, then MurmurHash64's mix).

    Checked against DuckDB itself before it is used (``_py_hash_matches_duckdb``), so a DuckDB
    upgrade that changes its hash falls back to asking DuckDB instead of missing booked deals.
    """
    data = text.encode()
    n = len(data)
    h = 0xE17A1465 ^ ((n * 0xC6A4A7935BD1E995) & _M64)
    for i in range(0, n, 8):  # the last block zero-padded, as DuckDB's memcpy into a zeroed word
        h = ((h ^ int.from_bytes(data[i : i + 8], "little")) * _MUL) & _M64
    h ^= h >> 32
    h = (h * _MUL) & _M64
    h ^= h >> 32
    h = (h * _MUL) & _M64
    return h ^ (h >> 32)


def _py_hash_matches_duckdb(store: Store) -> bool:
    global _py_hash_ok
    if _py_hash_ok is None:
        got = (
            store.cursor()
            .execute("SELECT hash(s) FROM unnest(?::VARCHAR[]) WITH ORDINALITY t(s, i) ORDER BY i", [list(_PROBES)])
            .fetchall()
        )
        _py_hash_ok = [int(r[0]) for r in got] == [duckdb_hash(p) for p in _PROBES]
    return _py_hash_ok


class _Booked:
    """Every deal id the ledger holds, as sorted runs of 64-bit hashes.

    Loaded once from ``sim_ledger.deal_hash`` (8 bytes a deal). A hash hit is only a candidate:
    the bank confirms it against the ledger, so a collision never turns a new booking into a
    false repeat. The runs are sorted numpy arrays (a lookup is a binary search per run, with no
    Python object per deal); a run is merged into the one before it once that one is no more
    than twice its size, so there are only ever about log2(deals) of them.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        cur = store.cursor()
        # The hash function is DuckDB's: should a DuckDB upgrade change it, re-hash the ledger.
        stale = cur.execute(
            "SELECT count(*) FROM (SELECT * FROM sim_ledger LIMIT 64) WHERE deal_hash <> hash(deal_transaction_id)"
        ).fetchall()[0][0]
        if stale:
            prefix = "(SELECT p.prefix FROM sim_deal_prefixes p WHERE p.prefix_id = sim_ledger_rows.prefix_id)"
            cur.execute(
                "UPDATE sim_ledger_rows SET deal_hash = "
                f"hash(coalesce(deal_transaction_id, {dealids.deal_id_sql(prefix, 'src_row')}))"
            )
        column = cur.execute("SELECT deal_hash FROM sim_ledger_rows").fetchnumpy()["deal_hash"]
        self.runs: list[np.ndarray] = []
        self.add(np.asarray(column, dtype=np.uint64))

    def hashes(self, ids: pa.Array) -> np.ndarray:
        """DuckDB's hash of each id: the same function fills ``sim_ledger.deal_hash``.

        A few ids (a service's booking call) are hashed in Python, which costs ~3 us an id
        against ~1.5 ms for a DuckDB query; a long column goes to DuckDB.
        """
        if len(ids) <= _PY_HASH_MAX and not ids.null_count and _py_hash_matches_duckdb(self.store):
            return np.array([duckdb_hash(i) for i in ids.cast(pa.string()).to_pylist()], dtype=np.uint64)
        cur = self.store.cursor()
        cur.register("_fx_ids", pa.table({"id": ids.cast(pa.string())}))
        try:
            return np.asarray(cur.execute("SELECT hash(id) AS h FROM _fx_ids").fetchnumpy()["h"], dtype=np.uint64)
        finally:
            cur.unregister("_fx_ids")

    def add(self, hashes: np.ndarray) -> None:
        if not len(hashes):
            return
        runs = [*self.runs, np.sort(hashes)]
        while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
            top = runs.pop()
            # Stable sort of two sorted runs is a linear merge (timsort).
            runs[-1] = np.sort(np.concatenate([runs[-1], top]), kind="stable")
        self.runs = runs  # replaced whole: a lookup in another thread sees the old or the new list

    def candidates(self, hashes: np.ndarray) -> np.ndarray:
        # Sorted needles make the binary searches walk memory in order (several times faster).
        order = np.argsort(hashes)
        needles = hashes[order]
        hit = np.zeros(len(hashes), dtype=bool)
        for run in self.runs:  # one list object throughout (add replaces it)
            pos = np.searchsorted(run, needles)
            np.minimum(pos, len(run) - 1, out=pos)
            hit |= run[pos] == needles
        found = np.empty(len(hashes), dtype=bool)
        found[order] = hit
        return found


def _apply_fates(reason: np.ndarray, fates: Fates, attempt: np.ndarray, stage: np.ndarray) -> np.ndarray:
    """Give trades not yet refused the model's answer at this stage, in place.

    A trade fated to fail with a reason of this stage fails (every attempt); a trade fated to
    succeed may meet its transient error of this stage on attempt 1. Returns the transient mask.
    """
    fail = (reason == NONE) & ~fates.success & stage[fates.reason.astype(np.int64) + 1]
    reason[fail] = fates.reason[fail]
    transient = (reason == NONE) & (attempt == 1) & stage[fates.transient.astype(np.int64) + 1]
    reason[transient] = fates.transient[transient]
    return np.asarray(transient)


def _replies(reason: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    take = reason.astype(np.int64) + 1
    return RESULT_CODE[take], MESSAGE_OBJ[take]


class SimulatedBank:
    """Implements ``fxbatch.bank.port.Bank`` in-process."""

    def __init__(
        self,
        store: Store,
        settings: BankSettings,
        seed: int,
        mids: dict[str, float],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.settings = settings
        self.model = BankModel(seed, settings)
        self.walk = RateWalk(seed, mids, settings.volatility_bps)
        self.registry = ClientRegistry.from_csv(settings.registry_file) if settings.registry_file else None
        self.clock = clock
        self._slots = SlotClock(sleep)  # simulated latency, shared by calls made at the same time
        # The quote book: (ids sorted, expiry, rate) per call.
        self._quotes: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=256)
        # The last calls' quotes in request order (ids, expiry, rate, trade keys, fates): what a
        # caller usually books next. Two, because a caller may quote a wave while booking the one before.
        self._recent: deque[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Fates]] = deque(maxlen=2)
        self._index: _Booked | None = None
        self._prefixes: dict[str, int] = {}  # deal id prefix -> its id in sim_deal_prefixes
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.calls = {"createquote": 0, "bookquoteddeal": 0, "cancelquote": 0, "gettxnstatus": 0}

    # -- helpers ---------------------------------------------------------------
    def _wait(self, n: int, max_in_flight: int, stoppable: bool = False) -> np.ndarray | None:
        """Simulated latency: n calls, at most max_in_flight in flight across the calls made at
        the same time (``ceil(n / max_in_flight)`` latencies for a call alone). ``stoppable``
        (quotes and bookings): which requests were sent before ``stop_sending`` (None = all)."""
        stop = self._stop if stoppable else None
        return self._slots.hold(n, max_in_flight, self.settings.latency_ms / 1000, stop)

    def stop_sending(self) -> None:
        self._stop.set()

    def _count(self, call: str, n: int) -> None:
        with self._lock:  # calls may come from more than one thread
            self.calls[call] += n

    def _booked(self) -> _Booked:
        with self._lock:
            if self._index is None:
                self._index = _Booked(self.store)
            return self._index

    def _already(self, ids: pa.Array) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[int, float]]]:
        """Hashes of ``ids``, which of them the ledger holds (confirmed), and those deals' details."""
        index = self._booked()
        hashes = index.hashes(ids)
        maybe = index.candidates(hashes)
        if not maybe.any():
            return hashes, maybe, {}
        listed = ids.to_pylist()
        hits = np.flatnonzero(maybe)
        known = self._deals([listed[i] for i in hits], hashes[hits])
        return hashes, np.array([d in known for d in listed], dtype=bool), known

    def _deals(self, ids: list[str], hashes: np.ndarray) -> dict[str, tuple[int, float]]:
        """Quote id and deal rate of the booked deals among ``ids`` (few: only hash hits).

        Found by hash (a scan of one integer column), then confirmed by the id itself.
        """
        if not ids:
            return {}
        rows = (
            self.store.cursor()
            .execute(
                "SELECT deal_transaction_id, quote_id, deal_rate FROM sim_ledger "
                "WHERE deal_hash IN (SELECT unnest(?::UBIGINT[]))",
                [np.unique(hashes).tolist()],
            )
            .fetchall()
        )
        wanted = set(ids)
        return {r[0]: (int(r[1]), float(r[2])) for r in rows if r[0] in wanted}

    def _fates(self, keys: np.ndarray) -> Fates:
        """The model's fates of ``keys`` (those of the last quoted trades when they are the same)."""
        for _, _, _, recent, fates in list(self._recent)[::-1]:  # newest first; a snapshot
            if len(recent) == len(keys) and np.array_equal(recent, keys):
                return fates
        return self.model.fates(keys)

    def _issued(self, quote_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expiry and rate of each quote this bank issued (NaN when unknown)."""
        for ids, exp, rate, _, _ in list(self._recent)[::-1]:  # newest first; a snapshot
            if len(quote_ids) == len(ids) and np.array_equal(quote_ids, ids):
                # The common case: booking exactly what a recent call quoted (no search needed).
                return exp.copy(), rate.copy()
        expiry = np.full(len(quote_ids), np.nan)
        rates = np.full(len(quote_ids), np.nan)
        todo = np.ones(len(quote_ids), dtype=bool)
        for ids, exp, rate in reversed(tuple(self._quotes)):  # a snapshot: quotes may be added meanwhile
            if not todo.any():
                break
            pos = np.minimum(np.searchsorted(ids, quote_ids), len(ids) - 1)
            hit = todo & (ids[pos] == quote_ids)
            expiry[hit] = exp[pos[hit]]
            rates[hit] = rate[pos[hit]]
            todo &= ~hit
        return expiry, rates

    # -- the port --------------------------------------------------------------
    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> QuoteReplies:
        sent = self._wait(len(batch), max_in_flight, stoppable=True)
        if sent is None:
            return self._quote(batch)
        idx = np.flatnonzero(sent)
        return self._quote(batch.take(idx)).spread(idx, len(batch))

    def _quote(self, batch: QuoteBatch) -> QuoteReplies:
        n = len(batch)
        self._count("createquote", n)
        fates = self.model.fates(batch.trade_key)
        reason = np.full(n, NONE, dtype=np.int8)
        if self.registry is not None:
            checks = self.registry.check(batch.column("client_cif"), batch.column("account_number"), batch.amount_zar)
            has = checks != None  # noqa: E711
            reason[has] = [REASON_INDEX[c] for c in checks[has]]
        codes = self.walk.pair_index(batch.pair_names)
        pair_idx = np.append(codes, -1)[batch.pair_code]
        mid = self.walk.mid(batch.pair_names, batch.step + batch.attempt - 1, pair_idx)
        free = reason == NONE
        reason[free & np.isnan(mid)] = _UNSUPPORTED
        _apply_fates(reason, fates, batch.attempt, QUOTE_STAGE)
        ok = reason == NONE
        codes, messages = _replies(reason)
        quote_id = np.where(ok, self.model.quote_ids(batch.trade_key, batch.attempt), 0)
        # The bank's own rate to the desk: mid, without the desk's spread (the desk adds it).
        rate = np.where(ok, mid, np.nan)
        expires = np.where(ok, self.clock() + self.settings.quote_ttl_s, np.nan)
        if ok.any():
            order = np.argsort(quote_id[ok])
            self._quotes.append((quote_id[ok][order], expires[ok][order], rate[ok][order]))
        quoted = Fates(fates.success[ok], fates.reason[ok], fates.transient[ok])
        self._recent.append((quote_id[ok], expires[ok], rate[ok], batch.trade_key[ok], quoted))
        return QuoteReplies(codes, reason, messages, None, quote_id, rate, expires)

    def book_deals(self, batch: BookBatch, max_in_flight: int) -> BookReplies:
        sent = self._wait(len(batch), max_in_flight, stoppable=True)
        if sent is None:
            return self._book(batch)
        idx = np.flatnonzero(sent)
        return self._book(batch.take(idx)).spread(idx, len(batch))

    def _book(self, batch: BookBatch) -> BookReplies:
        n = len(batch)
        self._count("bookquoteddeal", n)
        hashes, already, known = self._already(batch.deal_txn_id)
        fates = self._fates(batch.trade_key)
        expiry, issued = self._issued(batch.quote_id)
        now = self.clock()
        reason = np.full(n, NONE, dtype=np.int8)
        reason[np.isnan(expiry) | (now > expiry)] = _EXPIRED
        # The booking must carry the rate the bank quoted (the client's dealRate differs from it by
        # the desk's spread, on purpose).
        tol = self.settings.price_tolerance_bps / 10_000
        moved = np.abs(batch.quote_rate - issued) > tol * np.abs(issued)
        reason[(reason == NONE) & moved] = _MOVED
        bad_rate = unbookable(batch.deal_rate)  # refused as the HTTP bank refuses it: unsent
        reason[bad_rate] = _VALIDATION
        transient = _apply_fates(reason, fates, batch.attempt, BOOK_STAGE)
        # A lost answer after a real booking: the deal is booked, the caller hears nothing.
        lost_answer = transient & (fates.transient == TIMEOUT)
        book_now = ((reason == NONE) | lost_answer) & ~already
        # The same deal id twice in one call: the first books, the others are repeats of it.
        candidates = np.flatnonzero(book_now)
        twice = np.zeros(0, dtype=np.int64)
        wanted = np.sort(hashes[candidates])
        if (wanted[1:] == wanted[:-1]).any():  # rare: only then pay for finding which ones
            _, first = np.unique(hashes[candidates], return_index=True)
            twice = np.setdiff1d(candidates, candidates[first])
            book_now[twice] = False
        reason[already] = NONE  # idempotent: the deal exists, answer with it
        deal_rate = np.where((reason == NONE) | lost_answer, batch.deal_rate, np.nan)
        repeat = np.flatnonzero(already)
        if len(repeat):
            repeat_ids = batch.deal_txn_id.take(pa.array(repeat)).to_pylist()
            deal_rate[repeat] = [known[d][1] for d in repeat_ids]
        if len(twice):
            by_hash = {int(h): float(r) for h, r in zip(hashes[book_now], batch.deal_rate[book_now], strict=True)}
            reason[twice] = NONE
            deal_rate[twice] = [by_hash[int(h)] for h in hashes[twice]]
        if book_now.any():
            self._record(batch, book_now, now, hashes)
        codes, messages = _replies(reason)
        for i in np.flatnonzero(bad_rate & ~already).tolist():
            messages[i] = unbookable_message(float(batch.quote_rate[i]), float(batch.deal_rate[i]))
        booked = book_now | already
        booked[twice] = True
        return BookReplies(codes, reason, messages, None, deal_rate, booked)

    def _record(self, batch: BookBatch, mask: np.ndarray, now: float, hashes: np.ndarray) -> None:
        idx = np.flatnonzero(mask)
        new_ids = batch.deal_txn_id.take(pa.array(idx)).cast(pa.string())
        src = batch.src_row[idx]
        prefix_id, derived = self._derived(new_ids, src)
        if derived.all():
            ids = pa.nulls(len(idx), pa.string())
        elif derived.any():
            ids = pc.if_else(pa.array(derived), pa.scalar(None, pa.string()), new_ids)
        else:
            ids = new_ids
        booked = pa.table(
            {
                "deal_hash": pa.array(hashes[idx], type=pa.uint64()),
                "deal_transaction_id": ids,
                "quote_id": pa.array(batch.quote_id[idx], type=pa.int64()),
                "run_id": pa.array(np.full(len(idx), batch.run_id), type=pa.int32()),
                "src_row": pa.array(src, type=pa.int32()),
                "deal_rate": pa.array(batch.deal_rate[idx], type=pa.float64()),
                "booked_at": pa.array(np.full(len(idx), int(now * 1e6)), type=pa.timestamp("us")),
                "prefix_id": pa.array(np.full(len(idx), prefix_id), type=pa.int32(), mask=~derived),
            }
        )
        insert_arrow(self.store.cursor(), "sim_ledger_rows", booked, by_name=True)
        index = self._booked()
        with self._lock:
            index.add(hashes[idx])

    def _derived(self, ids: pa.Array, src_row: np.ndarray) -> tuple[int, np.ndarray]:
        """Which ids are ``dealids.deal_ids(prefix, src_row)`` for the prefix of the first one,
        and its prefix id. Those are stored as the prefix id (the ``sim_ledger`` view puts the
        string back together); any other id is stored as it came."""
        none = np.zeros(len(ids), dtype=bool)
        first = ids[0].as_py() if len(ids) else None
        prefix = dealids.split(first, int(src_row[0])) if first is not None else None
        if prefix is None:
            return 0, none
        rebuilt = dealids.deal_ids(prefix, pa.array(src_row, type=pa.int64()))
        same = np.asarray(pc.equal(rebuilt, ids).fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        if not same.any():
            return 0, none
        return self._prefix_id(prefix), same

    def _prefix_id(self, prefix: str) -> int:
        with self._lock:  # two bookings at once (two threads) must not both insert a new prefix
            found = self._prefixes.get(prefix)
            if found is None:
                cur = self.store.cursor()
                cur.execute(
                    "INSERT INTO sim_deal_prefixes VALUES (nextval('sim_prefix_seq'), ?) ON CONFLICT DO NOTHING",
                    [prefix],
                )
                found = int(
                    cur.execute("SELECT prefix_id FROM sim_deal_prefixes WHERE prefix = ?", [prefix]).fetchall()[0][0]
                )
                self._prefixes[prefix] = found
            return found

    def cancel_quotes(self, quote_ids: np.ndarray, max_in_flight: int) -> Replies:
        self._count("cancelquote", len(quote_ids))
        self._wait(len(quote_ids), max_in_flight)
        n = len(quote_ids)
        return Replies(np.zeros(n, dtype=np.int64), np.full(n, NONE, dtype=np.int8), np.full(n, None, dtype=object))

    def transaction_status(
        self, deal_txn_ids: pa.Array, max_in_flight: int, run_id: int | None = None
    ) -> StatusReplies:
        n = len(deal_txn_ids)
        self._count("gettxnstatus", n)
        self._wait(n, max_in_flight)
        ids = deal_txn_ids.to_pylist()
        _, _, known = self._already(deal_txn_ids)
        found = [known.get(d) for d in ids]
        status = np.array(["COMPLETED" if f else "NOT_FOUND" for f in found], dtype=object)
        quote_id = np.array([f[0] if f else 0 for f in found], dtype=np.int64)
        rate = np.array([f[1] if f else np.nan for f in found], dtype=np.float64)
        return StatusReplies(status, quote_id, rate)

    def close(self) -> None:
        self._quotes.clear()
        self._recent.clear()
