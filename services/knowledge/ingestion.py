"""The ingestion worker: takes queued documents from the database and runs
each through parse, chunk and index, recording every step.

The queue is the documents table itself, so nothing queued is lost with a
process. A worker leases each document it runs and renews the lease while it
works; a document whose worker died is taken up again when the lease runs
out (at once when the same worker restarts). A run after a crash indexes the
whole document again, replacing what the last run indexed, so a document's
chunks are in the index once however many runs it took.

Taking a document counts an attempt, in the same statement, so a document
that kills whatever runs it uses its attempts up like any other and fails
instead of felling worker after worker. What users read in a document's
error is always a sentence of ours; what went wrong in detail goes to the
log, with the document's id and the run's trace id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from meshkit.timing import ms_since
from services.knowledge.blobs import BlobStore
from services.knowledge.chunking import ChunkingSettings
from services.knowledge.domain import DocumentStatus, StageTimings, file_metadata
from services.knowledge.indexer import ChunkIndexer, IndexRejected, IndexUnavailable
from services.knowledge.metrics import INGESTED, STAGE_SECONDS, record_counts
from services.knowledge.parsers import ParseError, UnsupportedType
from services.knowledge.sandboxed_steps import SandboxedSteps, StepStopped
from services.knowledge.status_board import StatusBoard
from services.knowledge.store import Claim, KnowledgeStore

log = logging.getLogger(__name__)
tracer = trace.get_tracer("sagemesh.knowledge")


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    # Documents parsed and chunked at once: the sandbox's worker processes.
    concurrency: int = 2
    # Documents run at once, those being indexed included. A document gives its
    # parsing slot to the next as soon as it is chunked, so parsing goes on while
    # chunks are embedded, and the rag_engine embeds the chunks of the documents
    # indexing together in one batch.
    in_flight: int = 16
    poll_seconds: float = 1.0
    lease_seconds: float = 30.0
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    # Runs before the document is failed: those that ended in an unexpected
    # error or a stopped parse, or never ended (the process died). Waiting
    # for an unreachable rag_engine does not count: it is retried forever.
    max_attempts: int = 5
    # How often the documents-by-status metrics are read from the store.
    metrics_refresh_seconds: float = 5.0


class ClaimLost(Exception):
    """The document was deleted or restarted, or another worker took it over."""


class Failed(Exception):
    """The document cannot be ingested as it is; the message says why."""


INDEX_UNREACHABLE = "waiting for the index, which cannot be reached; it will be tried again"
INDEX_REFUSED = "the index refused the document's chunks"
RETRYING = "; it will be tried again"


def _interrupted(attempts: int) -> str:
    return f"ingestion stopped before it finished on each of its {attempts} attempts (its worker went down)"


def _internal_error(attempts: int) -> str:
    span = trace.get_current_span().get_span_context()
    reference = f"; quote trace id {span.trace_id:032x} when reporting it" if span.is_valid else ""
    return f"ingestion failed on each of its {attempts} attempts because of an internal error{reference}"


def backoff_seconds(attempt: int, initial: float, cap: float) -> float:
    """Doubling per attempt up to `cap`, jittered so that documents held up
    together do not all come back at once."""
    ceiling = min(cap, initial * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)



def _upload_link(claim: Claim) -> list[Link]:
    if not claim.upload_traceparent:
        return []
    context = TraceContextTextMapPropagator().extract({"traceparent": claim.upload_traceparent})
    upload = trace.get_current_span(context).get_span_context()
    return [Link(upload, {"link.kind": "upload"})] if upload.is_valid else []


class IngestionWorker:
    def __init__(self, store: KnowledgeStore, blobs: BlobStore, steps: SandboxedSteps, indexer: ChunkIndexer,
                 board: StatusBoard, config: WorkerConfig) -> None:
        self.store = store
        self.blobs = blobs
        self.steps = steps
        self.indexer = indexer
        self.board = board
        self.config = config
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._report_task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        # Of those, the runs not yet past chunking: at most `concurrency`.
        self._parsing: set[asyncio.Task] = set()
        # Index calls that failed as unreachable since the last that worked: the
        # backoff's exponent, the outage being the rag_engine's, not a document's.
        self._index_failures = 0

    async def start(self) -> None:
        released = await self.store.release_leases(self.config.name)
        if released:
            log.info("taking back %d documents this worker left unfinished", released)
        self._loop_task = asyncio.create_task(self._loop(), name="ingestion")
        self._report_task = asyncio.create_task(self._report_counts(), name="ingestion metrics")

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stops taking work and abandons the runs in flight; their documents
        run again from the start when this or another worker takes them."""
        tasks = [t for t in (self._loop_task, self._report_task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.release_leases(self.config.name)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            free = min(self.config.concurrency - len(self._parsing), self.config.in_flight - len(self._running))
            if free > 0:
                try:
                    claims = await self.store.claim_due(self.config.name, free, self.config.lease_seconds)
                except Exception:
                    log.exception("could not take documents from the queue")
                    claims = []
                for claim in claims:
                    task = asyncio.create_task(self._run(claim), name=f"ingest {claim.document.id}")
                    self._running.add(task)
                    self._parsing.add(task)
                    task.add_done_callback(self._finished)
                if len(claims) == free:
                    continue  # there may be more waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_seconds)

    async def _report_counts(self) -> None:
        while True:
            try:
                record_counts(await self.store.count_by_status())
            except Exception:
                log.warning("could not count documents for the metrics", exc_info=True)
            await asyncio.sleep(self.config.metrics_refresh_seconds)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._parsing.discard(task)
        self._wake.set()

    def _chunked(self) -> None:
        """The current run's document is past chunking: another may take its parsing slot."""
        task = asyncio.current_task()
        if task in self._parsing:
            self._parsing.discard(task)
            self._wake.set()

    async def _run(self, claim: Claim) -> None:
        worker = asyncio.current_task()
        heartbeat = asyncio.create_task(self._keep_lease(claim, worker))
        document = claim.document
        # A trace of its own, linked to the upload's: the upload's trace ended
        # when the client got its answer, maybe long before this run.
        span = tracer.start_span("knowledge.ingest", context=Context(), links=_upload_link(claim), attributes={
            "document_id": document.id, "kb_id": document.kb_id, "content_type": document.content_type,
            "size_bytes": document.size_bytes, "attempt": document.attempts})
        try:
            with trace.use_span(span, end_on_exit=True):
                await self._ingest(claim)
        except ClaimLost:
            log.info("document %s was taken from this worker mid-run", claim.document.id)
        except asyncio.CancelledError:
            if heartbeat.done() and not heartbeat.cancelled() and heartbeat.result() is False:
                log.warning("lost the lease on document %s mid-run", claim.document.id)
                return
            raise
        finally:
            heartbeat.cancel()
            self.board.changed(claim.document.id)

    async def _keep_lease(self, claim: Claim, worker: asyncio.Task) -> bool:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                held = await self.store.renew_lease(claim, self.config.lease_seconds)
            except Exception:
                log.exception("could not renew the lease on document %s", claim.document.id)
                continue  # the lease has a while yet to run
            if not held:
                worker.cancel()
                return False

    async def _stage(self, claim: Claim, status: DocumentStatus) -> None:
        if not await self.store.set_status(claim, status):
            raise ClaimLost
        self.board.changed(claim.document.id)

    async def _ingest(self, claim: Claim) -> None:
        document = claim.document
        if document.attempts > self.config.max_attempts:
            # Its earlier runs all died with their process: a document that
            # kills its worker must not take down one replica after another.
            log.error("document %s: failing it, its last %d runs never finished", document.id,
                      self.config.max_attempts)
            await self._settle(claim, DocumentStatus.FAILED, error=_interrupted(self.config.max_attempts))
            return
        parse_ms = chunk_ms = index_ms = 0.0
        try:
            await self._stage(claim, DocumentStatus.PARSING)
            started = time.perf_counter()
            with tracer.start_as_current_span("knowledge.parse", attributes={
                    "content_type": document.content_type}) as span:
                content = await self.blobs.read(claim.blob_key)
                try:
                    parsed = await self.steps.parse(content, document.content_type)
                except (ParseError, UnsupportedType) as error:
                    log.info("document %s could not be parsed: %s (%s)", document.id, error,
                             getattr(error, "detail", "") or "no more detail")
                    raise Failed(str(error)) from None
                span.set_attribute("bytes", len(content))
            parse_ms = ms_since(started)

            await self._stage(claim, DocumentStatus.CHUNKING)
            started = time.perf_counter()
            try:
                settings = ChunkingSettings(claim.chunk_max_tokens, claim.chunk_overlap_tokens)
            except ValueError as error:
                raise Failed(f"the knowledge base's chunking settings are invalid: {error}") from None
            with tracer.start_as_current_span("knowledge.chunk", attributes={
                    "max_tokens": settings.max_tokens, "overlap_tokens": settings.overlap_tokens}) as span:
                chunks = await self.steps.chunk(parsed, settings)
                span.set_attribute("chunks", len(chunks))
            if not chunks:
                raise Failed("the document has no text to index")
            chunk_ms = ms_since(started)
            self._chunked()
            # What the file says of itself (an e-mail's sender and subject) is metadata too; what the
            # uploader said wins.
            metadata = {**file_metadata(parsed.metadata), **document.metadata}

            await self._stage(claim, DocumentStatus.INDEXING)
            started = time.perf_counter()
            with tracer.start_as_current_span("knowledge.index", attributes={"chunks": len(chunks)}) as span:
                try:
                    vectors = await self.indexer.index(document.tenant_id, document.kb_id, document.id, chunks,
                                                       parsed.title or document.filename, metadata,
                                                       document.filename)
                    self._index_failures = 0
                except IndexRejected as error:
                    log.error("document %s: the index refused its chunks: %s", document.id, error)
                    raise Failed(INDEX_REFUSED) from None
                span.set_attribute("vectors", vectors)
            index_ms = ms_since(started)
        except Failed as error:
            await self._settle(claim, DocumentStatus.FAILED, error=str(error),
                               timings=StageTimings(parse_ms, chunk_ms, index_ms))
            return
        except IndexUnavailable as error:
            log.warning("document %s: the index cannot be reached: %s", document.id, error)
            self._index_failures += 1
            await self._retry(claim, INDEX_UNREACHABLE, self._index_failures, attempt_counts=False)
            return
        except StepStopped as error:
            log.warning("document %s: %s (attempt %d of %d)", document.id, error, document.attempts,
                        self.config.max_attempts)
            await self._fail_or_retry(claim, str(error), str(error) + RETRYING,
                                      timings=StageTimings(parse_ms, chunk_ms, index_ms))
            return
        except (ClaimLost, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("ingesting document %s failed (attempt %d of %d)", document.id, document.attempts,
                          self.config.max_attempts)
            await self._fail_or_retry(claim, _internal_error(document.attempts),
                                      "an internal error interrupted ingestion" + RETRYING)
            return
        await self._settle(claim, DocumentStatus.INDEXED, chunk_count=len(chunks), vector_count=vectors,
                           timings=StageTimings(parse_ms, chunk_ms, index_ms), warnings=parsed.warnings,
                           metadata=metadata)

    async def _settle(self, claim: Claim, status: DocumentStatus, **outcome) -> None:
        _record_outcome(status.value, outcome.get("timings"))
        if await self.store.finish(claim, status, **outcome):
            return
        # The document went while this run indexed it: whatever the run added
        # must go too. (A restarted document is left to its new run.)
        document = claim.document
        if await self.store.document(document.tenant_id, document.id) is None:
            with contextlib.suppress(IndexUnavailable, IndexRejected):
                await self.indexer.delete_document(document.tenant_id, document.kb_id, document.id)
        raise ClaimLost

    async def _fail_or_retry(self, claim: Claim, final_error: str, retry_error: str,
                             timings: StageTimings = StageTimings()) -> None:
        if claim.document.attempts >= self.config.max_attempts:
            await self._settle(claim, DocumentStatus.FAILED, error=final_error, timings=timings)
        else:
            await self._retry(claim, retry_error, claim.document.attempts)

    async def _retry(self, claim: Claim, error: str, failures: int, attempt_counts: bool = True) -> None:
        delay = backoff_seconds(failures, self.config.retry_initial_seconds, self.config.retry_max_seconds)
        log.warning("document %s: %s; next attempt in %.1f s", claim.document.id, error, delay)
        _record_outcome("retry", None)
        due = datetime.now(timezone.utc) + timedelta(seconds=delay)
        if not await self.store.retry_later(claim, error, due, attempt_counts=attempt_counts):
            raise ClaimLost


def _record_outcome(outcome: str, timings: StageTimings | None) -> None:
    INGESTED.labels(outcome).inc()
    trace.get_current_span().set_attribute("outcome", outcome)
    for stage, milliseconds in (("parse", timings.parse_ms), ("chunk", timings.chunk_ms),
                                ("index", timings.index_ms)) if timings else ():
        if milliseconds:
            STAGE_SECONDS.labels(stage).observe(milliseconds / 1000)
