"""Exact or HNSW, and with what beam: a graph walk visits about `ef` nodes
whatever the filter keeps, so its recall falls as the passing share falls
(faiss HNSW at ef 128, 20,000 vectors: 0.999 at 20 % passing, 0.93 at 10 %,
0.5 at 1 %; docs/design/embedded-vector-index.md), while comparing the query
with every passing vector costs 0.1-0.4 µs a row and is exact."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    exact: bool
    ef: int = 0


@dataclass(frozen=True)
class SearchPlanner:
    # Up to this many passing rows an exact search takes a few ms at most.
    exact_max_rows: int = 10_000
    # Under this share of the index passing, HNSW recall drops below 0.98 even at a wide beam.
    exact_below_share: float = 0.1
    # From here HNSW at the normal beam keeps recall@10 at 0.999.
    narrow_from_share: float = 0.2
    # The beam (SAGEMESH_HNSW_EF_SEARCH). At 100k chunks (bench-retrieval) 128 found 0.888 of the
    # exact top 10 with the vector search at 3.6 ms; 512 found 0.968 at 4.3 ms.
    ef: int = 512
    # Between the two shares: recall@10 0.982 at 10 %, 2.6 ms at 20,000 vectors.
    wide_ef: int = 512

    def plan(self, passing: int, indexed: int, k: int) -> Plan:
        """`indexed` counts deleted rows too: the graph walk meets them all the same."""
        share = passing / indexed if indexed else 0.0
        if passing <= self.exact_max_rows or share < self.exact_below_share:
            return Plan(exact=True)
        return Plan(exact=False, ef=max(k, self.ef if share >= self.narrow_from_share else self.wide_ef))
