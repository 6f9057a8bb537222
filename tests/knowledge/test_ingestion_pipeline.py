"""Parsing goes on while documents are indexed: a document gives its parsing
slot to the next once it is chunked, so the rag_engine sees many documents'
IndexChunks calls at once (and embeds them together). The rag_engine here is a
stand-in on a real gRPC server that holds IndexChunks until told to answer."""

from __future__ import annotations

import asyncio

import grpc

from sagemesh.knowledge.v1 import knowledge_pb2 as pb
from sagemesh.rag_engine.v1 import rag_engine_pb2, rag_engine_pb2_grpc
from tests.knowledge.conftest import eventually, knowledge_serving, knowledge_settings

TENANT = "acme"


class HeldRagEngine(rag_engine_pb2_grpc.RagEngineServiceServicer):
    def __init__(self) -> None:
        self.waiting: list[rag_engine_pb2.IndexChunksRequest] = []
        self.release = asyncio.Event()

    async def IndexChunks(self, request, context):
        self.waiting.append(request)
        await self.release.wait()
        return rag_engine_pb2.IndexChunksResponse(indexed_count=len(request.chunks), vector_count=len(request.chunks))


async def test_documents_are_parsed_while_earlier_ones_wait_on_the_index(tmp_path, keys_dir, tokens):
    rag_engine = HeldRagEngine()
    server = grpc.aio.server()
    rag_engine_pb2_grpc.add_RagEngineServiceServicer_to_server(rag_engine, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = knowledge_settings(tmp_path / "knowledge", keys_dir, f"127.0.0.1:{port}",
                                  ingest_concurrency=1, ingest_in_flight=4)
    try:
        async with knowledge_serving(settings, tokens) as knowledge:
            base = await knowledge.create_base(TENANT, "pipelined")
            documents = [(await knowledge.upload(TENANT, base.id, f"note-{n}.txt",
                                                 f"Note {n}: the ferry to the island leaves at {n} o'clock.".encode()
                                                 )).document_id for n in range(6)]

            async def four_indexing_at_once():
                return len(rag_engine.waiting) == 4

            # One parsing slot, yet four documents parsed and waiting on the index together.
            await eventually(four_indexing_at_once, timeout=60)
            await asyncio.sleep(0.5)
            assert len(rag_engine.waiting) == 4, "more documents ran than ingest_in_flight allows"
            # Each document's first call replaces whatever an earlier run left.
            assert all(request.replace_document for request in rag_engine.waiting)
            rag_engine.release.set()
            for document_id in documents:
                final = await knowledge.finished(TENANT, document_id, timeout=60)
                assert final.status == pb.DOCUMENT_STATUS_INDEXED, final.error
    finally:
        await server.stop(grace=0)
