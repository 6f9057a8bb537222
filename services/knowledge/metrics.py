"""Knowledge's domain metrics, in the process's Prometheus registry."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from services.knowledge.domain import DocumentStatus

# From a one-line text file to a long PDF embedded on a CPU.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

DOCUMENTS = Gauge("sagemesh_knowledge_documents", "Documents by status, in every tenant.", ["status"])
QUEUE_DEPTH = Gauge("sagemesh_knowledge_ingestion_queue_depth",
                    "Documents not yet indexed or failed: waiting, retrying or under way.")
STAGE_SECONDS = Histogram("sagemesh_knowledge_ingestion_stage_seconds",
                          "Time one document spent in each ingestion stage (parse, chunk, index).", ["stage"],
                          buckets=BUCKETS)
INGESTED = Counter("sagemesh_knowledge_ingestions_total",
                   "Ingestion runs by how they ended: indexed, failed, or retry (sent back to the queue).",
                   ["outcome"])


def record_counts(by_status: Mapping[str, int]) -> None:
    for status in DocumentStatus:
        DOCUMENTS.labels(status.value).set(by_status.get(status.value, 0))
    QUEUE_DEPTH.set(sum(by_status.get(status.value, 0) for status in DocumentStatus if not status.finished))
