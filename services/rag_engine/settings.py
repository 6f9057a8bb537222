from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from meshkit.settings import MeshSettings


class RagEngineSettings(MeshSettings):
    # A file path for Milvus Lite (default <data_dir>/rag_engine/milvus.db), or
    # a server URL such as http://milvus:19530.
    milvus_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("SAGEMESH_MILVUS_URI", "MILVUS_URI")
    )
    milvus_token: str = ""
    # Where the embedded BM25 index lives; default <data_dir>/rag_engine/bm25.
    bm25_dir: Path | None = None
    rrf_k: int = 60
    candidates_per_list: int = 100

    @property
    def vector_uri(self) -> str:
        return self.milvus_uri or str(self.data_dir / "rag_engine" / "milvus.db")

    @property
    def keyword_dir(self) -> Path:
        return self.bm25_dir or self.data_dir / "rag_engine" / "bm25"
