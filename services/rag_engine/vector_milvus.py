"""VectorIndex on Milvus: Milvus Lite (a local file) by default, a Milvus
server when the URI is a URL. pymilvus is synchronous; calls run on one worker
thread of their own so the event loop never waits on them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pymilvus import DataType, MilvusClient, MilvusException

from services.rag_engine.chunk_limits import MAX_HEADINGS, MAX_TEXT, MAX_TITLE, clipped
from services.rag_engine.domain import Chunk, DocumentKey, Scope, by_knowledge_base
from services.rag_engine.filters import Filter, matches_all, milvus_expression, post_filtered, typed

COLLECTION = "sagemesh_chunks"
# A server's Bounded default may hide what was written in the last seconds.
# Bookkeeping reads (counts after a write) must see every write before them,
# whoever made it: Strong. Strong makes a server wait for its next time tick,
# about 200 ms, so the reads that serve Retrieve are Session: they see every
# write this process made, and other replicas' writes within a tick.
CONSISTENCY = "Strong"
SERVING_CONSISTENCY = "Session"
# Milvus caps a search's top k.
MAX_TOP_K = 16_384
# Milvus Lite answers every read by first copying its unflushed rows into Python
# objects (5,000 of them made a search 7x slower here), and flushes on its own
# only at 128 MB. So writes to Lite are flushed soon after they happen.
LITE_FLUSH_ROWS = 1_000
LITE_FLUSH_DELAY_SECONDS = 1.0
OUTPUT_FIELDS = ["chunk_id", "tenant_id", "kb_id", "document_id", "text", "title", "headings", "page",
                 "position", "metadata"]


class _LiteProbes(logging.Filter):
    """Milvus Lite serves pymilvus from a gRPC server inside this process, and
    pymilvus probes it for calls it lacks (AllocTimestamp when an index is
    built), expecting UNIMPLEMENTED. gRPC logs each probe as an ERROR with a
    traceback; they are not errors, so they are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], NotImplementedError))


_LITE_PROBES = _LiteProbes()


def _quoted(values: Sequence[str]) -> str:
    return json.dumps(list(values))


def documents_expressions(documents: Sequence[DocumentKey]) -> list[str]:
    """Filters that match every chunk of the documents, one per knowledge base."""
    return [
        f"tenant_id == {json.dumps(tenant)} and kb_id == {json.dumps(kb)} and document_id in {_quoted(ids)}"
        for (tenant, kb), ids in by_knowledge_base(documents).items()
    ]


def scope_expression(scope: Scope) -> str:
    clauses = [f"tenant_id == {json.dumps(scope.tenant_id)}"]
    if scope.kb_ids:
        clauses.append(f"kb_id in {_quoted(scope.kb_ids)}")
    return " and ".join(clauses)


# Where a chunk came from, kept in the metadata column under keys no metadata key can take (they
# start with "@"; keys and filters take letters, digits, _ . -): a field of their own would not fit
# collections made before them, and Milvus Lite cannot add a field to an existing collection.
FILENAME_KEY = "@filename"
LOCATION_KEY = "@location"


def _stored_metadata(chunk: Chunk) -> dict:
    metadata: dict = {k: typed(v) for k, v in chunk.metadata.items()}
    if chunk.filename:
        metadata[FILENAME_KEY] = chunk.filename
    if chunk.location:
        metadata[LOCATION_KEY] = chunk.location
    return metadata


def _chunk(row: dict) -> Chunk:
    metadata = {k: str(v) for k, v in (row["metadata"] or {}).items()}
    return Chunk(
        tenant_id=row["tenant_id"], kb_id=row["kb_id"], document_id=row["document_id"],
        chunk_id=row["chunk_id"], text=row["text"], title=row["title"],
        headings=tuple(row["headings"] or ()), page=row["page"], position=row["position"],
        filename=metadata.pop(FILENAME_KEY, ""), location=metadata.pop(LOCATION_KEY, ""), metadata=metadata,
    )


