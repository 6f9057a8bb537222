"""What companies keep, through the whole mesh as `make run` starts it: each kind of file,
written here by the libraries that write it, uploaded as multipart through the gateway, is
indexed, and a question about its one fact is answered citing it by file name and location (the
page, slide, sheet or attachment). Files that are hostile or broken fail with a reason a person
understands, and the queue keeps flowing."""

from __future__ import annotations

import httpx
import pytest

from scripts.mesh_process import mesh_env, running_mesh
from tests.knowledge import office_files as office
from tests.knowledge import scanned_files as scanned

PASSWORD = "formats over rest passw0rd"
FINISHED = ("DOCUMENT_STATUS_INDEXED", "DOCUMENT_STATUS_FAILED")


def png(fact: str) -> bytes:
    return scanned.image_bytes(scanned.text_image([[fact]]), "PNG")


# (file name, its bytes, a question, words of the fact the cited source holds, the source's location)
CORPUS = [
    ("travel-policy.docx", office.docx_file, "How much may a hotel room in Oslo cost a night?", "1,850 kroner", ""),
    ("warehouse.odt", office.odt_file, "Where are the forklifts charged overnight?", "bay 7", ""),
    ("review.pptx", office.pptx_file, "Where did Iceland open its first store?", "Akureyri", "slide 2"),
    ("launch.odp", office.odp_file, "How many testers does the beta open to?", "300 testers", "slide 1"),
    ("budget.xlsx", office.xlsx_file, "When are contractors paid?", "15th", "sheet Notes"),
    ("deliveries.xls", office.xls_file, "How many units did Nordic Timber deliver?", "420", "sheet Deliveries"),
    ("courses.ods", office.ods_file, "How many seats has the welding basics course?", "Welding basics",
     "sheet Courses"),
    ("staff.csv", office.csv_file, "Who leads the office in Zürich?", "Zoë Brandt", ""),
    ("bergen-offer.eml", office.eml_file, "How much does the landlord accept a month?", "18,400 euros", ""),
    ("kiwi.msg", office.msg_file, "When does the kiwi shipment arrive now?", "12 April", ""),
    ("lighthouse.epub", office.epub_file, "When did the keeper arrive on Skerry Island?", "1887", ""),
    ("permit.png", lambda: png(scanned.PNG_FACT), "How much does the parking permit for lot F cost?", "35 euros", ""),
    ("visitors.jpg", lambda: scanned.image_bytes(scanned.text_image([[scanned.JPEG_FACT]]), "JPEG", quality=90),
     "Where do visitors to the Leiden office sign in?", "desk 4", ""),
    ("reimbursement-zh.png", lambda: png(scanned.CHINESE_FACT), "报销上限是多少", "三千元", ""),
    ("scanned.pdf", lambda: scanned.scanned_pdf([scanned.page([[fact]]) for fact in scanned.SCANNED_FACTS]),
     "When does the warehouse in Lyon close on Fridays?", "18:00", "page 2"),
]
# Besides the body: what the e-mail's attachment says, cited as the attachment.
ATTACHMENT_QUESTION = ("When does the lease start?", "starts in June", "attachment note.txt")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with running_mesh(mesh_env(tmp_path_factory.mktemp("formats"), SAGEMESH_LOG_LEVEL="WARNING",
                               SAGEMESH_RATE_LIMITS="false")) as running:
        yield running.url


@pytest.fixture(scope="module")
async def signed_in(mesh):
    async with httpx.AsyncClient(base_url=mesh, timeout=120) as client:
        email = "keeper@example.com"
        await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        login = (await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})).json()
        yield {"Authorization": f"Bearer {login['accessToken']}"}


async def upload_and_wait(client: httpx.AsyncClient, auth: dict, kb: str, name: str, content: bytes) -> dict:
    uploaded = await client.post(f"/api/v1/knowledge/bases/{kb}/documents", headers=auth,
                                 files={"file": (name, content, "application/octet-stream")})
    assert uploaded.status_code == 200, uploaded.text
    document_id = uploaded.json()["documentId"]
    async with client.stream("GET", f"/api/v1/knowledge/documents/{document_id}/status:watch", headers=auth) as watch:
        _ = [line async for line in watch.aiter_lines()]
    document = (await client.get(f"/api/v1/knowledge/documents/{document_id}", headers=auth)).json()
    assert document["status"] in FINISHED
    return document


@pytest.fixture(scope="module")
async def corpus(mesh, signed_in):
    async with httpx.AsyncClient(base_url=mesh, timeout=120) as client:
        kb = (await client.post("/api/v1/knowledge/bases", headers=signed_in, json={"name": "everything"})).json()
        documents = {name: await upload_and_wait(client, signed_in, kb["id"], name, build())
                     for name, build, *_ in CORPUS}
    return kb["id"], documents


def test_the_corpus_covers_every_supported_type():
    from services.knowledge.parsers import resolve_content_type, supported_types

    covered = {resolve_content_type(name) for name, *_ in CORPUS}
    # Plain text, Markdown, HTML and JSON Lines have suites of their own (test_service.py); the
    # rest is here, but for the variants read by the same code as a covered one.
    same_code = {"application/vnd.ms-excel.sheet.macroenabled.12", "image/tiff", "image/webp", "image/bmp",
                 "text/tab-separated-values"}
    elsewhere = {"text/plain", "text/markdown", "text/html", "application/jsonl"}
    assert {t.content_type for t in supported_types()} - covered == same_code | elsewhere


