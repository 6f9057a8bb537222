"""Knowledge bases and documents over real gRPC, indexed by a real rag_engine:
each format goes from upload to a Retrieve that finds its facts."""

from __future__ import annotations

import hashlib
import json

import grpc
import pytest
from fpdf import FPDF

from sagemesh.knowledge.v1 import knowledge_pb2 as pb
from tests.knowledge import scanned_files
from tests.knowledge.conftest import eventually, knowledge_serving, knowledge_settings

TENANT = "acme"


def pdf_bytes(pages: list[str], **encryption) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    if encryption:
        pdf.set_encryption(**encryption)
    return bytes(pdf.output())


MARKDOWN = b"""# Travel policy

## Trains

Employees travelling by train may book first class on journeys longer than four hours.

## Hotels

The nightly hotel budget in Zurich is 240 francs.
"""
HTML = b"""<html><head><title>Office guide</title><style>p { color: red }</style>
<script>var secret = "cobalt-unicorn-script";</script></head>
<body><h1>Office guide</h1><p>The espresso machine on floor three is descaled every Tuesday.</p></body></html>"""
TEXT = b"The parking garage closes at eleven at night.\n\nVisitors must sign in at the front desk."
JSONL = "\n".join(json.dumps(r) for r in [
    {"title": "Release 4.2", "text": "Release 4.2 added single sign-on through SAML."},
    {"title": "Release 4.3", "text": "Release 4.3 removed the legacy CSV exporter."},
]).encode()
PDF = pdf_bytes(["Cover page of the handbook.",
                 "The warehouse in Rotterdam ships orders before 3 pm on weekdays."])


@pytest.fixture(scope="module")
async def handbook(knowledge):
    return await knowledge.create_base(TENANT, "handbook", display_name="Company handbook")


@pytest.mark.parametrize("filename, content, query, fact, page", [
    ("travel.md", MARKDOWN, "hotel budget in Zurich", "240 francs", 0),
    ("office.html", HTML, "when is the espresso machine descaled", "descaled every Tuesday", 0),
    ("notes.txt", TEXT, "when does the parking garage close", "eleven at night", 0),
    ("releases.jsonl", JSONL, "which release removed the CSV exporter", "legacy CSV exporter", 0),
    ("handbook.pdf", PDF, "when does the Rotterdam warehouse ship orders", "before 3 pm", 2),
])
async def test_each_format_is_indexed_and_its_facts_are_found(knowledge, rag_engine, handbook, filename, content,
                                                              query, fact, page):
    uploaded = await knowledge.upload(TENANT, handbook.id, filename, content)
    assert uploaded.status == pb.DOCUMENT_STATUS_PENDING and not uploaded.duplicate

    statuses = await knowledge.watch(TENANT, uploaded.document_id)
    final = statuses[-1]
    assert final.status == pb.DOCUMENT_STATUS_INDEXED, final.error
    assert final.chunk_count >= 1 and final.vector_count == final.chunk_count
    assert final.timings.parse_ms > 0 and final.timings.index_ms > 0
    assert final.timings.total_ms >= final.timings.parse_ms + final.timings.index_ms
    seen = [s.status for s in statuses]
    assert seen == sorted(seen), "the watch reported statuses out of order"

    results = (await rag_engine.retrieve(TENANT, query, [handbook.id])).results
    top = next(r for r in results if r.document_id == uploaded.document_id)
    assert fact in top.content
    assert top.page == page


async def test_ocr_reads_the_pages_the_settings_allow_and_names_those_it_left_out(tmp_path, keys_dir, tokens,
                                                                                    rag_engine):
    settings = knowledge_settings(tmp_path / "knowledge", keys_dir, rag_engine.address, ocr_max_pages=1)
    first, second = scanned_files.SCANNED_FACTS
    scan = scanned_files.scanned_pdf([scanned_files.page([[first]]), scanned_files.page([[second]])])
    async with knowledge_serving(settings, tokens) as knowledge:
        base = await knowledge.create_base(TENANT, "scans")
        uploaded = await knowledge.upload(TENANT, base.id, "scan.pdf", scan)
        final = await knowledge.finished(TENANT, uploaded.document_id, timeout=120)
    # Indexed, with page 1 only, and a warning rather than a failure.
    assert final.status == pb.DOCUMENT_STATUS_INDEXED, final.error
    assert list(final.warnings) == ["only the first page without a text layer was recognised: 1 more was not "
                                    "read (page 2)"]
    assert final.chunk_count == 1 == await rag_engine.vectors_of(TENANT, base.id, uploaded.document_id)
    results = (await rag_engine.retrieve(TENANT, "who approves invoices, and the Lyon warehouse", [base.id])).results
    assert [(r.content, r.page) for r in results] == [(first, 1)]


