"""What users read of a failure is a sentence of ours: no exception's repr, no path, no
library's or peer's message. The detail goes to the log, with the document's id."""

from __future__ import annotations

import hashlib
import logging

from sagemesh.knowledge.v1 import knowledge_pb2 as pb
from services.knowledge.ingestion import INDEX_UNREACHABLE
from tests.conftest import free_port
from tests.knowledge.conftest import eventually, knowledge_serving, knowledge_settings

TENANT = "acme"
LEAKS = ("Error", "Errno", "rag_engine", "127.0.0.1", "/", "Traceback", "'")


async def test_an_internal_error_and_an_unreachable_index_reach_the_user_in_plain_words(
        tmp_path, keys_dir, tokens, caplog):
    unreachable = f"127.0.0.1:{free_port()}"
    settings = knowledge_settings(tmp_path / "knowledge", keys_dir, unreachable, ingest_max_attempts=2,
                                  retry_initial_seconds=0.1, retry_max_seconds=0.3, index_timeout_seconds=2)
    content = b"This memo waits for an index that never comes."
    async with knowledge_serving(settings, tokens) as knowledge:
        base = await knowledge.create_base(TENANT, "plain-words")
        uploaded = await knowledge.upload(TENANT, base.id, "memo.txt", content)

        async def waiting_for_the_index():
            status = await knowledge.status(TENANT, uploaded.document_id)
            return status.status == pb.DOCUMENT_STATUS_PENDING and status.error

        assert await eventually(waiting_for_the_index) == INDEX_UNREACHABLE
        # The stored file goes missing (a volume lost, an operator's mistake): reading it raises an
        # OSError that names the path, which the user must not see.
        (settings.blob_root / TENANT / base.id / hashlib.sha256(content).hexdigest()).unlink()
        with caplog.at_level(logging.ERROR, logger="services.knowledge.ingestion"):
            final = await knowledge.finished(TENANT, uploaded.document_id, timeout=60)

    assert final.status == pb.DOCUMENT_STATUS_FAILED
    assert final.error.startswith("ingestion failed on each of its 2 attempts because of an internal error")
    assert not [leak for leak in LEAKS if leak in final.error], final.error
    logged = [r for r in caplog.records if uploaded.document_id in r.getMessage() and r.exc_info]
    assert logged and isinstance(logged[-1].exc_info[1], FileNotFoundError)
