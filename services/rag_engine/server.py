"""The rag_engine service: `python -m services.rag_engine.server`."""

from __future__ import annotations

from functools import partial

from meshkit import server
from meshkit.errors import FailedPrecondition
from meshkit.topology import SERVICES
from sagemesh.rag_engine.v1 import rag_engine_pb2_grpc
from services.rag_engine.answer_cache import AnswerCache
from services.rag_engine.answering import Answerer, AnsweringConfig
from services.rag_engine.embedding import Embedder, load_embedder
from services.rag_engine.engine import RagEngine, RetrievalConfig
from services.rag_engine.generation import load_generator
from services.rag_engine.indexes import KeywordIndex, VectorIndex
from services.rag_engine.rerank import load_reranker
from services.rag_engine.servicer import RagEngineServicer
from services.rag_engine.settings import RagEngineSettings


def vector_index(settings: RagEngineSettings, dimension: int, model: str = "") -> VectorIndex:
    if settings.uses_milvus:
        from services.rag_engine.vector_milvus import MilvusVectorIndex

        return MilvusVectorIndex(settings.vector_uri, dimension, settings.milvus_token,
                                 collection=settings.vector_collection)
    from services.rag_engine.search_plan import SearchPlanner
    from services.rag_engine.vector_local import LocalIndexOptions, LocalVectorIndex

    planner = SearchPlanner(ef=settings.hnsw_ef_search, wide_ef=max(settings.hnsw_ef_search, SearchPlanner.wide_ef))
    index = LocalVectorIndex(settings.local_vector_dir, dimension, model, options=LocalIndexOptions(planner=planner))
    if index.is_empty() and settings.milvus_lite_path.exists():
        from services.rag_engine.vector_milvus import lite_chunk_count

        try:
            stored = lite_chunk_count(settings.milvus_lite_path, settings.vector_collection)
        except BaseException:
            index.close_sync()
            raise
        if stored:
            index.close_sync()
            raise FailedPrecondition(
                f"{settings.milvus_lite_path} holds {stored} chunks in Milvus Lite, which is no longer the default "
                f"vector index, and the local index at {settings.local_vector_dir} is empty: keep serving Milvus "
                "Lite with SAGEMESH_VECTOR_INDEX=milvus, or index the documents again into the local index "
                "(move milvus.db aside first)"
            )
    return index


def keyword_index(settings: RagEngineSettings) -> KeywordIndex:
    if settings.elasticsearch_url:
        from services.rag_engine.bm25_elasticsearch import ElasticsearchKeywordIndex

        return ElasticsearchKeywordIndex(settings.elasticsearch_url, settings.elasticsearch_index)
    from services.rag_engine.bm25_tantivy import TantivyKeywordIndex

    return TantivyKeywordIndex(settings.keyword_dir)


def answer_cache(settings: RagEngineSettings, embedder: Embedder) -> AnswerCache | None:
    if settings.answer_cache == "off":
        return None
    if settings.redis_url:
        from services.rag_engine.answer_cache_redis import RedisCacheStore

        store = RedisCacheStore(settings.redis_url)
    else:
        from services.rag_engine.answer_cache_memory import MemoryCacheStore

        store = MemoryCacheStore(ttl=settings.answer_cache_ttl_seconds)
    return AnswerCache(store, settings.answer_cache_ttl_seconds, settings.semantic_cache_threshold,
                       embedder.embed_query)


async def build(settings: RagEngineSettings) -> server.ServiceApp:
    embedder = load_embedder(settings)
    reranker = load_reranker(settings)
    try:
        vectors = vector_index(settings, embedder.dimension, embedder.name)
    except Exception:
        for close in [embedder.close] + ([reranker.close] if reranker else []):
            await close()
        raise
    keywords = keyword_index(settings)
    engine = RagEngine(
        embedder, vectors, keywords,
        RetrievalConfig(
            rrf_k=settings.rrf_k, candidates_per_list=settings.candidates_per_list,
            rerank_candidates=settings.rerank_candidates,
        ),
        reranker,
    )
    generator = load_generator(settings)
    cache = answer_cache(settings, embedder)
    if cache is not None:
        engine.on_change.append(cache.changed)
    answerer = Answerer(engine, generator, AnsweringConfig(
        default_top_k=settings.answer_top_k, context_tokens=settings.answer_context_tokens,
        history_tokens=settings.answer_history_tokens, prices=settings.generation_prices,
        limits=settings.generation_limits,
    ), cache)
    closers = [engine.close, keywords.close, vectors.close, embedder.close, generator.close]
    closers += ([reranker.close] if reranker else []) + ([cache.store.close] if cache else [])
    try:
        if settings.check_stored_vectors:
            await engine.check_stored_vectors()
    except Exception:
        for close in closers:
            await close()
        raise
    return server.ServiceApp(
        info=SERVICES["rag_engine"],
        register=partial(rag_engine_pb2_grpc.add_RagEngineServiceServicer_to_server,
                         RagEngineServicer(engine, answerer)),
        on_shutdown=closers,
    )


def main() -> None:
    server.run("rag_engine", build, RagEngineSettings())


if __name__ == "__main__":
    main()
