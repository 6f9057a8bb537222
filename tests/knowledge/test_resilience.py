"""Nothing uploaded is lost: not when the rag_engine is down, not when the
knowledge service is killed mid-ingestion."""

from __future__ import annotations

import signal

import grpc

from sagemesh.knowledge.v1 import knowledge_pb2 as pb
from tests.conftest import free_port
from tests.fixtures.mesh import rag_engine_serving
from tests.knowledge.conftest import eventually, knowledge_process, knowledge_serving, knowledge_settings

TENANT = "acme"


def long_document(number: int) -> bytes:
    paragraphs = [f"Section {i} of report {number}. The auditors counted {number * 100 + i} crates of tin "
                  f"in warehouse {i % 7} and noted that shipment {number}-{i} left on time." for i in range(60)]
    return "\n\n".join(paragraphs).encode()


async def test_documents_wait_for_an_unreachable_rag_engine_and_finish_when_it_returns(tmp_path, keys_dir, tokens):
    port = free_port()  # nothing listens here yet
    settings = knowledge_settings(tmp_path / "knowledge", keys_dir, f"127.0.0.1:{port}",
                                  retry_initial_seconds=0.2, retry_max_seconds=1.0, index_timeout_seconds=5)
    async with knowledge_serving(settings, tokens) as knowledge:
        base = await knowledge.create_base(TENANT, "patient")
        uploaded = await knowledge.upload(TENANT, base.id, "wait.txt", b"This file waits for the index.")

        async def retried_and_still_pending():
            status = await knowledge.status(TENANT, uploaded.document_id)
            assert status.status != pb.DOCUMENT_STATUS_FAILED, status.error
            return status.status == pb.DOCUMENT_STATUS_PENDING and "waiting for the index" in status.error

        await eventually(retried_and_still_pending, timeout=30)
        # Deleting needs the index too: refused, and nothing is lost.
        try:
            await knowledge.stub.DeleteDocument(pb.DeleteDocumentRequest(document_id=uploaded.document_id),
                                                metadata=knowledge.auth(TENANT))
            raise AssertionError("deleted a document while its chunks could not be deleted")
        except grpc.aio.AioRpcError as refused:
            assert refused.code() == grpc.StatusCode.UNAVAILABLE

        async with rag_engine_serving(tmp_path / "rag", keys_dir, tokens, port=port) as rag_engine:
            final = await knowledge.finished(TENANT, uploaded.document_id, timeout=60)
            assert final.status == pb.DOCUMENT_STATUS_INDEXED and final.error == ""
            assert await rag_engine.vectors_of(TENANT, base.id, uploaded.document_id) == final.chunk_count == 1


async def test_a_worker_killed_mid_ingestion_finishes_every_document_exactly_once(tmp_path, keys_dir, tokens,
                                                                                  rag_engine):
    data_dir = tmp_path / "knowledge"
    documents: list[str] = []
    async with knowledge_process(data_dir, keys_dir, rag_engine.address, tokens) as (knowledge, process):
        base = await knowledge.create_base(TENANT, "crash-test", chunking=pb.ChunkingConfig(max_tokens=64,
                                                                                              overlap_tokens=8))
        for number in range(8):
            documents.append((await knowledge.upload(TENANT, base.id, f"report-{number}.txt",
                                                     long_document(number))).document_id)

        async def caught_mid_way():
            statuses = [(await knowledge.status(TENANT, d)).status for d in documents]
            return (pb.DOCUMENT_STATUS_INDEXING in statuses
                    and statuses.count(pb.DOCUMENT_STATUS_INDEXED) <= len(documents) - 3)

        await eventually(caught_mid_way, timeout=60, interval=0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    async with knowledge_process(data_dir, keys_dir, rag_engine.address, tokens) as (knowledge, _):
        for document_id in documents:
            final = await knowledge.finished(TENANT, document_id, timeout=120)
            assert final.status == pb.DOCUMENT_STATUS_INDEXED, final.error
            in_index = await rag_engine.vectors_of(TENANT, base.id, document_id)
            assert final.chunk_count > 1 and final.vector_count == final.chunk_count == in_index
