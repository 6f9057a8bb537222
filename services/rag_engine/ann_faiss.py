"""AnnIndex on faiss (the only module that imports it): IndexIDMap over
IndexHNSWSQ, fp16 storage (912 bytes a 384-dimensional vector, recall equal
to float32's), inner product on normalised vectors.

Searches are pre-filtered: a bitmap of the allowed rows goes into faiss, which
tests it per candidate in C++. Both the graph walk and the exact search run
on the HNSW index's own positions (the IDMap maps them to rids), so the
exact path is a scan of the same fp16 storage and costs no memory."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import faiss
import numpy as np

from services.rag_engine.ann import UnusableSnapshot

# Neighbours per node: 16 is faiss's and Milvus's usual; recall@10 was 1.0 at ef 128 (the design).
M = 16
# The build beam, as the Milvus HNSW index had it. On 4,000 clustered
# 64-dimensional vectors added a slice at a time, search ef 128: recall@10
# 0.96 at faiss's default 40, 0.977 at 100, 0.986 at 200; an add cost 0.02,
# 0.04 and 0.09 ms a vector there (0.04 / 0.07 / 0.12 at 384 dimensions).
EF_CONSTRUCTION = 200


class _SharedLock:
    """Many searches at once, or one add: faiss searches are thread-safe, adds are not."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writing = False

    def shared(self) -> _Held:
        return _Held(self, exclusive=False)

    def exclusive(self) -> _Held:
        return _Held(self, exclusive=True)

    def acquire(self, exclusive: bool) -> None:
        with self._condition:
            while self._writing or (exclusive and self._readers):
                self._condition.wait()
            if exclusive:
                self._writing = True
            else:
                self._readers += 1

    def release(self, exclusive: bool) -> None:
        with self._condition:
            if exclusive:
                self._writing = False
            else:
                self._readers -= 1
            self._condition.notify_all()


class _Held:
    def __init__(self, lock: _SharedLock, exclusive: bool) -> None:
        self._lock, self._exclusive = lock, exclusive

    def __enter__(self) -> None:
        self._lock.acquire(self._exclusive)

    def __exit__(self, *_) -> None:
        self._lock.release(self._exclusive)


class FaissAnn:
    def __init__(self, index: faiss.IndexIDMap) -> None:
        # The IDMap owns the HNSW index; the downcast views below must not outlive it.
        self._index = index
        self._hnsw = faiss.downcast_index(index.index)
        self._storage = faiss.downcast_index(self._hnsw.storage)
        # Position in the HNSW index -> rid, increasing (adds come in rid order).
        self._rids = faiss.vector_to_array(index.id_map).astype(np.int64)
        self._lock = _SharedLock()

    @property
    def size(self) -> int:
        return len(self._rids)

    @property
    def max_id(self) -> int:
        return int(self._rids[-1]) if len(self._rids) else 0

    def ids(self) -> np.ndarray:
        return self._rids

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        if ids[0] <= self.max_id or np.any(np.diff(ids) <= 0):
            raise ValueError("ids must be added in increasing order, past the largest held")
        with self._lock.exclusive():
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
            self._rids = np.concatenate([self._rids, ids.astype(np.int64)])

    def _selector(self, allowed: np.ndarray) -> tuple[faiss.IDSelectorBitmap, np.ndarray]:
        """A selector over HNSW positions, and the bits it points into (keep them alive)."""
        rids = self._rids
        positions = np.zeros(len(rids), bool)
        inside = rids < len(allowed)
        positions[inside] = allowed[rids[inside]]
        bits = np.packbits(positions, bitorder="little")
        return faiss.IDSelectorBitmap(len(rids), faiss.swig_ptr(bits)), bits

    def _results(self, similarities: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = positions[0] >= 0
        return self._rids[positions[0][found]], similarities[0][found]

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray, ef: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock.shared():
            if not self.size:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            selector, bits = self._selector(allowed)
            params = faiss.SearchParametersHNSW()
            params.sel = selector
            params.efSearch = ef
            similarities, positions = self._hnsw.search(_row(query), k, params=params)
            del bits
            return self._results(similarities, positions)

    def exact(self, query: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock.shared():
            if not self.size:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            selector, bits = self._selector(allowed)
            params = faiss.SearchParameters()
            params.sel = selector
            similarities, positions = self._storage.search(_row(query), k, params=params)
            del bits
            return self._results(similarities, positions)

    def save(self, path: Path) -> None:
        # Shared: searches go on while the snapshot is written, adds wait.
        with self._lock.shared():
            write_atomically(path, lambda temporary: faiss.write_index(self._index, str(temporary)))


def _row(query: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)


def write_atomically(path: Path, write) -> None:
    """write(temporary path), then the file takes `path`'s place whole: a
    kill leaves the old file or the new one, never a part of either."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    with open(temporary, "rb") as written:
        os.fsync(written.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class FaissHnsw:
    """AnnFormat: new and loaded FaissAnn indexes."""

    def __init__(self, m: int = M, ef_construction: int = EF_CONSTRUCTION) -> None:
        # One thread per call: the embedding model needs the other core, and
        # concurrent searches already run on threads of their own.
        faiss.omp_set_num_threads(1)
        self.m = m
        self.ef_construction = ef_construction

    def new(self, dimension: int) -> FaissAnn:
        hnsw = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_fp16, self.m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.ef_construction
        # faiss's Python wrapper keeps `hnsw` alive as long as the IDMap.
        return FaissAnn(faiss.IndexIDMap(hnsw))

    def load(self, path: Path, dimension: int) -> FaissAnn:
        if not path.exists():
            raise UnusableSnapshot(f"{path} does not exist")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            raise UnusableSnapshot(f"{path} cannot be read: {str(error).splitlines()[-1]}") from error
        if not isinstance(index, faiss.IndexIDMap) or not isinstance(faiss.downcast_index(index.index),
                                                                     faiss.IndexHNSWSQ):
            raise UnusableSnapshot(f"{path} is not an IDMap over HNSW-SQ")
        if index.d != dimension or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise UnusableSnapshot(f"{path} holds {index.d}-dimensional vectors by metric {index.metric_type}, "
                                   f"not {dimension} by inner product")
        ann = FaissAnn(index)
        if index.ntotal != ann.size or np.any(np.diff(ann.ids()) <= 0):
            raise UnusableSnapshot(f"{path}'s ids are not one increasing run")
        return ann
