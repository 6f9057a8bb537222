"""VectorIndex on Milvus: Milvus Lite (a local file) by default, a Milvus
server when the URI is a URL. pymilvus is synchronous; calls run on one worker
thread of their own so the event loop never waits on them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pymilvus import DataType, MilvusClient

from services.rag_engine.domain import Chunk, Scope
from services.rag_engine.filters import Filter, milvus_expression, typed

COLLECTION = "sagemesh_chunks"
MAX_TEXT = 65_535
# Milvus caps one query's page; larger result sets are read page by page.
PAGE = 16_384
OUTPUT_FIELDS = ["chunk_id", "tenant_id", "kb_id", "document_id", "text", "title", "headings", "page",
                 "position", "metadata"]


def _quoted(values: Sequence[str]) -> str:
    return json.dumps(list(values))


def scope_expression(scope: Scope) -> str:
    clauses = [f"tenant_id == {json.dumps(scope.tenant_id)}"]
    if scope.kb_ids:
        clauses.append(f"kb_id in {_quoted(scope.kb_ids)}")
    return " and ".join(clauses)


class MilvusVectorIndex:
    def __init__(self, uri: str, dimension: int, token: str = "") -> None:
        if "://" not in uri:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="milvus")
        self.client = MilvusClient(uri, token=token)
        self.dimension = dimension
        if not self.client.has_collection(COLLECTION):
            self._create_collection()
        self.client.load_collection(COLLECTION)

    def _create_collection(self) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        # "<tenant>:<chunk>": two tenants can never overwrite each other's chunk.
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=300)
        schema.add_field("chunk_id", DataType.VARCHAR, max_length=200)
        schema.add_field("tenant_id", DataType.VARCHAR, max_length=64)
        schema.add_field("kb_id", DataType.VARCHAR, max_length=64)
        schema.add_field("document_id", DataType.VARCHAR, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("title", DataType.VARCHAR, max_length=1000)
        schema.add_field("headings", DataType.JSON)
        schema.add_field("page", DataType.INT32)
        schema.add_field("position", DataType.INT32)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dimension)
        index = self.client.prepare_index_params()
        index.add_index(field_name="embedding", index_type="HNSW", metric_type="COSINE",
                        params={"M": 16, "efConstruction": 200})
        for scalar in ("tenant_id", "kb_id", "document_id"):
            index.add_index(field_name=scalar, index_type="INVERTED")
        self.client.create_collection(COLLECTION, schema=schema, index_params=index)

    async def _run(self, function, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        rows = [
            {
                "pk": f"{c.tenant_id}:{c.chunk_id}", "chunk_id": c.chunk_id, "tenant_id": c.tenant_id,
                "kb_id": c.kb_id, "document_id": c.document_id, "text": c.text[:MAX_TEXT],
                "title": c.title[:1000], "headings": list(c.headings), "page": c.page,
                "position": c.position, "metadata": {k: typed(v) for k, v in c.metadata.items()},
                "embedding": list(vector),
            }
            for c, vector in zip(chunks, vectors)
        ]
        if rows:
            await self._run(self.client.upsert, COLLECTION, rows)

    async def search(self, vector, scope: Scope, filters: Sequence[Filter], limit: int):
        expression = " and ".join(e for e in (scope_expression(scope), milvus_expression(list(filters))) if e)
        hits = await self._run(
            self.client.search, COLLECTION, data=[list(vector)], limit=limit, filter=expression,
            output_fields=["chunk_id"], search_params={"metric_type": "COSINE", "params": {"ef": max(64, limit)}},
        )
        return [(hit["entity"]["chunk_id"], float(hit["distance"])) for hit in hits[0]]

    async def matching_ids(self, scope: Scope, filters: Sequence[Filter]) -> set[str]:
        expression = " and ".join(e for e in (scope_expression(scope), milvus_expression(list(filters))) if e)

        def collect() -> set[str]:
            found: set[str] = set()
            iterator = self.client.query_iterator(COLLECTION, batch_size=PAGE, filter=expression,
                                                  output_fields=["chunk_id"])
            try:
                while batch := iterator.next():
                    found.update(row["chunk_id"] for row in batch)
            finally:
                iterator.close()
            return found

        return await self._run(collect)

    async def fetch(self, tenant_id: str, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        if not chunk_ids:
            return {}
        rows = await self._run(
            self.client.get, COLLECTION, ids=[f"{tenant_id}:{c}" for c in chunk_ids], output_fields=OUTPUT_FIELDS
        )
        return {
            row["chunk_id"]: Chunk(
                tenant_id=row["tenant_id"], kb_id=row["kb_id"], document_id=row["document_id"],
                chunk_id=row["chunk_id"], text=row["text"], title=row["title"],
                headings=tuple(row["headings"] or ()), page=row["page"], position=row["position"],
                metadata={k: str(v) for k, v in (row["metadata"] or {}).items()},
            )
            for row in rows
        }

    async def _delete(self, expression: str) -> int:
        result = await self._run(self.client.delete, COLLECTION, filter=expression)
        return int(result.get("delete_count", 0)) if isinstance(result, dict) else len(result)

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> int:
        return await self._delete(
            f"tenant_id == {json.dumps(tenant_id)} and kb_id == {json.dumps(kb_id)} "
            f"and document_id == {json.dumps(document_id)}"
        )

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> int:
        return await self._delete(f"tenant_id == {json.dumps(tenant_id)} and kb_id == {json.dumps(kb_id)}")

    async def count(self, tenant_id: str, kb_id: str, document_id: str) -> int:
        rows = await self._run(
            self.client.query, COLLECTION,
            filter=f"tenant_id == {json.dumps(tenant_id)} and kb_id == {json.dumps(kb_id)} "
                   f"and document_id == {json.dumps(document_id)}",
            output_fields=["count(*)"],
        )
        return int(rows[0]["count(*)"]) if rows else 0

    async def close(self) -> None:
        await self._run(self.client.close)
        self._executor.shutdown(wait=True)
