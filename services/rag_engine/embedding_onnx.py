"""A sentence-embedding model exported to ONNX, run by ONNX Runtime.

The model directory holds the graph (token embeddings out) in fp32,
`model.onnx`, and with its weights quantized to int8, `model.int8.onnx`; the
`tokenizer.json` of the HuggingFace tokenizers library; and `embedder.json`
saying how to pool: what `scripts/export_embedding_model.py` writes. Nothing is
downloaded; production images bake the directory in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from services.rag_engine.embedding import LocalModelRunner, normalised
from services.rag_engine.onnx_sessions import cpu_session

CONFIG_FILE = "embedder.json"
# The graph of each precision in a model directory.
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


class OnnxEmbedder:
    def __init__(
        self, model_dir: Path, name: str, precision: str = "int8", max_tokens: int = 0, threads: int = 0,
        batch_size: int = 32,
    ) -> None:
        graph = MODEL_FILES[precision]
        missing = [f for f in (graph, "tokenizer.json", CONFIG_FILE) if not (model_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"embedding model directory {model_dir} lacks {', '.join(missing)}; build it with "
                "`make models` (or scripts/export_embedding_model.py for a model of your own), "
                "or set SAGEMESH_EMBEDDING_MODEL_DIR"
                + ("" if precision == "fp32" else ", or SAGEMESH_EMBEDDING_PRECISION=fp32 for the unquantized graph")
            )
        config = json.loads((model_dir / CONFIG_FILE).read_text())
        self.name = name
        self.precision = precision
        self.dimension: int = config["dimension"]
        self._query_prefix: str = config.get("query_prefix", "")
        self._passage_prefix: str = config.get("passage_prefix", "")
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_tokens or config["max_tokens"])
        self._tokenizer.enable_padding()
        self._session = cpu_session(model_dir / graph, threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._runner = LocalModelRunner("onnx-embedder", batch_size)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.precision == "int8":
            # The int8 graph scales its activations per run, over the whole batch
            # and its padding: a short text beside long ones came out at cosine
            # 0.977 to its vector alone. One text per run keeps every vector its
            # text's own, whatever it is indexed with; it costs about a tenth of
            # the throughput batches would have (and computes no padding).
            return np.concatenate([self._encode_together([text]) for text in texts])
        return self._encode_together(texts)

    def _encode_together(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        tokens = self._session.run(None, feeds)[0]
        # Mean over the real tokens only: padding must not move a vector.
        weights = mask[..., None].astype(np.float32)
        return normalised((tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0))

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        prefixed = [self._passage_prefix + t for t in texts]
        return (await self._runner.embed_batched(self._encode, prefixed)).tolist()

    async def embed_query(self, text: str) -> list[float]:
        return (await self._runner.run(self._encode, [self._query_prefix + text]))[0].tolist()

    async def close(self) -> None:
        self._runner.close()