@pytest.mark.parametrize(("name", "question", "fact", "location"),
                         [(name, question, fact, location) for name, _, question, fact, location in CORPUS]
                         + [("bergen-offer.eml", *ATTACHMENT_QUESTION)],
                         ids=[name for name, *_ in CORPUS] + ["bergen-offer.eml-attachment"])
async def test_each_format_is_indexed_and_its_fact_cited_by_file_name_and_location(
        mesh, signed_in, corpus, name, question, fact, location):
    kb, documents = corpus
    document = documents[name]
    assert document["status"] == "DOCUMENT_STATUS_INDEXED", document.get("error")
    async with httpx.AsyncClient(base_url=mesh, timeout=120) as client:
        answered = await client.post("/api/v1/rag/query", headers=signed_in, json={"query": question, "kbIds": [kb]})
    assert answered.status_code == 200, answered.text
    cited = [s for s in answered.json()["sources"] if s.get("cited")]
    assert any(s["documentId"] == document["id"] and fact in s["content"] for s in cited), (
        answered.json()["answer"], [(s.get("filename"), s["content"][:80]) for s in answered.json()["sources"]])
    source = next(s for s in cited if s["documentId"] == document["id"] and fact in s["content"])
    assert source["filename"] == name
    assert source.get("location", "") == location


async def test_what_a_file_says_of_itself_is_metadata_and_what_was_left_out_a_warning(corpus):
    _, documents = corpus
    email = documents["bergen-offer.eml"]
    assert email["metadata"]["subject"] == office.EML_SUBJECT
    assert email["metadata"]["from"] == office.EML_FROM and email["metadata"]["date"].startswith("2024-03-05")
    assert any("setup.exe" in warning for warning in email["warnings"])
    assert any("hidden sheet" in warning for warning in documents["budget.xlsx"]["warnings"])
    assert documents["travel-policy.docx"].get("warnings", []) == []  # nothing was left out


async def test_retrieval_filters_on_what_an_email_says_of_itself(mesh, signed_in, corpus):
    kb, documents = corpus
    async with httpx.AsyncClient(base_url=mesh, timeout=120) as client:
        found = await client.post("/api/v1/rag/retrieve", headers=signed_in, json={
            "query": "euros a month", "kbIds": [kb], "topK": 20,
            "filters": [{"field": "subject", "equals": office.EML_SUBJECT}]})
    assert found.status_code == 200, found.text
    results = found.json()["results"]
    assert results and {r["documentId"] for r in results} == {documents["bergen-offer.eml"]["id"]}


# (file name, its bytes, words of the reason it fails with)
BROKEN = [
    ("bomb.docx", lambda: office.zip_bomb("word/"), "unpack"),
    ("bomb.xlsx", lambda: office.wide_zip_bomb("xl/"), "unpack"),
    ("locked.xlsx", lambda: office.encrypted(office.xlsx_file()), "password"),
    ("truncated.pptx", lambda: office.pptx_file()[:2000], "damaged"),
    ("picture.docx", lambda: office.PNG, "PNG"),
    ("huge.png", lambda: scanned.png_claiming(100_000, 100_000), "pixels"),
    ("noise.png", lambda: scanned.image_bytes(scanned.blurred_image(), "PNG"), ""),
]


async def test_broken_and_hostile_files_fail_with_a_reason_and_the_queue_drains(mesh, signed_in):
    async with httpx.AsyncClient(base_url=mesh, timeout=120) as client:
        kb = (await client.post("/api/v1/knowledge/bases", headers=signed_in, json={"name": "hostile"})).json()["id"]
        outcomes = {name: await upload_and_wait(client, signed_in, kb, name, build()) for name, build, _ in BROKEN}
        after = await upload_and_wait(client, signed_in, kb, "after.txt", b"The queue still flows after them.")
    for name, _, words in BROKEN:
        document = outcomes[name]
        if name == "noise.png":
            # Nothing legible: failed, or indexed with a warning that says the reading is doubtful.
            assert document["status"] == "DOCUMENT_STATUS_FAILED" or document.get("warnings"), document
            continue
        assert document["status"] == "DOCUMENT_STATUS_FAILED", (name, document)
        assert words.lower() in document["error"].lower(), (name, document["error"])
        assert "Traceback" not in document["error"] and "Error:" not in document["error"]
    assert after["status"] == "DOCUMENT_STATUS_INDEXED"


async def test_an_external_entity_is_never_resolved(mesh, signed_in, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("The vault code is WALRUS-4417.")
    async with httpx.AsyncClient(base_url=mesh, timeout=120) as client:
        kb = (await client.post("/api/v1/knowledge/bases", headers=signed_in, json={"name": "entities"})).json()["id"]
        document = await upload_and_wait(client, signed_in, kb, "entity.docx",
                                         office.docx_with_external_entity(str(secret)))
        found = await client.post("/api/v1/rag/retrieve", headers=signed_in,
                                  json={"query": "vault code WALRUS-4417", "kbIds": [kb], "topK": 20})
    # Read without what the entity named, or refused; never the file's contents.
    assert document["status"] in FINISHED
    assert all("WALRUS" not in r["content"] for r in found.json().get("results", []))