async def test_markdown_chunks_carry_their_heading_path(knowledge, rag_engine, handbook):
    content = MARKDOWN.replace(b"240", b"310")  # new content, not a duplicate
    uploaded = await knowledge.upload(TENANT, handbook.id, "travel-2025.md", content)
    assert (await knowledge.finished(TENANT, uploaded.document_id)).status == pb.DOCUMENT_STATUS_INDEXED
    results = (await rag_engine.retrieve(TENANT, "Zurich hotel budget 310 francs", [handbook.id])).results
    top = next(r for r in results if r.document_id == uploaded.document_id)
    assert list(top.headings) == ["Travel policy", "Hotels"]
    assert top.title == "Travel policy"


async def test_html_scripts_and_styles_are_not_indexed(knowledge, rag_engine, handbook):
    uploaded = await knowledge.upload(TENANT, handbook.id, "office-2.html", HTML.replace(b"three", b"four"))
    assert (await knowledge.finished(TENANT, uploaded.document_id)).status == pb.DOCUMENT_STATUS_INDEXED
    results = (await rag_engine.retrieve(TENANT, "cobalt-unicorn-script", [handbook.id], top_k=20)).results
    assert all("cobalt" not in r.content and "color: red" not in r.content for r in results)


async def test_the_same_content_twice_returns_the_first_document(knowledge, handbook):
    content = b"Duplicate detection works on the bytes of the file."
    first = await knowledge.upload(TENANT, handbook.id, "a.txt", content)
    second = await knowledge.upload(TENANT, handbook.id, "renamed.txt", content)
    assert second.duplicate and second.document_id == first.document_id
    other_base = await knowledge.create_base(TENANT, "other-base")
    elsewhere = await knowledge.upload(TENANT, other_base.id, "a.txt", content)
    assert not elsewhere.duplicate and elsewhere.document_id != first.document_id


async def test_uploading_a_failed_documents_file_again_ingests_it_again(knowledge, handbook):
    broken = b"%PDF-1.4 nothing a reader can use"
    first = await knowledge.upload(TENANT, handbook.id, "broken.pdf", broken)
    failed = await knowledge.finished(TENANT, first.document_id)
    assert failed.status == pb.DOCUMENT_STATUS_FAILED
    again = await knowledge.upload(TENANT, handbook.id, "broken-again.pdf", broken)
    assert again.document_id == first.document_id and again.duplicate and again.retried
    assert again.status == pb.DOCUMENT_STATUS_PENDING
    # Ingested again (and, being as broken as before, failed again, later).
    failed_again = await knowledge.finished(TENANT, again.document_id)
    assert failed_again.status == pb.DOCUMENT_STATUS_FAILED
    assert failed_again.updated_at.ToDatetime() > failed.updated_at.ToDatetime()
    # An indexed document uploaded again stays as it is.
    fine = await knowledge.upload(TENANT, handbook.id, "fine.txt", b"Retries leave indexed documents alone.")
    await knowledge.finished(TENANT, fine.document_id)
    same = await knowledge.upload(TENANT, handbook.id, "fine.txt", b"Retries leave indexed documents alone.")
    assert same.duplicate and not same.retried and same.status == pb.DOCUMENT_STATUS_INDEXED


async def test_bases_are_found_by_name_and_documents_by_checksum(knowledge):
    wanted = await knowledge.create_base(TENANT, "found-by-name")
    await knowledge.create_base(TENANT, "found-by-name-not")
    await knowledge.create_base("another-tenant", "found-by-name")
    listed = await knowledge.stub.ListKnowledgeBases(pb.ListKnowledgeBasesRequest(name="found-by-name"),
                                                     metadata=knowledge.auth(TENANT))
    assert [kb.id for kb in listed.knowledge_bases] == [wanted.id]

    content = b"Found by the SHA-256 of its bytes."
    uploaded = await knowledge.upload(TENANT, wanted.id, "checksum.txt", content)
    await knowledge.upload(TENANT, wanted.id, "other.txt", b"Another file.")
    by_checksum = await knowledge.stub.ListDocuments(pb.ListDocumentsRequest(
        kb_id=wanted.id, sha256=hashlib.sha256(content).hexdigest().upper()), metadata=knowledge.auth(TENANT))
    assert [d.id for d in by_checksum.documents] == [uploaded.document_id]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await knowledge.stub.ListDocuments(pb.ListDocumentsRequest(kb_id=wanted.id, sha256="not-a-checksum"),
                                           metadata=knowledge.auth(TENANT))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sha256" in refused.value.details()


