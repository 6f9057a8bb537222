"""KeywordIndex on tantivy, persisted in a directory. Text is analysed by
analysis.terms() and indexed pre-tokenised, so Chinese and English are both
segmented the same way at index and query time. tantivy allows one writer per
index, so one process owns the directory; writes and searches run on a
worker thread of their own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tantivy

from services.rag_engine import analysis
from services.rag_engine.domain import Chunk, DocumentKey, Scope

Q, Occur = tantivy.Query, tantivy.Occur


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    for name in ("pk", "chunk_id"):
        builder.add_text_field(name, stored=True, tokenizer_name="raw")
    for name in ("tenant_id", "kb_id", "document_id"):
        builder.add_text_field(name, stored=False, tokenizer_name="raw")
    builder.add_text_field("terms", stored=False, tokenizer_name="whitespace")
    return builder.build()


class TantivyKeywordIndex:
    def __init__(self, directory: Path, writer_heap_bytes: int = 64 * 1024 * 1024) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.schema = _schema()
        self.index = tantivy.Index(self.schema, path=str(directory))
        self.writer = self.index.writer(heap_size=writer_heap_bytes, num_threads=1)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tantivy")

    async def _run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _filter(self, field: str, values: Sequence[str]) -> tuple:
        query = Q.term_query(self.schema, field, values[0]) if len(values) == 1 else Q.term_set_query(self.schema, field, list(values))
        # Filters restrict; they must not add to the BM25 score.
        return Occur.Must, Q.const_score_query(query, 0.0)

    def _commit(self) -> None:
        self.writer.commit()
        self.index.reload()

    async def upsert(self, chunks: Sequence[Chunk], replacing: Sequence[DocumentKey] = ()) -> None:
        def write() -> None:
            for key in replacing:
                self.writer.delete_documents_by_query(self._document_query(key))
            for chunk in chunks:
                pk = f"{chunk.tenant_id}:{chunk.chunk_id}"
                self.writer.delete_documents_by_term("pk", pk)
                self.writer.add_document(tantivy.Document(
                    pk=pk, chunk_id=chunk.chunk_id, tenant_id=chunk.tenant_id, kb_id=chunk.kb_id,
                    document_id=chunk.document_id,
                    terms=" ".join(analysis.terms(f"{chunk.title}\n{chunk.text}")),
                ))
            self._commit()

        if chunks or replacing:
            await self._run(write)

    async def search(self, query: str, scope: Scope, limit: int):
        words = analysis.terms(query)
        if not words:
            return []

        def run() -> list[tuple[str, float]]:
            clauses = [(Occur.Must, Q.boolean_query([(Occur.Should, Q.term_query(self.schema, "terms", w)) for w in words]))]
            clauses.append(self._filter("tenant_id", [scope.tenant_id]))
            if scope.kb_ids:
                clauses.append(self._filter("kb_id", list(scope.kb_ids)))
            searcher = self.index.searcher()
            hits = searcher.search(Q.boolean_query(clauses), limit).hits
            return [(searcher.doc(address)["chunk_id"][0], float(score)) for score, address in hits]

        return await self._run(run)

    def _where(self, **terms: str) -> Q:
        return Q.boolean_query([(Occur.Must, Q.term_query(self.schema, f, v)) for f, v in terms.items()])

    def _document_query(self, key: DocumentKey) -> Q:
        return self._where(tenant_id=key.tenant_id, kb_id=key.kb_id, document_id=key.document_id)

    def _delete_where(self, query: Q) -> None:
        self.writer.delete_documents_by_query(query)
        self._commit()

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> None:
        await self._run(self._delete_where, self._document_query(DocumentKey(tenant_id, kb_id, document_id)))

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> None:
        await self._run(self._delete_where, self._where(tenant_id=tenant_id, kb_id=kb_id))

    async def close(self) -> None:
        def finish() -> None:
            self.writer.wait_merging_threads()

        await self._run(finish)
        self._executor.shutdown(wait=True)
