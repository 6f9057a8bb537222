"""rag_engine's domain metrics, in the process's Prometheus registry."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

from services.rag_engine.domain import Timings

if TYPE_CHECKING:
    from services.rag_engine.answering import AnswerMetrics

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


ANSWER_CACHE_LOOKUPS = Counter("sagemesh_rag_answer_cache_lookups_total",
                               "Answer cache lookups by result (hit, miss): the hit ratio.", ["result"])
GENERATION_SECONDS = Histogram("sagemesh_rag_generation_seconds", "Time to generate one answer, by model.",
                               ["model"], buckets=BUCKETS)
GENERATION_TOKENS = Counter("sagemesh_rag_generation_tokens_total", "Tokens generators read and wrote, by model.",
                            ["model", "kind"])
GENERATION_COST = Counter("sagemesh_rag_generation_cost_usd_total",
                          "Estimated cost of generation in USD, by model (from the configured price table).",
                          ["model"])


def record_cache_lookup(hit: bool) -> None:
    ANSWER_CACHE_LOOKUPS.labels("hit" if hit else "miss").inc()


def record_answer(metrics: AnswerMetrics) -> None:
    GENERATION_SECONDS.labels(metrics.generator).observe(metrics.generation_ms / 1000)
    GENERATION_TOKENS.labels(metrics.generator, "prompt").inc(metrics.prompt_tokens)
    GENERATION_TOKENS.labels(metrics.generator, "completion").inc(metrics.completion_tokens)
    GENERATION_COST.labels(metrics.generator).inc(metrics.cost_usd)
INDEX_BATCH_CALLS = Histogram(
    "sagemesh_rag_index_batch_calls", "IndexChunks calls embedded and written together as one batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
INDEX_BATCH_CHUNKS = Histogram(
    "sagemesh_rag_index_batch_chunks", "Chunks embedded and written together as one batch.",
    buckets=(1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048),
)
