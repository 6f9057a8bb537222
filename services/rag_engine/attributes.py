"""What a search selects chunks by, in memory and indexed by rid: whether a
row is live, its tenant and knowledge base, and its metadata. A scope and
filters become the set of rids that may be returned, before any vector is
compared: a tenant's search can only ever see its own rows, and a filter
that keeps few rows still gets a full top k.

Metadata keys are columns over the rid space (12 bytes a row for each key in
use): a number column (NaN where the row's value is not a number) and a
string column (codes, -1 where it is not a string). The rules a filter
follows are filters.matches(); the vectorised checks here give its answers
(tests/rag_engine/test_vector_local.py checks them against it), and anything
they do not cover exactly is handed to matches() itself."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real

import numpy as np

from services.rag_engine.domain import Scope
from services.rag_engine.filters import Equals, Filter, Range, matches

NO_CODE = -1
# Integers beyond 2**53 lose digits as float64.
EXACT_INTEGERS = 2**53


class _Rids:
    """A growing array of rids (a posting list), appended in rid order."""

    def __init__(self) -> None:
        self._rids = np.empty(16, dtype=np.int64)
        self._size = 0

    def append(self, rid: int) -> None:
        if self._size == len(self._rids):
            self._rids = np.resize(self._rids, 2 * len(self._rids))
        self._rids[self._size] = rid
        self._size += 1

    def view(self) -> np.ndarray:
        return self._rids[:self._size]

    def keep(self, live: np.ndarray) -> None:
        """Drops the rids no longer live."""
        kept = self.view()[live[self.view()]]
        self._rids = np.resize(kept, max(16, len(kept)))
        self._size = len(kept)


class _Column:
    """One metadata key's values over the rid space."""

    def __init__(self, capacity: int) -> None:
        self.numbers = np.full(capacity, np.nan)
        self.strings = np.full(capacity, NO_CODE, dtype=np.int32)
        self.codes: dict[str, int] = {}
        self.words: list[str] = []
        # Integers float64 would round, by rid: their equality is checked on the integer.
        self.large: dict[int, int] = {}

    def grow(self, capacity: int) -> None:
        old = len(self.numbers)
        self.numbers = np.resize(self.numbers, capacity)
        self.numbers[old:] = np.nan
        self.strings = np.resize(self.strings, capacity)
        self.strings[old:] = NO_CODE

    def set(self, rid: int, value) -> None:
        if isinstance(value, str):
            code = self.codes.get(value)
            if code is None:
                code = self.codes[value] = len(self.words)
                self.words.append(value)
            self.strings[rid] = code
        else:
            self.numbers[rid] = float(value)
            if isinstance(value, int) and abs(value) > EXACT_INTEGERS:
                self.large[rid] = value

    def value(self, rid: int):
        """The stored value (as typed() stored it), or None."""
        if self.strings[rid] != NO_CODE:
            return self.words[self.strings[rid]]
        if not math.isnan(self.numbers[rid]):
            return self.large.get(rid, float(self.numbers[rid]))
        return None

    def equal(self, rids: np.ndarray, wanted) -> np.ndarray | None:
        """Which rids hold a value == wanted; None when only matches() can say."""
        if isinstance(wanted, str):
            code = self.codes.get(wanted)
            return np.zeros(len(rids), bool) if code is None else self.strings[rids] == code
        if not (isinstance(wanted, Real) and _float_exact(wanted)):
            return None
        equal = self.numbers[rids] == float(wanted)
        if self.large:
            for position in np.flatnonzero(equal):
                rid = int(rids[position])
                if rid in self.large:
                    equal[position] = self.large[rid] == wanted
        return equal

    def within(self, rids: np.ndarray, condition: Range) -> np.ndarray | None:
        bounds = (condition.gt, condition.gte, condition.lt, condition.lte)
        if not all(b is None or (isinstance(b, Real) and _float_exact(b)) for b in bounds):
            return None
        numbers = self.numbers[rids]
        # NaN (no number) fails every comparison, as matches() fails a text value.
        passing = ~np.isnan(numbers)
        for bound, compare in zip(bounds, (np.greater, np.greater_equal, np.less, np.less_equal)):
            if bound is not None:
                passing &= compare(numbers, float(bound))
        return passing


def _float_exact(number: Real) -> bool:
    try:
        return float(number) == number
    except (OverflowError, TypeError, ValueError):
        return False