class MilvusVectorIndex:
    def __init__(self, uri: str, dimension: int, token: str = "", collection: str = COLLECTION) -> None:
        if "://" not in uri:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="milvus")
        self._lite_path = None if "://" in uri else uri
        if self._lite_path is not None:
            logging.getLogger("grpc._server").addFilter(_LITE_PROBES)
        self._unflushed_rows = 0
        self._flush_soon: asyncio.Task | None = None
        self.client = MilvusClient(uri, token=token)
        self.dimension = dimension
        self.collection = collection
        if not self.client.has_collection(collection):
            self._create_collection()
        else:
            self._check_dimension()
        self.client.load_collection(collection)

    def _check_dimension(self) -> None:
        fields = self.client.describe_collection(self.collection)["fields"]
        stored = next(int(f["params"]["dim"]) for f in fields if f["name"] == "embedding")
        if stored != self.dimension:
            raise ValueError(
                f"Milvus collection {self.collection!r} holds {stored}-dimensional vectors, but the embedding "
                f"model makes {self.dimension}: use the model that indexed it, or a new collection "
                "(SAGEMESH_VECTOR_COLLECTION) and index the documents again"
            )

    def _create_collection(self) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        # "<tenant>:<chunk>": two tenants can never overwrite each other's chunk.
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=300)
        schema.add_field("chunk_id", DataType.VARCHAR, max_length=200)
        schema.add_field("tenant_id", DataType.VARCHAR, max_length=64)
        schema.add_field("kb_id", DataType.VARCHAR, max_length=64)
        schema.add_field("document_id", DataType.VARCHAR, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("title", DataType.VARCHAR, max_length=MAX_TITLE)
        # An array, not JSON: Milvus before 2.4 takes only JSON objects.
        schema.add_field("headings", DataType.ARRAY, element_type=DataType.VARCHAR,
                         max_capacity=MAX_HEADINGS, max_length=MAX_TITLE)
        schema.add_field("page", DataType.INT32)
        schema.add_field("position", DataType.INT32)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dimension)
        self.client.create_collection(self.collection, schema=schema, consistency_level=CONSISTENCY)
        vector = self.client.prepare_index_params()
        vector.add_index(field_name="embedding", index_type="HNSW", metric_type="COSINE",
                         params={"M": 16, "efConstruction": 200})
        self.client.create_index(self.collection, vector)
        try:
            self._create_scalar_indexes("INVERTED")
        except MilvusException as error:
            # Milvus before 2.4 has no INVERTED index: its VARCHAR index is a trie
            # (and Lite has INVERTED only).
            if "INVERTED" not in str(error):
                raise
            self._create_scalar_indexes("Trie")

    def _create_scalar_indexes(self, index_type: str) -> None:
        index = self.client.prepare_index_params()
        for scalar in ("tenant_id", "kb_id", "document_id"):
            index.add_index(field_name=scalar, index_type=index_type)
        self.client.create_index(self.collection, index)

    async def _run(self, function, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    async def upsert(
        self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]], replacing: Sequence[DocumentKey] = ()
    ) -> None:
        for expression in documents_expressions(replacing):
            await self._delete(expression)
        rows = [
            {
                "pk": f"{c.tenant_id}:{c.chunk_id}", "chunk_id": c.chunk_id, "tenant_id": c.tenant_id,
                "kb_id": c.kb_id, "document_id": c.document_id, "text": clipped(c.text, MAX_TEXT),
                "title": clipped(c.title, MAX_TITLE),
                "headings": [clipped(h, MAX_TITLE) for h in c.headings[:MAX_HEADINGS]], "page": c.page,
                "position": c.position, "metadata": _stored_metadata(c),
                "embedding": list(vector),
            }
            for c, vector in zip(chunks, vectors)
        ]
        if rows:
            await self._run(self.client.upsert, self.collection, rows)
            await self._written(len(rows))

    async def search(self, vector, scope: Scope, filters: Sequence[Filter], limit: int):
        if filters and self._lite_path is not None:
            # Lite evaluates a JSON-path filter row by row in Python over every
            # column (seconds at 10,000 chunks): search the scope alone, and
            # check the metadata of the hits instead.
            return await post_filtered(
                lambda fetch: self._search(vector, scope_expression(scope), fetch),
                lambda ids: self.passing(scope.tenant_id, ids, filters), limit, MAX_TOP_K,
            )
        expression = " and ".join(e for e in (scope_expression(scope), milvus_expression(list(filters))) if e)
        return await self._search(vector, expression, limit)

    async def _search(self, vector, expression: str, limit: int) -> list[tuple[str, float]]:
        hits = await self._run(
            self.client.search, self.collection, data=[list(vector)], limit=limit, filter=expression,
            output_fields=["chunk_id"], search_params={"metric_type": "COSINE", "params": {"ef": max(64, limit)}},
            consistency_level=SERVING_CONSISTENCY,
        )
        return [(hit["entity"]["chunk_id"], float(hit["distance"])) for hit in hits[0]]

    async def passing(self, tenant_id: str, chunk_ids: Sequence[str], filters: Sequence[Filter]) -> set[str]:
        if not chunk_ids:
            return set()
        rows = await self._run(
            self.client.get, self.collection, ids=[f"{tenant_id}:{c}" for c in chunk_ids],
            output_fields=["chunk_id", "metadata"], consistency_level=SERVING_CONSISTENCY,
        )
        return {row["chunk_id"] for row in rows if matches_all(filters, row["metadata"] or {})}

    async def fetch(self, tenant_id: str, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        if not chunk_ids:
            return {}
        rows = await self._run(
            self.client.get, self.collection, ids=[f"{tenant_id}:{c}" for c in chunk_ids],
            output_fields=OUTPUT_FIELDS, consistency_level=SERVING_CONSISTENCY,
        )
        return {row["chunk_id"]: _chunk(row) for row in rows}

    async def any_record(self) -> tuple[Chunk, list[float]] | None:
        rows = await self._run(
            self.client.query, self.collection, filter='pk != ""', limit=1,
            output_fields=[*OUTPUT_FIELDS, "embedding"], consistency_level=CONSISTENCY,
        )
        return (_chunk(rows[0]), [float(x) for x in rows[0]["embedding"]]) if rows else None

    async def _delete(self, expression: str) -> int:
        result = await self._run(self.client.delete, self.collection, filter=expression)
        deleted = int(result.get("delete_count", 0)) if isinstance(result, dict) else len(result)
        await self._written(deleted)
        return deleted

    async def _written(self, rows: int) -> None:
        """Flushes Lite once LITE_FLUSH_ROWS rows are pending, else within
        LITE_FLUSH_DELAY_SECONDS of the first pending write. A server flushes
        itself."""
        if self._lite_path is None or not rows:
            return
        self._unflushed_rows += rows
        if self._unflushed_rows >= LITE_FLUSH_ROWS:
            await self._flush()
        elif self._flush_soon is None:
            self._flush_soon = asyncio.create_task(self._flush_after_delay())

    async def _flush_after_delay(self) -> None:
        await asyncio.sleep(LITE_FLUSH_DELAY_SECONDS)
        self._flush_soon = None
        await self._flush()

    async def _flush(self) -> None:
        if self._unflushed_rows:
            self._unflushed_rows = 0
            await self._run(self.client.flush, self.collection)

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> int:
        (expression,) = documents_expressions([DocumentKey(tenant_id, kb_id, document_id)])
        return await self._delete(expression)

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> int:
        return await self._delete(f"tenant_id == {json.dumps(tenant_id)} and kb_id == {json.dumps(kb_id)}")

    async def count(self, tenant_id: str, kb_id: str, document_id: str) -> int:
        rows = await self._run(
            self.client.query, self.collection,
            filter=f"tenant_id == {json.dumps(tenant_id)} and kb_id == {json.dumps(kb_id)} "
                   f"and document_id == {json.dumps(document_id)}",
            output_fields=["count(*)"], consistency_level=CONSISTENCY,
        )
        return int(rows[0]["count(*)"]) if rows else 0

    async def close(self) -> None:
        if self._flush_soon is not None:
            self._flush_soon.cancel()
        await self._flush()
        await self._run(self.client.close)
        if self._lite_path is not None:
            # Milvus Lite serves the file from this process until told to stop;
            # the file stays locked against any other process until then.
            from milvus_lite.server_manager import server_manager_instance

            await self._run(server_manager_instance.release_server, self._lite_path)
        self._executor.shutdown(wait=True)


def lite_chunk_count(path: Path, collection: str = COLLECTION) -> int:
    """Chunks in a Milvus Lite file's collection (0 when it has none). Opens
    the file in this process and releases it again."""
    from milvus_lite.server_manager import server_manager_instance

    client = MilvusClient(str(path))
    try:
        if not client.has_collection(collection):
            return 0
        client.load_collection(collection)
        rows = client.query(collection, filter='pk != ""', output_fields=["count(*)"], consistency_level=CONSISTENCY)
        return int(rows[0]["count(*)"]) if rows else 0
    finally:
        client.close()
        server_manager_instance.release_server(str(path))
