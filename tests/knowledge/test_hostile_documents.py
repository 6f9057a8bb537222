"""A document that exhausts whatever parses it fails after its attempts, and the other
documents are indexed meanwhile: parsing runs in a sandbox with a memory limit and a timeout,
and an attempt is counted when a worker takes a document, so even one whose worker was killed
outright uses its attempts up instead of felling every worker in turn."""

from __future__ import annotations

import asyncio
import signal

import pytest

from meshkit import db
from sagemesh.knowledge.v1 import knowledge_pb2 as pb
from services.knowledge.store_sql import SqlKnowledgeStore
from tests.knowledge.conftest import eventually, knowledge_process, knowledge_serving, knowledge_settings
from tests.knowledge.hostile import one_long_paragraph, pdf_bomb

TENANT = "acme"
MAX_ATTEMPTS = 3


async def attempts_of(settings, document_id: str) -> int:
    """What the database says: the service does not show its attempts."""
    engine = db.create_engine(settings.database_url_for("knowledge"))
    try:
        return (await SqlKnowledgeStore(engine).document(TENANT, document_id)).attempts
    finally:
        await engine.dispose()


def good_document(number: int) -> bytes:
    return (f"Memo {number}. The cafeteria in building {number} serves lunch from noon; "
            f"its soup of the day is number {number * 7}.").encode()


@pytest.mark.parametrize("hostile, limits, reason", [
    (pdf_bomb, {"ingest_memory_mib": 256, "ingest_timeout_seconds": 60},
     "parsing was stopped: it used more than 256 MiB of memory"),
    (pdf_bomb, {"ingest_memory_mib": 8192, "ingest_timeout_seconds": 1},
     "parsing was stopped: it took longer than 1 s"),
    (one_long_paragraph, {"ingest_memory_mib": 256, "ingest_timeout_seconds": 60},
     "chunking was stopped: it used more than 256 MiB of memory"),
], ids=["pdf-bomb-memory", "pdf-bomb-time", "long-paragraph-memory"])
async def test_a_hostile_document_fails_after_its_attempts_while_the_other_documents_are_indexed(
        tmp_path, keys_dir, tokens, rag_engine, hostile, limits, reason):
    settings = knowledge_settings(tmp_path / "knowledge", keys_dir, rag_engine.address, ingest_concurrency=1,
                                  ingest_max_attempts=MAX_ATTEMPTS, retry_initial_seconds=0.1,
                                  retry_max_seconds=0.2, max_upload_bytes=8 * 2**20, **limits)
    # One sandbox worker: the good documents run in it between the hostile document's attempts.
    async with knowledge_serving(settings, tokens) as knowledge:
        base = await knowledge.create_base(TENANT, "mixed")
        bomb = await knowledge.upload(TENANT, base.id, f"quarterly.{'pdf' if hostile is pdf_bomb else 'txt'}",
                                      hostile())
        good = [await knowledge.upload(TENANT, base.id, f"memo-{n}.txt", good_document(n)) for n in range(4)]

        finals = await asyncio.gather(*(knowledge.finished(TENANT, d.document_id, timeout=120)
                                        for d in [bomb, *good]))
        assert [f.status for f in finals[1:]] == [pb.DOCUMENT_STATUS_INDEXED] * len(good)
        assert finals[0].status == pb.DOCUMENT_STATUS_FAILED
        assert finals[0].error == reason
        assert await attempts_of(settings, bomb.document_id) == MAX_ATTEMPTS
        found = await rag_engine.retrieve(TENANT, "soup of the day in building 2", [base.id])
        assert "number 14" in found.results[0].content


def long_document() -> bytes:
    """Takes the index seconds, so that the test can kill the service while it works."""
    return "\n\n".join(f"Paragraph {i}. Inventory of shelf {i}: {i * 3} boxes of copper wire, checked "
                       f"on day {i % 28 + 1} by the night shift." for i in range(900)).encode()


async def test_a_document_whose_runs_are_killed_with_their_process_fails_after_its_attempts(
        tmp_path, keys_dir, tokens, rag_engine):
    data_dir = tmp_path / "knowledge"
    limit = {"ingest_max_attempts": "2"}

    async def kill_while_it_runs(knowledge, process, document_id: str) -> None:
        async def claimed():
            status = (await knowledge.status(TENANT, document_id)).status
            assert status != pb.DOCUMENT_STATUS_INDEXED, "indexed before it could be killed"
            return status in (pb.DOCUMENT_STATUS_PARSING, pb.DOCUMENT_STATUS_CHUNKING, pb.DOCUMENT_STATUS_INDEXING)

        await eventually(claimed, timeout=60, interval=0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    async with knowledge_process(data_dir, keys_dir, rag_engine.address, tokens, **limit) as (knowledge, process):
        base = await knowledge.create_base(TENANT, "doomed", chunking=pb.ChunkingConfig(max_tokens=32,
                                                                                          overlap_tokens=4))
        doomed = (await knowledge.upload(TENANT, base.id, "inventory.txt", long_document())).document_id
        await kill_while_it_runs(knowledge, process, doomed)
    # The run that died counted: the restarted worker's run is the second and last.
    async with knowledge_process(data_dir, keys_dir, rag_engine.address, tokens, **limit) as (knowledge, process):
        await kill_while_it_runs(knowledge, process, doomed)
        assert await attempts_of(knowledge.settings, doomed) == 2

    async with knowledge_process(data_dir, keys_dir, rag_engine.address, tokens, **limit) as (knowledge, _):
        final = await knowledge.finished(TENANT, doomed, timeout=60)
        assert final.status == pb.DOCUMENT_STATUS_FAILED
        assert final.error == "ingestion stopped before it finished on each of its 2 attempts (its worker went down)"
        later = await knowledge.upload(TENANT, base.id, "memo.txt", good_document(1))
        assert (await knowledge.finished(TENANT, later.document_id)).status == pb.DOCUMENT_STATUS_INDEXED

