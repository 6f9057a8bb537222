"""The local vector index's source of truth: chunk records and their vectors
in one SQLite file. Everything else the index keeps (the HNSW graph, the
attributes searches select on) is rebuilt from here, so a write is done when
its transaction commits, and a kill at any moment leaves the last commit.

Every chunk row gets a `rid`, the id the ANN index knows it by. AUTOINCREMENT
never hands a rid out twice, so an ANN entry left behind by a deleted or
replaced chunk can never come back as another chunk."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.rag_engine.domain import Chunk, DocumentKey, by_knowledge_base
from services.rag_engine.filters import typed

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
# SQLite's default limit on host parameters in one statement is 999 on old builds.
MOST_PARAMETERS = 900
# Rows read per step when the whole table is scanned (start-up).
SCAN_ROWS = 2_000
# Each connection's page cache, in KiB (negative: KiB rather than pages). One
# writer and two readers: under 64 MB together.
CACHE_KIB = 16_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    kb_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    chunk_id TEXT NOT NULL,
    text TEXT NOT NULL,
    title TEXT NOT NULL,
    headings TEXT NOT NULL,   -- JSON array
    page INTEGER NOT NULL,
    position INTEGER NOT NULL,
    filename TEXT NOT NULL,
    location TEXT NOT NULL,
    metadata TEXT NOT NULL,   -- JSON object of typed() values
    vector BLOB NOT NULL,     -- float32, as the embedder made it
    UNIQUE (tenant_id, chunk_id)
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks (tenant_id, kb_id, document_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_RECORD = "tenant_id, kb_id, document_id, chunk_id, text, title, headings, page, position, filename, location, metadata"


@dataclass(frozen=True)
class Written:
    """What one write changed: the rids it removed, and the rows it added, in
    rid order, as (rid, the chunk's position in the write)."""

    removed: list[int]
    added: list[tuple[int, int]]


@dataclass(frozen=True)
class AttributeRow:
    rid: int
    tenant_id: str
    kb_id: str
    metadata: dict


def _batches(values: Sequence, size: int = MOST_PARAMETERS) -> Iterator[Sequence]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _marks(count: int) -> str:
    return ",".join("?" * count)


def stored_metadata(chunk: Chunk) -> dict:
    return {key: typed(value) for key, value in chunk.metadata.items()}


def _chunk(row: Sequence) -> Chunk:
    tenant_id, kb_id, document_id, chunk_id, text, title, headings, page, position, filename, location, metadata = row
    return Chunk(
        tenant_id=tenant_id, kb_id=kb_id, document_id=document_id, chunk_id=chunk_id, text=text, title=title,
        headings=tuple(json.loads(headings)), page=page, position=position,
        # As Milvus gives them back: the typed value as text ("2023" stays "2023").
        metadata={key: str(value) for key, value in json.loads(metadata).items()},
        filename=filename, location=location,
    )


class ChunkStore:
    """One writer connection, used by one thread at a time (the index's writer
    thread), and a reader connection per reading thread: WAL lets them read
    while a write is under way."""

    def __init__(self, path: Path, dimension: int, model: str = "") -> None:
        self.path = path
        self.dimension = dimension
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._readers_lock = threading.Lock()
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        self.store_id = self._checked_meta(model)

    def _connect(self) -> sqlite3.Connection:
        # Autocommit: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives the process being killed (the WAL is in the
        # OS's hands); only a power loss can take the last commits back.
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
            with self._readers_lock:
                self._readers.append(connection)
        return connection

    def _checked_meta(self, model: str) -> str:
        """Refuses a store written for vectors of another size; records the
        size and model in a new one. Returns the store's id, which names its
        ANN snapshots: a snapshot of another store is never taken for this one's."""
        with self._transaction() as db:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                meta = {"schema_version": SCHEMA_VERSION, "dimension": str(self.dimension), "model": model,
                        "metric": "cosine", "store_id": uuid.uuid4().hex}
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
            elif model and not meta["model"]:
                db.execute("UPDATE meta SET value = ? WHERE key = 'model'", (model,))
        if meta["schema_version"] != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema version {meta['schema_version']}, this code reads "
                               f"{SCHEMA_VERSION}")
        if int(meta["dimension"]) != self.dimension:
            raise ValueError(
                f"the vector index at {self.path.parent} holds {meta['dimension']}-dimensional vectors, but the "
                f"embedding model makes {self.dimension}: use the model that indexed it, or a new collection "
                "(SAGEMESH_VECTOR_COLLECTION) and index the documents again"
            )
        if model and meta["model"] and meta["model"] != model:
            # Not refused on the name alone: an OpenAI-compatible endpoint may
            # serve the very model under a name of its own. The engine embeds a
            # stored chunk again at start (check_stored_vectors) and refuses
            # vectors that do not land where they were.
            log.warning("the vector index at %s was built by the embedding model %r, now served by %r",
                        self.path.parent, meta["model"], model)
        return meta["store_id"]

    def _transaction(self):
        return _Transaction(self._writer)

    def write(self, chunks: Sequence[Chunk], vectors: np.ndarray, replacing: Sequence[DocumentKey]) -> Written:
        """One transaction: the documents in `replacing` go, then each chunk
        replaces the tenant's chunk of its id (under a new rid)."""
        removed: list[int] = []
        added: list[tuple[int, int]] = []
        with self._transaction() as db:
            for (tenant_id, kb_id), document_ids in by_knowledge_base(replacing).items():
                for batch in _batches(document_ids):
                    removed += [rid for (rid,) in db.execute(
                        f"DELETE FROM chunks WHERE tenant_id = ? AND kb_id = ? AND document_id IN ({_marks(len(batch))}) "
                        "RETURNING rid", (tenant_id, kb_id, *batch)).fetchall()]
            for position, (chunk, vector) in enumerate(zip(chunks, vectors)):
                removed += [rid for (rid,) in db.execute(
                    "DELETE FROM chunks WHERE tenant_id = ? AND chunk_id = ? RETURNING rid",
                    (chunk.tenant_id, chunk.chunk_id)).fetchall()]
                (rid,) = db.execute(
                    f"INSERT INTO chunks ({_RECORD}, vector) VALUES ({_marks(13)}) RETURNING rid",
                    (chunk.tenant_id, chunk.kb_id, chunk.document_id, chunk.chunk_id, chunk.text, chunk.title,
                     json.dumps(list(chunk.headings), ensure_ascii=False), chunk.page, chunk.position,
                     chunk.filename, chunk.location, json.dumps(stored_metadata(chunk), ensure_ascii=False),
                     np.asarray(vector, dtype="<f4").tobytes()),
                ).fetchone()
                added.append((rid, position))
        # A chunk id written twice in one call: only its last row stands.
        gone = set(removed)
        return Written(removed, [(rid, position) for rid, position in added if rid not in gone])

    def delete(self, tenant_id: str, kb_id: str, document_id: str | None = None) -> list[int]:
        """The rids of a document's chunks (of the whole base without one), deleted."""
        with self._transaction() as db:
            if document_id is None:
                rows = db.execute("DELETE FROM chunks WHERE tenant_id = ? AND kb_id = ? RETURNING rid",
                                  (tenant_id, kb_id))
            else:
                rows = db.execute(
                    "DELETE FROM chunks WHERE tenant_id = ? AND kb_id = ? AND document_id = ? RETURNING rid",
                    (tenant_id, kb_id, document_id))
            return [rid for (rid,) in rows.fetchall()]

    def count(self, tenant_id: str, kb_id: str, document_id: str) -> int:
        (count,) = self._reader().execute(
            "SELECT count(*) FROM chunks WHERE tenant_id = ? AND kb_id = ? AND document_id = ?",
            (tenant_id, kb_id, document_id)).fetchone()
        return count

    def total(self) -> int:
        (count,) = self._reader().execute("SELECT count(*) FROM chunks").fetchone()
        return count

    def fetch(self, tenant_id: str, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        found: dict[str, Chunk] = {}
        for batch in _batches(list(chunk_ids)):
            rows = self._reader().execute(
                f"SELECT {_RECORD} FROM chunks WHERE tenant_id = ? AND chunk_id IN ({_marks(len(batch))})",
                (tenant_id, *batch))
            found.update((row[3], _chunk(row)) for row in rows)
        return found

    def rids(self, tenant_id: str, chunk_ids: Sequence[str]) -> dict[int, str]:
        """rid -> chunk id, for those of the tenant's chunk ids that exist."""
        found: dict[int, str] = {}
        for batch in _batches(list(chunk_ids)):
            found.update(self._reader().execute(
                f"SELECT rid, chunk_id FROM chunks WHERE tenant_id = ? AND chunk_id IN ({_marks(len(batch))})",
                (tenant_id, *batch)).fetchall())
        return found

    def identified(self, rids: Sequence[int]) -> dict[int, tuple[str, np.ndarray]]:
        """rid -> (chunk id, stored vector), for the rids still there."""
        found: dict[int, tuple[str, np.ndarray]] = {}
        for batch in _batches(list(rids)):
            rows = self._reader().execute(
                f"SELECT rid, chunk_id, vector FROM chunks WHERE rid IN ({_marks(len(batch))})", tuple(batch))
            found.update((rid, (chunk_id, np.frombuffer(blob, dtype="<f4"))) for rid, chunk_id, blob in rows)
        return found

    def any_record(self) -> tuple[Chunk, list[float]] | None:
        row = self._reader().execute(f"SELECT {_RECORD}, vector FROM chunks ORDER BY rid LIMIT 1").fetchone()
        return None if row is None else (_chunk(row[:-1]), np.frombuffer(row[-1], dtype="<f4").tolist())

    def vectors_after(self, rid: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rids, vectors) of every row past `rid`, in rid order, a step at a time."""
        while True:
            rows = self._reader().execute(
                "SELECT rid, vector FROM chunks WHERE rid > ? ORDER BY rid LIMIT ?", (rid, SCAN_ROWS)).fetchall()
            if not rows:
                return
            rid = rows[-1][0]
            yield (np.array([r for r, _ in rows], dtype=np.int64),
                   np.frombuffer(b"".join(blob for _, blob in rows), dtype="<f4").reshape(len(rows), -1))

    def attribute_rows(self) -> Iterator[AttributeRow]:
        rid = 0
        while True:
            rows = self._reader().execute(
                "SELECT rid, tenant_id, kb_id, metadata FROM chunks WHERE rid > ? ORDER BY rid LIMIT ?",
                (rid, SCAN_ROWS)).fetchall()
            if not rows:
                return
            rid = rows[-1][0]
            for row_rid, tenant_id, kb_id, metadata in rows:
                yield AttributeRow(row_rid, tenant_id, kb_id, json.loads(metadata))

    def close(self) -> None:
        with self._readers_lock:
            for connection in self._readers:
                connection.close()
            self._readers.clear()
        self._writer.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an error: the write lock is
    taken up front, so a transaction never fails half-way for another writer."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self._connection.execute("BEGIN IMMEDIATE")
        return self._connection

    def __exit__(self, kind, error, traceback) -> None:
        self._connection.execute("COMMIT" if kind is None else "ROLLBACK")
