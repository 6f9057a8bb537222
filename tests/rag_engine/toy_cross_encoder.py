"""A toy cross-encoder built on the spot: a WordLevel tokenizer and an ONNX
graph whose score is hand-computable, so reranking can be tested without any
trained weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers, processors

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WORDS = ["gold", "silver", "lead", "the", "a", "mine", "of", "is"]
VOCAB = {token: i for i, token in enumerate(SPECIAL + WORDS)}
# The model's score: the sum of these weights over the passage's tokens. [PAD]
# weighs a lot, so padding that leaked past the masks would show.
WEIGHTS = {"gold": 1.0, "silver": 0.5, "[PAD]": 100.0}


def write_tokenizer(path) -> None:
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])],
    )
    tokenizer.save(str(path))


def write_model(path, *, token_types: bool = True, two_logits: bool = False) -> None:
    """logits = sum of WEIGHTS over tokens where attention_mask (and, if the
    graph has it, token_type_ids) is 1; as (n, 2) [-s, s] when two_logits."""
    table = np.zeros((len(VOCAB), 1), dtype=np.float32)
    for token, weight in WEIGHTS.items():
        table[VOCAB[token], 0] = weight
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in names]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["weights"]),  # (n, seq, 1)
        helper.make_node("Squeeze", ["weights", "last_axis"], ["token_weights"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
    ]
    if token_types:
        nodes += [
            helper.make_node("Cast", ["token_type_ids"], ["segment"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["mask", "segment"], ["passage_mask"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["mask"], ["passage_mask"]))
    nodes += [
        helper.make_node("Mul", ["token_weights", "passage_mask"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "seq_axis"], ["score"], keepdims=1),
    ]
    if two_logits:
        nodes += [
            helper.make_node("Neg", ["score"], ["negative"]),
            helper.make_node("Concat", ["negative", "score"], ["logits"], axis=1),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["score"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "toy_cross_encoder",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2 if two_logits else 1])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "seq_axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def write_model_dir(path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    write_tokenizer(path / "tokenizer.json")
    write_model(path / "model.onnx")
