"""The approximate-nearest-neighbour index the local vector index searches
with, as an interface: ann_faiss.py implements it. Ids are the chunk store's
rids; vectors are L2-normalised, so inner product is cosine similarity.

An AnnIndex takes adds from one thread at a time while any number of threads
search; it never deletes (a deleted row is left out by the `allowed` bitmap of
every search, and AUTOINCREMENT rids are never reused)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class UnusableSnapshot(Exception):
    """A snapshot that cannot serve this index: missing, corrupt, or of another shape."""


class AnnIndex(Protocol):
    @property
    def size(self) -> int:
        """Vectors held, deleted rows included."""

    @property
    def max_id(self) -> int:
        """The largest id held (0 when empty): ids are added in increasing order,
        so every row past it is still to be added."""

    def ids(self) -> np.ndarray: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """ids (int64, increasing, past max_id) and their normalised float32 vectors."""

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray, ef: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, similarities) of the nearest k among the ids where `allowed`
        (a bool array indexed by id) is True, walking the graph with beam width ef."""

    def exact(self, query: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As search, by comparing the query with every allowed vector."""

    def save(self, path: Path) -> None:
        """Writes a snapshot that replaces `path` whole or not at all."""


class AnnFormat(Protocol):
    """Makes AnnIndexes of one kind: new ones, and ones loaded from snapshots."""

    def new(self, dimension: int) -> AnnIndex: ...

    def load(self, path: Path, dimension: int) -> AnnIndex:
        """Raises UnusableSnapshot for a snapshot it cannot use."""
