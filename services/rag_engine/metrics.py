"""rag_engine's domain metrics, in the process's Prometheus registry."""

from __future__ import annotations

from dataclasses import fields

from prometheus_client import Histogram

from services.rag_engine.domain import Timings

# From a cache-warm BM25 lookup (under a millisecond) to a CPU cross-encoder
# reranking dozens of passages (seconds).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RETRIEVAL_STAGE_SECONDS = Histogram(
    "sagemesh_rag_retrieval_stage_seconds",
    "Time one Retrieve spent in each stage (embed, vector, bm25, fuse, rerank) and in all (total).",
    ["stage"],
    buckets=BUCKETS,
)


def record_retrieval(timings: Timings) -> None:
    # A stage that did not run (a list weighted 0, no rerank asked) left 0.
    for field in fields(timings):
        milliseconds = getattr(timings, field.name)
        if milliseconds > 0:
            RETRIEVAL_STAGE_SECONDS.labels(field.name.removesuffix("_ms")).observe(milliseconds / 1000)
