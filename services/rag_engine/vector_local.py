"""VectorIndex in this process, in one directory: the default.

  chunks.sqlite         the chunk records and their vectors (chunk_store.py): the truth
  hnsw-<store id>.faiss  a snapshot of the ANN index (ann_faiss.py), rebuilt when unusable
  lock                  held while a process has the directory open

A write commits to SQLite, then marks the rows it replaced as deleted in the
attributes (attributes.py) and puts its new rows in the unindexed set, where
searches compare them exactly: a written chunk is found at once. A thread
adds the unindexed rows to the ANN index a slice at a time and snapshots it
every `snapshot_every_rows` rows or `snapshot_every_seconds`, and on close.

At start the snapshot is loaded (a new index when it is missing, unreadable
or of another shape) and every row past the largest rid it holds is
unindexed again, so a kill at any moment loses nothing that committed and
doubles nothing: SQLite holds each (tenant, chunk id) once.

Searches select the allowed rids first (tenant, knowledge bases, metadata
filters), then search only those: exactly when few pass, else the HNSW
graph with the selection as a bitmap (search_plan.py)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.rag_engine.ann import AnnFormat, AnnIndex, UnusableSnapshot
from services.rag_engine.attributes import Attributes, bitmap, bits_at
from services.rag_engine.chunk_limits import within_limits
from services.rag_engine.chunk_store import ChunkStore, stored_metadata
from services.rag_engine.domain import Chunk, DocumentKey, Scope
from services.rag_engine.filters import Filter
from services.rag_engine.search_plan import SearchPlanner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalIndexOptions:
    # A snapshot after this many rows were added to the ANN index: a restart
    # adds at most these again (about 0.5 ms a row at 384 dimensions).
    snapshot_every_rows: int = 10_000
    # ... or after this long with rows added since the last one.
    snapshot_every_seconds: float = 600.0
    # Rows added to the ANN index under one hold of its write lock: about
    # 10 ms, so searches never wait long.
    add_slice: int = 16
    # A snapshot holding more deleted rows than this share is dropped at start
    # and the index rebuilt: deleted rows cost memory and slow the graph walk.
    rebuild_above_deleted_share: float = 0.2
    planner: SearchPlanner = field(default_factory=SearchPlanner)
    # Threads for searches and reads; faiss and SQLite release the GIL.
    read_threads: int = 2


@dataclass(frozen=True)
class StartUp:
    """What an index found when it opened."""

    chunks: int
    # Rows of the ANN snapshot it loaded (deleted ones included), 0 when it made a new one.
    from_snapshot: int
    # Rows past the snapshot, compared exactly until the indexer has added them.
    to_add: int


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero), so inner product is cosine."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


class _Unindexed:
    """Rows committed but not yet in the ANN index, as blocks of (rids,
    normalised vectors) in rid order. The blocks are replaced, never changed,
    so a search can hold on to what it read while the indexer moves on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    def append(self, rids: np.ndarray, vectors: np.ndarray) -> None:
        with self._lock:
            self._blocks = (*self._blocks, (rids, vectors))

    def blocks(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        return self._blocks

    def first(self, most: int) -> tuple[np.ndarray, np.ndarray] | None:
        blocks = self._blocks
        if not blocks:
            return None
        rids, vectors = blocks[0]
        return rids[:most], vectors[:most]

    def drop(self, count: int) -> None:
        """Drops the first `count` rows: the ones first() gave, now in the ANN index."""
        with self._lock:
            rids, vectors = self._blocks[0]
            rest = ((rids[count:], vectors[count:]),) if count < len(rids) else ()
            self._blocks = (*rest, *self._blocks[1:])

    def __len__(self) -> int:
        return sum(len(rids) for rids, _ in self._blocks)


def _locked(path: Path) -> int:
    """An exclusive lock on `path`, held until the descriptor closes (or the process dies)."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RuntimeError(f"the vector index at {path.parent} is open in another process") from None
    return descriptor


def _top(ids: np.ndarray, similarities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if len(ids) > k:
        best = np.argpartition(-similarities, k - 1)[:k]
        ids, similarities = ids[best], similarities[best]
    return ids, similarities


class LocalVectorIndex:
    def __init__(self, directory: Path, dimension: int, model: str = "", ann: AnnFormat | None = None,
                 options: LocalIndexOptions | None = None) -> None:
        if ann is None:
            from services.rag_engine.ann_faiss import FaissHnsw

            ann = FaissHnsw()
        self.directory = directory
        self.dimension = dimension
        self._options = options or LocalIndexOptions()
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_descriptor = _locked(directory / "lock")
        store = None
        try:
            self._store = store = ChunkStore(directory / "chunks.sqlite", dimension, model)
            self._attributes = Attributes()
            self._attributes.add((row.rid, row.tenant_id, row.kb_id, row.metadata)
                                 for row in self._store.attribute_rows())
            self._snapshot_path = directory / f"hnsw-{self._store.store_id}.faiss"
            self._remove_leftovers()
            self._ann = self._loaded(ann)
            self._unindexed = _Unindexed()
            for rids, vectors in self._store.vectors_after(self._ann.max_id):
                self._unindexed.append(rids, normalised(vectors))
        except BaseException:
            if store is not None:
                store.close()
            os.close(self._lock_descriptor)
            raise
        self.start_up = StartUp(self._attributes.live_count(), self._ann.size, len(self._unindexed))
        log.info("vector index at %s: %s", directory, self.start_up)
        self._added_since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._work = threading.Event()
        self._closing = False
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="vectors-write")
        self._readers = ThreadPoolExecutor(self._options.read_threads, thread_name_prefix="vectors-read")
        self._indexer = threading.Thread(target=self._index_in_background, name="vectors-index", daemon=True)
        self._indexer.start()

    def _remove_leftovers(self) -> None:
        """Half-written snapshots, and snapshots of a store this directory no longer holds."""
        for path in self.directory.glob("hnsw-*.faiss*"):
            if path != self._snapshot_path:
                path.unlink()

    def _loaded(self, ann: AnnFormat) -> AnnIndex:
        try:
            index = ann.load(self._snapshot_path, self.dimension)
        except UnusableSnapshot as reason:
            if self._snapshot_path.exists():
                log.warning("rebuilding the vector index's ANN snapshot: %s", reason)
            return ann.new(self.dimension)
        deleted = index.size - int(np.count_nonzero(self._attributes.live(index.ids())))
        if deleted > self._options.rebuild_above_deleted_share * index.size:
            log.info("rebuilding the vector index's ANN index: %d of its %d rows were deleted", deleted, index.size)
            return ann.new(self.dimension)
        return index

    # -- the indexer thread

    def _index_in_background(self) -> None:
        try:
            while not self._closing:
                taken = self._unindexed.first(self._options.add_slice)
                if taken is None:
                    if self._snapshot_due():
                        self._snapshot()
                    self._work.wait(timeout=min(self._options.snapshot_every_seconds, 60.0))
                    self._work.clear()
                    continue
                rids, vectors = taken
                # A row deleted before it was added needs no place in the graph.
                live = self._attributes.live(rids)
                self._ann.add(rids[live], vectors[live])
                self._unindexed.drop(len(rids))
                self._added_since_snapshot += int(np.count_nonzero(live))
                if self._snapshot_due():
                    self._snapshot()
        except Exception:
            # Searches stay right: the rows left unindexed are compared exactly.
            log.exception("the vector index stopped adding rows to its ANN index")

    def _snapshot_due(self) -> bool:
        return self._added_since_snapshot > 0 and (
            self._added_since_snapshot >= self._options.snapshot_every_rows
            or time.monotonic() - self._last_snapshot >= self._options.snapshot_every_seconds)

    def _snapshot(self) -> None:
        """Only ever on the thread that adds, so the snapshot is whole rid prefix."""
        started = time.monotonic()
        self._ann.save(self._snapshot_path)
        log.info("vector index snapshot: %d rows in %.2f s", self._ann.size, time.monotonic() - started)
        self._added_since_snapshot = 0
        self._last_snapshot = time.monotonic()

    # -- VectorIndex

    async def _run(self, executor: ThreadPoolExecutor, function, *args):
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)

    def _vectors(self, vectors: Sequence[Sequence[float]], rows: int) -> np.ndarray:
        matrix = np.asarray(vectors, dtype=np.float32).reshape(rows, -1) if rows else np.zeros((0, self.dimension), np.float32)
        if matrix.shape[1] != self.dimension:
            raise ValueError(f"{matrix.shape[1]}-dimensional vectors for an index of {self.dimension}-dimensional "
                             "ones: they come from another embedding model")
        return matrix

    async def upsert(
        self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]], replacing: Sequence[DocumentKey] = ()
    ) -> None:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks with {len(vectors)} vectors")
        matrix = self._vectors(vectors, len(chunks))
        if chunks or replacing:
            await self._run(self._writer, self._write, [within_limits(c) for c in chunks], matrix, replacing)

    def _write(self, chunks: list[Chunk], vectors: np.ndarray, replacing: Sequence[DocumentKey]) -> None:
        written = self._store.write(chunks, vectors, replacing)
        self._attributes.remove(written.removed)
        self._attributes.add((rid, chunks[at].tenant_id, chunks[at].kb_id, stored_metadata(chunks[at]))
                             for rid, at in written.added)
        if written.added:
            rids = np.array([rid for rid, _ in written.added], dtype=np.int64)
            self._unindexed.append(rids, normalised(vectors[[at for _, at in written.added]]))
            self._work.set()

    async def search(
        self, vector: Sequence[float], scope: Scope, filters: Sequence[Filter], limit: int
    ) -> list[tuple[str, float]]:
        query = normalised(self._vectors([vector], 1))[0]
        return await self._run(self._readers, self._search, query, scope, filters, limit)

    def _search(self, query: np.ndarray, scope: Scope, filters: Sequence[Filter], limit: int) -> list[tuple[str, float]]:
        selected = self._attributes.select(scope, filters)
        if not len(selected) or limit <= 0:
            return []
        allowed = bitmap(selected, 0)
        # The unindexed rows are read before the ANN index: a row the indexer
        # moves in between is then seen twice (and counted once), never missed.
        unindexed = self._unindexed.blocks()
        found_ids, found_similarities = [], []
        if self._ann.size:
            plan = self._options.planner.plan(len(selected), self._ann.size, limit)
            ids, similarities = (self._ann.exact(query, limit, allowed) if plan.exact
                                 else self._ann.search(query, limit, allowed, plan.ef))
            found_ids.append(ids)
            found_similarities.append(similarities)
        for rids, vectors in unindexed:
            passing = bits_at(allowed, rids)
            if passing.any():
                ids, similarities = _top(rids[passing], vectors[passing] @ query, limit)
                found_ids.append(ids)
                found_similarities.append(similarities)
        if not found_ids:
            return []
        ids, similarities = (np.concatenate(parts) for parts in (found_ids, found_similarities))
        # A row found twice (see above) takes one place.
        ids, first = np.unique(ids, return_index=True)
        ids, _ = _top(ids, similarities[first], limit)
        return self._scored(query, ids)

    def _scored(self, query: np.ndarray, rids: np.ndarray) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity) of the rids still stored, best first.
        Scored again from the stored float32 vectors: the ANN index keeps fp16,
        and a chunk's score should not depend on where it was found."""
        identified = self._store.identified(rids.tolist())
        if not identified:
            return []
        chunk_ids = [chunk_id for chunk_id, _ in identified.values()]
        similarities = normalised(np.stack([vector for _, vector in identified.values()])) @ query
        order = np.argsort(-similarities, kind="stable")
        return [(chunk_ids[i], float(similarities[i])) for i in order]

    async def passing(self, tenant_id: str, chunk_ids: Sequence[str], filters: Sequence[Filter]) -> set[str]:
        if not chunk_ids:
            return set()
        return await self._run(self._readers, self._passing, tenant_id, chunk_ids, filters)

    def _passing(self, tenant_id: str, chunk_ids: Sequence[str], filters: Sequence[Filter]) -> set[str]:
        stored = self._store.rids(tenant_id, chunk_ids)
        rids = np.fromiter(stored, dtype=np.int64, count=len(stored))
        return {stored[int(rid)] for rid in self._attributes.passing(rids, filters)}

    async def fetch(self, tenant_id: str, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        if not chunk_ids:
            return {}
        return await self._run(self._readers, self._store.fetch, tenant_id, chunk_ids)

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> int:
        return await self._run(self._writer, self._delete, tenant_id, kb_id, document_id)

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> int:
        return await self._run(self._writer, self._delete, tenant_id, kb_id, None)

    def _delete(self, tenant_id: str, kb_id: str, document_id: str | None) -> int:
        rids = self._store.delete(tenant_id, kb_id, document_id)
        self._attributes.remove(rids)
        return len(rids)

    async def count(self, tenant_id: str, kb_id: str, document_id: str) -> int:
        return await self._run(self._readers, self._store.count, tenant_id, kb_id, document_id)

    async def any_record(self) -> tuple[Chunk, list[float]] | None:
        return await self._run(self._readers, self._store.any_record)

    @property
    def unindexed_rows(self) -> int:
        """Rows written but not yet in the ANN index (compared exactly meanwhile)."""
        return len(self._unindexed)

    @property
    def indexed_rows(self) -> int:
        """Rows in the ANN index, deleted ones included."""
        return self._ann.size

    def is_empty(self) -> bool:
        return self._attributes.live_count() == 0

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Waits for the writes under way, stops the indexer, snapshots what it added."""
        self._writer.shutdown(wait=True)
        self._closing = True
        self._work.set()
        self._indexer.join()
        self._readers.shutdown(wait=True)
        if self._added_since_snapshot:
            self._snapshot()
        self._store.close()
        os.close(self._lock_descriptor)