async def test_the_supported_types_are_listed_for_clients(knowledge):
    listed = await knowledge.stub.ListSupportedTypes(pb.ListSupportedTypesRequest(), metadata=knowledge.auth(TENANT))
    by_type = {t.content_type: list(t.extensions) for t in listed.types}
    assert by_type["application/pdf"] == [".pdf"] and by_type["image/jpeg"] == [".jpg", ".jpeg"]
    assert ".docx" in {e for extensions in by_type.values() for e in extensions}


async def test_unsupported_types_are_refused_naming_the_supported_ones(knowledge, handbook):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await knowledge.upload(TENANT, handbook.id, "slides.key", b"PK\x03\x04 not really")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ".pdf" in refused.value.details() and ".md" in refused.value.details()


@pytest.mark.parametrize("filename, content, reason", [
    ("broken.pdf", PDF[: len(PDF) // 3], "could not be read"),
    ("locked.pdf", pdf_bytes(["Secret numbers."], owner_password="owner", user_password="user"), "encrypted"),
    ("bad.jsonl", b'{"text": "fine"}\n{"text": \n', "line 2"),
])
async def test_an_unreadable_file_fails_its_document_not_the_service(knowledge, handbook, filename, content, reason):
    uploaded = await knowledge.upload(TENANT, handbook.id, filename, content)
    final = await knowledge.finished(TENANT, uploaded.document_id)
    assert final.status == pb.DOCUMENT_STATUS_FAILED
    assert reason in final.error
    still_working = await knowledge.upload(TENANT, handbook.id, "after.txt", b"The service still ingests files.")
    assert (await knowledge.finished(TENANT, still_working.document_id)).status == pb.DOCUMENT_STATUS_INDEXED
    await knowledge.stub.DeleteDocument(pb.DeleteDocumentRequest(document_id=still_working.document_id),
                                        metadata=knowledge.auth(TENANT))


async def test_a_file_over_the_size_limit_is_refused_and_not_kept(knowledge, handbook):
    before = await knowledge.stub.ListDocuments(pb.ListDocumentsRequest(kb_id=handbook.id, page_size=200),
                                                metadata=knowledge.auth(TENANT))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await knowledge.upload(TENANT, handbook.id, "big.txt", b"word " * 300_000)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit" in refused.value.details()
    after = await knowledge.stub.ListDocuments(pb.ListDocumentsRequest(kb_id=handbook.id, page_size=200),
                                               metadata=knowledge.auth(TENANT))
    assert len(after.documents) == len(before.documents)
    assert not any((knowledge.settings.blob_root / "tmp").iterdir()), "a staged upload was left behind"


async def test_upload_must_start_with_metadata(knowledge):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await knowledge.stub.UploadDocument(iter([pb.UploadDocumentRequest(data=b"text first")]),
                                            metadata=knowledge.auth(TENANT))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_knowledge_base_names_are_unique_per_tenant(knowledge):
    await knowledge.create_base(TENANT, "legal")
    with pytest.raises(grpc.aio.AioRpcError) as duplicate:
        await knowledge.create_base(TENANT, "legal")
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
    other_tenants = await knowledge.create_base("globex", "legal")
    assert other_tenants.name == "legal"
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await knowledge.create_base(TENANT, "Not A Name!")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_new_bases_get_default_chunking_and_may_set_their_own(knowledge):
    defaults = await knowledge.create_base(TENANT, "defaults")
    assert defaults.chunking.max_tokens == knowledge.settings.chunk_max_tokens
    custom = await knowledge.create_base(TENANT, "custom", chunking=pb.ChunkingConfig(max_tokens=120,
                                                                                        overlap_tokens=10))
    assert (custom.chunking.max_tokens, custom.chunking.overlap_tokens) == (120, 10)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await knowledge.create_base(TENANT, "bad-chunking", chunking=pb.ChunkingConfig(max_tokens=100,
                                                                                        overlap_tokens=90))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_listing_bases_pages_through_all_of_them(knowledge):
    names = {f"paged-{i}" for i in range(5)}
    for name in sorted(names):
        await knowledge.create_base("paging-tenant", name)
    seen, token = [], ""
    while True:
        page = await knowledge.stub.ListKnowledgeBases(pb.ListKnowledgeBasesRequest(page_size=2, page_token=token),
                                                       metadata=knowledge.auth("paging-tenant"))
        assert len(page.knowledge_bases) <= 2
        seen += [kb.name for kb in page.knowledge_bases]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(names)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await knowledge.stub.ListKnowledgeBases(pb.ListKnowledgeBasesRequest(page_token="not-a-token"),
                                                metadata=knowledge.auth("paging-tenant"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_another_tenant_sees_nothing(knowledge, handbook):
    uploaded = await knowledge.upload(TENANT, handbook.id, "private.txt", b"Only acme may read this line.")
    auth = knowledge.auth("globex")
    for call, request in [
        (knowledge.stub.GetKnowledgeBase, pb.GetKnowledgeBaseRequest(kb_id=handbook.id)),
        (knowledge.stub.GetDocument, pb.GetDocumentRequest(document_id=uploaded.document_id)),
        (knowledge.stub.DeleteDocument, pb.DeleteDocumentRequest(document_id=uploaded.document_id)),
        (knowledge.stub.DeleteKnowledgeBase, pb.DeleteKnowledgeBaseRequest(kb_id=handbook.id)),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await call(request, metadata=auth)
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await knowledge.upload("globex", handbook.id, "intruder.txt", b"Written into another tenant's base.")
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


async def test_deleting_a_document_removes_its_chunks(knowledge, rag_engine, handbook):
    uploaded = await knowledge.upload(TENANT, handbook.id, "ephemeral.txt",
                                      b"The ephemeral flamingo protocol expires on Friday.")
    assert (await knowledge.finished(TENANT, uploaded.document_id)).status == pb.DOCUMENT_STATUS_INDEXED
    assert await rag_engine.vectors_of(TENANT, handbook.id, uploaded.document_id) == 1
    await knowledge.stub.DeleteDocument(pb.DeleteDocumentRequest(document_id=uploaded.document_id),
                                        metadata=knowledge.auth(TENANT))
    assert await rag_engine.vectors_of(TENANT, handbook.id, uploaded.document_id) == 0
    results = (await rag_engine.retrieve(TENANT, "ephemeral flamingo protocol", [handbook.id])).results
    assert uploaded.document_id not in {r.document_id for r in results}
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await knowledge.status(TENANT, uploaded.document_id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reparse_runs_the_document_again_without_duplicating_chunks(knowledge, rag_engine, handbook):
    uploaded = await knowledge.upload(TENANT, handbook.id, "again.md", MARKDOWN + b"\nReparse me.\n")
    first = await knowledge.finished(TENANT, uploaded.document_id)
    reply = await knowledge.stub.ReparseDocument(pb.ReparseDocumentRequest(document_id=uploaded.document_id),
                                                 metadata=knowledge.auth(TENANT))
    assert reply.status == pb.DOCUMENT_STATUS_PENDING
    second = await knowledge.finished(TENANT, uploaded.document_id)
    assert second.status == pb.DOCUMENT_STATUS_INDEXED
    assert second.chunk_count == first.chunk_count
    assert await rag_engine.vectors_of(TENANT, handbook.id, uploaded.document_id) == first.chunk_count


async def test_deleting_a_base_deletes_its_documents_and_chunks(knowledge, rag_engine):
    base = await knowledge.create_base(TENANT, "short-lived")
    uploaded = await knowledge.upload(TENANT, base.id, "moon.txt", b"The lunar cafeteria serves waffles.")
    assert (await knowledge.finished(TENANT, uploaded.document_id)).status == pb.DOCUMENT_STATUS_INDEXED
    blobs = knowledge.settings.blob_root / TENANT / base.id
    assert any(blobs.iterdir())
    await knowledge.stub.DeleteKnowledgeBase(pb.DeleteKnowledgeBaseRequest(kb_id=base.id),
                                             metadata=knowledge.auth(TENANT))
    assert await rag_engine.vectors_of(TENANT, base.id, uploaded.document_id) == 0
    assert not any(blobs.iterdir())
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await knowledge.stub.GetKnowledgeBase(pb.GetKnowledgeBaseRequest(kb_id=base.id),
                                              metadata=knowledge.auth(TENANT))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_base_counts_its_documents(knowledge):
    base = await knowledge.create_base(TENANT, "counted")
    for i in range(3):
        await knowledge.upload(TENANT, base.id, f"{i}.txt", f"Document number {i}.".encode())

    async def counted():
        reply = await knowledge.stub.GetKnowledgeBase(pb.GetKnowledgeBaseRequest(kb_id=base.id),
                                                      metadata=knowledge.auth(TENANT))
        return reply.knowledge_base.document_count == 3

    await eventually(counted, timeout=5)
