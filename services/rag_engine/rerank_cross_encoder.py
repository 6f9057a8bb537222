"""A cross-encoder run in process by ONNX Runtime, loaded from a local model
directory: tokenizer.json (HuggingFace tokenizers) and model.onnx, or
onnx/model.onnx as optimum and sentence-transformers export it. Nothing is
downloaded: production images bake the model in.

PyTorch checkpoints are not loaded: export them to ONNX instead (e.g.
`optimum-cli export onnx --task text-classification`), which keeps torch out
of the image."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from services.rag_engine.onnx_sessions import cpu_session

MODEL_FILES = ("model.onnx", "onnx/model.onnx")
DEFAULT_MAX_LENGTH = 512
# transformers writes a huge sentinel as model_max_length when a model sets no limit.
_NO_LIMIT = 1_000_000
# Graph input -> the tokenizers.Encoding attribute that feeds it.
_FEATURES = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class CrossEncoderReranker:
    def __init__(
        self,
        model_dir: str | Path,
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        threads: int = 0,
        name: str | None = None,
    ) -> None:
        """`threads` is onnxruntime's intra-op thread count; 0 lets it choose."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        directory = Path(model_dir)
        model_path = next((directory / f for f in MODEL_FILES if (directory / f).is_file()), None)
        missing = [] if (directory / "tokenizer.json").is_file() else ["tokenizer.json"]
        if model_path is None:
            missing.append("model.onnx (or onnx/model.onnx)")
        if missing:
            raise FileNotFoundError(
                f"cross-encoder model directory {directory} lacks {' and '.join(missing)}"
                if directory.is_dir()
                else f"cross-encoder model directory {directory} does not exist"
            )
        self.name = name or f"cross-encoder:{directory.name}"
        self.batch_size = batch_size

        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.max_length = max_length or _max_length(config, self._tokenizer)
        # longest_first trims the longer of query and passage first, as transformers does.
        self._tokenizer.enable_truncation(self.max_length)
        pad_id, pad_token = _pad(config, self._tokenizer)
        self._tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)

        self._session = cpu_session(model_path, threads)
        self._inputs = {i.name: _DTYPES.get(i.type) for i in self._session.get_inputs()}
        unusable = [n for n, t in self._inputs.items() if n not in _FEATURES or t is None]
        if unusable:
            raise ValueError(f"{model_path}: cannot feed the model's inputs {unusable}")
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "logits" if "logits" in outputs else outputs[0]
        # One thread: inference is CPU-bound and onnxruntime parallelises inside a run.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rerank")

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
        loop = asyncio.get_running_loop()
        scores: list[float] = []
        # A job per batch, so concurrent requests interleave on the worker and a
        # cancelled request stops after its current batch.
        for start in range(0, len(passages), self.batch_size):
            batch = list(passages[start : start + self.batch_size])
            scores += await loop.run_in_executor(self._executor, self._score_batch, query, batch)
        return scores

    def _score_batch(self, query: str, passages: list[str]) -> list[float]:
        encodings = self._tokenizer.encode_batch([(query, p) for p in passages])
        feed = {
            name: np.array([getattr(e, _FEATURES[name]) for e in encodings], dtype=dtype)
            for name, dtype in self._inputs.items()
        }
        (logits,) = self._session.run([self._output], feed)
        logits = np.asarray(logits).reshape(len(passages), -1)
        if logits.shape[1] not in (1, 2):
            raise ValueError(f"{self.name}: expected 1 or 2 logits per pair, got {logits.shape[1]}")
        # The last column is the single relevance logit, or the positive class of two.
        return logits[:, -1].astype(float).tolist()

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _max_length(config: dict, tokenizer: Tokenizer) -> int:
    configured = config.get("model_max_length")
    if isinstance(configured, int) and 0 < configured < _NO_LIMIT:
        return configured
    if tokenizer.truncation:
        return tokenizer.truncation["max_length"]
    return DEFAULT_MAX_LENGTH


def _pad(config: dict, tokenizer: Tokenizer) -> tuple[int, str]:
    if tokenizer.padding:
        return tokenizer.padding["pad_id"], tokenizer.padding["pad_token"]
    configured = config.get("pad_token")
    if isinstance(configured, dict):
        configured = configured.get("content")
    for token in (configured, "[PAD]", "<pad>"):
        if token and tokenizer.token_to_id(token) is not None:
            return tokenizer.token_to_id(token), token
    # Any id will do: the attention mask hides padding from the model.
    return 0, "[PAD]"