class Attributes:
    """Thread-safe: the writer thread adds and removes rows while searches
    select. Every method holds one lock, for a millisecond or so."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._capacity = 0
        self._live = np.zeros(0, bool)
        self._tenant_codes: dict[str, int] = {}
        self._kb_codes: dict[str, int] = {}
        # (tenant code, kb code) -> the rids ever added there; the live bitmap says which still are.
        self._postings: dict[tuple[int, int], _Rids] = {}
        self._kbs_of_tenant: dict[int, list[int]] = {}
        self._columns: dict[str, _Column] = {}

    def _grow(self, rid: int) -> None:
        if rid < self._capacity:
            return
        capacity = max(1024, 2 * self._capacity, rid + 1)
        self._live = np.resize(self._live, capacity)
        self._live[self._capacity:] = False
        for column in self._columns.values():
            column.grow(capacity)
        self._capacity = capacity

    def add(self, rows: Iterable[tuple[int, str, str, Mapping[str, object]]]) -> None:
        """(rid, tenant id, kb id, metadata as typed() stored it) of new rows."""
        with self._lock:
            for rid, tenant_id, kb_id, metadata in rows:
                self._grow(rid)
                tenant = self._tenant_codes.setdefault(tenant_id, len(self._tenant_codes))
                kb = self._kb_codes.setdefault(kb_id, len(self._kb_codes))
                if (tenant, kb) not in self._postings:
                    self._postings[tenant, kb] = _Rids()
                    self._kbs_of_tenant.setdefault(tenant, []).append(kb)
                self._postings[tenant, kb].append(rid)
                for key, value in metadata.items():
                    if key not in self._columns:
                        self._columns[key] = _Column(self._capacity)
                    self._columns[key].set(rid, value)
                self._live[rid] = True

    def remove(self, rids: Sequence[int]) -> None:
        """Tombstones: the rows stay in the columns and the ANN graph, but no
        selection includes them again (rids are never reused)."""
        with self._lock:
            if len(rids):
                self._live[np.asarray(rids, dtype=np.int64)] = False

    def live(self, rids: np.ndarray) -> np.ndarray:
        with self._lock:
            return bits_at(self._live, rids)

    def live_count(self) -> int:
        with self._lock:
            return int(np.count_nonzero(self._live))

    def select(self, scope: Scope, filters: Sequence[Filter]) -> np.ndarray:
        """The live rids in the scope whose metadata passes every filter."""
        with self._lock:
            tenant = self._tenant_codes.get(scope.tenant_id)
            if tenant is None:
                return np.zeros(0, np.int64)
            kbs = self._kbs_of_tenant.get(tenant, [])
            if scope.kb_ids:
                wanted = {self._kb_codes.get(kb_id) for kb_id in scope.kb_ids}
                kbs = [kb for kb in kbs if kb in wanted]
            parts = []
            for kb in kbs:
                posting = self._postings[tenant, kb]
                live = self._live[posting.view()]
                if np.count_nonzero(live) * 2 < len(live):
                    posting.keep(self._live)
                    parts.append(posting.view())
                else:
                    parts.append(posting.view()[live])
            rids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            return self._passing(rids, filters)

    def passing(self, rids: np.ndarray, filters: Sequence[Filter]) -> np.ndarray:
        """Those of the rids that are live and whose metadata passes every filter."""
        with self._lock:
            return self._passing(rids[bits_at(self._live, rids)], filters)

    def _passing(self, rids: np.ndarray, filters: Sequence[Filter]) -> np.ndarray:
        for condition in filters:
            if not len(rids):
                break
            rids = rids[self._passes(condition, rids)]
        return rids

    def _passes(self, condition: Filter, rids: np.ndarray) -> np.ndarray:
        column = self._columns.get(condition.field)
        if column is None:
            return np.zeros(len(rids), bool)
        if isinstance(condition, Range):
            passing = column.within(rids, condition)
        else:
            values = (condition.value,) if isinstance(condition, Equals) else tuple(condition.values)
            passing = np.zeros(len(rids), bool)
            for wanted in values:
                equal = column.equal(rids, wanted)
                if equal is None:
                    passing = None
                    break
                passing |= equal
        if passing is None:
            passing = np.array([_matches(condition, column.value(int(rid))) for rid in rids], dtype=bool)
        return passing


def _matches(condition: Filter, value) -> bool:
    return value is not None and matches(condition, {condition.field: value})


def bits_at(bitmap: np.ndarray, rids: np.ndarray) -> np.ndarray:
    """bitmap[rids], False for rids past its end."""
    inside = rids < len(bitmap)
    result = np.zeros(len(rids), bool)
    result[inside] = bitmap[rids[inside]]
    return result


def bitmap(rids: np.ndarray, size: int) -> np.ndarray:
    """A bool array of `size` (at least past the largest rid), True at the rids."""
    allowed = np.zeros(max(size, int(rids.max()) + 1 if len(rids) else 0), bool)
    allowed[rids] = True
    return allowed

