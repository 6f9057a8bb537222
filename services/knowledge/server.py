"""The knowledge service: `python -m services.knowledge.server`."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from meshkit import db, server
from meshkit.channels import channel_to
from meshkit.sandbox import Sandbox
from meshkit.topology import SERVICES
from sagemesh.knowledge.v1 import knowledge_pb2_grpc
from services.knowledge.blobs_local import LocalBlobStore
from services.knowledge.chunking import ChunkingSettings
from services.knowledge.indexer_grpc import GrpcChunkIndexer
from services.knowledge.ingestion import IngestionWorker, WorkerConfig
from services.knowledge.library import Library, LibraryConfig
from services.knowledge.sandboxed_steps import SandboxedSteps, StepLimits
from services.knowledge.servicer import KnowledgeServicer
from services.knowledge.settings import KnowledgeSettings
from services.knowledge.status_board import StatusBoard
from services.knowledge.store_sql import SqlKnowledgeStore

MIGRATIONS = Path(__file__).parent / "migrations"


async def build(settings: KnowledgeSettings) -> server.ServiceApp:
    default_chunking = ChunkingSettings(settings.chunk_max_tokens, settings.chunk_overlap_tokens)
    engine = db.create_engine(settings.database_url_for("knowledge"))
    await db.migrate(engine, MIGRATIONS, version_table="alembic_version_knowledge")
    store = SqlKnowledgeStore(engine)
    blobs = LocalBlobStore(settings.blob_root)
    rag_engine = channel_to("rag_engine", settings)
    indexer = GrpcChunkIndexer(rag_engine, settings.index_batch_size, settings.index_timeout_seconds)
    board = StatusBoard()
    limits = StepLimits(settings.ingest_memory_mib, settings.ingest_timeout_seconds)
    # A worker process for each document ingested at once.
    sandbox = Sandbox("knowledge ingestion", limits.sandbox_limits(), workers=settings.ingest_concurrency)
    steps = SandboxedSteps(sandbox, limits, settings.chunk_tokenizer, settings.parse_limits)
    worker_config = WorkerConfig(
        name=settings.worker_name, concurrency=settings.ingest_concurrency, in_flight=settings.ingest_in_flight,
        poll_seconds=settings.ingest_poll_seconds,
        lease_seconds=settings.ingest_lease_seconds, retry_initial_seconds=settings.retry_initial_seconds,
        retry_max_seconds=settings.retry_max_seconds, max_attempts=settings.ingest_max_attempts,
    )
    worker = IngestionWorker(store, blobs, steps, indexer, board, worker_config)
    library = Library(store, blobs, indexer, board,
                      LibraryConfig(settings.max_upload_bytes, default_chunking), queued=worker.wake)
    await worker.start()
    return server.ServiceApp(
        info=SERVICES["knowledge"],
        register=partial(knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server, KnowledgeServicer(library)),
        health_checks={"database": partial(db.ping, engine)},
        on_shutdown=[worker.stop, _closing(sandbox), rag_engine.close, engine.dispose],
    )


def _closing(sandbox: Sandbox):
    async def close() -> None:
        # Joining its workers blocks: not on the event loop.
        await asyncio.to_thread(sandbox.close)
    return close


def main() -> None:
    server.run("knowledge", build, KnowledgeSettings())


if __name__ == "__main__":
    main()
