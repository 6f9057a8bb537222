"""rag_engine: the retrieval indexes and hybrid retrieval.

server.py       wiring: settings, model, indexes, servicer
servicer.py     protobuf <-> domain
engine.py       the domain: index, delete, retrieve (vector + BM25, RRF, rerank)
fusion.py       weighted reciprocal rank fusion
analysis.py     text -> BM25 terms (English stemming, Chinese segmentation)
filters.py      metadata filters, and their Milvus expressions
indexes.py      the index interfaces; vector_local.py, vector_milvus.py and bm25_tantivy.py implement them
vector_local.py the embedded vector index: chunk_store.py (SQLite), attributes.py (filters),
                search_plan.py, ann.py (interface) and ann_faiss.py (HNSW on faiss)
embedding.py    the embedding model interface and its local implementation
rerank.py       the reranker interface; rerank_cross_encoder.py (ONNX, in process) and
                rerank_http.py (TEI / Cohere-style service) implement it
"""
