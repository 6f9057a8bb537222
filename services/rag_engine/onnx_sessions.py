"""ONNX Runtime sessions for the rag_engine's models, made one way.

ONNX Runtime's intra-op threads spin while they wait for work, by default. On
a machine the model has to itself that saves a little; beside other busy
processes (the knowledge service parsing, the gateway taking uploads) the
spinning threads take the cores from the threads with work: one other busy
process halved MiniLM's speed at 2 threads (17 against 37 texts/s here), and
without spinning it kept 30, as fast as alone within a tenth."""

from __future__ import annotations

from pathlib import Path

import onnxruntime


def cpu_session(model: Path, threads: int = 0) -> onnxruntime.InferenceSession:
    """`threads`: intra-op threads, 0 for one per core."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
