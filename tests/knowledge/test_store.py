"""The ingestion queue's rules, on SQLite and on PostgreSQL: one worker per
document at a time, leases that run out, and no write from a run that lost
its document."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from meshkit import db
from services.knowledge.domain import DocumentStatus, StageTimings
from services.knowledge.server import MIGRATIONS
from services.knowledge.store import KnowledgeBaseGone, NewDocument
from services.knowledge.store_sql import SqlKnowledgeStore
from tests.conftest import DATABASE_BACKENDS


@pytest.fixture(params=DATABASE_BACKENDS)
async def store(request, database_url_for):
    engine = db.create_engine(database_url_for(request.param))
    await db.migrate(engine, MIGRATIONS, version_table="alembic_version_knowledge")
    yield SqlKnowledgeStore(engine)
    await engine.dispose()


async def new_document(store, kb_id: str | None = None, content: str | None = None):
    tenant = "t-" + uuid.uuid4().hex[:8]
    if kb_id is None:
        kb_id = (await store.create_knowledge_base(tenant, "kb", "", "", 200, 30)).id
    sha = uuid.uuid4().hex * 2 if content is None else content
    document, _ = await store.add_document(NewDocument(tenant, kb_id, "f.txt", "text/plain", 5, sha,
                                                       f"{tenant}/{kb_id}/{sha}", {"team": "ops"}))
    return document


async def test_two_workers_never_hold_one_document(store):
    document = await new_document(store)
    first, second = await asyncio.gather(store.claim_due("w1", 10, 30), store.claim_due("w2", 10, 30))
    claimed = [c.document.id for c in first + second if c.document.id == document.id]
    assert claimed == [document.id]
    claim = (first + second)[0]
    assert claim.document.attempts == 1 and claim.chunk_max_tokens == 200


async def test_a_lease_that_runs_out_lets_another_worker_take_the_document(store):
    document = await new_document(store)
    [old] = [c for c in await store.claim_due("w1", 10, 0.2) if c.document.id == document.id]
    assert [c for c in await store.claim_due("w2", 10, 30) if c.document.id == document.id] == []
    await asyncio.sleep(0.3)
    [new] = [c for c in await store.claim_due("w2", 10, 30) if c.document.id == document.id]
    assert new.document.attempts == 2
    # The first worker lost it: its writes no longer land.
    assert not await store.set_status(old, DocumentStatus.INDEXING)
    assert not await store.finish(old, DocumentStatus.INDEXED, chunk_count=3)
    assert await store.set_status(new, DocumentStatus.PARSING)


async def test_a_restarted_worker_takes_back_its_documents_at_once(store):
    document = await new_document(store)
    assert [c for c in await store.claim_due("pod-a", 10, 300) if c.document.id == document.id]
    assert await store.release_leases("pod-a") >= 1
    assert [c for c in await store.claim_due("pod-a", 10, 300) if c.document.id == document.id]


async def test_a_restart_outdates_the_run_in_flight(store):
    document = await new_document(store)
    [claim] = [c for c in await store.claim_due("w1", 10, 30) if c.document.id == document.id]
    restarted = await store.restart_document(document.tenant_id, document.id)
    assert restarted.generation == 1 and restarted.status is DocumentStatus.PENDING
    assert not await store.finish(claim, DocumentStatus.INDEXED, chunk_count=9)
    [again] = [c for c in await store.claim_due("w1", 10, 30) if c.document.id == document.id]
    assert again.document.generation == 1


async def test_finish_records_the_outcome_and_leaves_the_queue(store):
    document = await new_document(store)
    [claim] = [c for c in await store.claim_due("w1", 10, 30) if c.document.id == document.id]
    assert await store.finish(claim, DocumentStatus.INDEXED, chunk_count=4, vector_count=4,
                              timings=StageTimings(1.5, 2.5, 10.0))
    done = await store.document(document.tenant_id, document.id)
    assert (done.status, done.chunk_count, done.vector_count) == (DocumentStatus.INDEXED, 4, 4)
    assert done.timings.total_ms == 14.0 and done.metadata == {"team": "ops"}
    assert [c for c in await store.claim_due("w1", 100, 30) if c.document.id == document.id] == []


async def test_retry_later_waits_until_due(store):
    document = await new_document(store)
    [claim] = [c for c in await store.claim_due("w1", 10, 30) if c.document.id == document.id]
    assert await store.retry_later(claim, "waiting for the index", datetime.now(timezone.utc) + timedelta(seconds=0.3))
    pending = await store.document(document.tenant_id, document.id)
    assert pending.status is DocumentStatus.PENDING and pending.error == "waiting for the index"
    assert [c for c in await store.claim_due("w1", 10, 30) if c.document.id == document.id] == []
    await asyncio.sleep(0.4)
    assert [c for c in await store.claim_due("w1", 10, 30) if c.document.id == document.id]


async def test_the_same_content_in_one_base_is_one_document(store):
    document = await new_document(store, content="a" * 64)
    again, duplicate = await store.add_document(NewDocument(document.tenant_id, document.kb_id, "other.txt",
                                                            "text/plain", 5, "a" * 64, "key", {}))
    assert duplicate and again.id == document.id


async def test_adding_to_a_deleted_base_is_refused(store):
    document = await new_document(store)
    assert await store.delete_knowledge_base(document.tenant_id, document.kb_id) == [
        f"{document.tenant_id}/{document.kb_id}/{document.sha256}"]
    with pytest.raises(KnowledgeBaseGone):
        await new_document(store, kb_id=document.kb_id)


async def test_a_wait_for_the_index_gives_back_its_attempt_and_other_retries_keep_theirs(store):
    document = await new_document(store)
    now = datetime.now(timezone.utc)

    async def claim():
        [claimed] = [c for c in await store.claim_due("w1", 100, 30) if c.document.id == document.id]
        return claimed

    assert (first := await claim()).document.attempts == 1
    assert await store.retry_later(first, "waiting for the index", now, attempt_counts=False)
    assert (second := await claim()).document.attempts == 1
    assert await store.retry_later(second, "an internal error interrupted ingestion", now)
    assert (await claim()).document.attempts == 2
