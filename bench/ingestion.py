"""Ingestion: a mixed corpus of every common format uploaded to the knowledge service and
followed until indexed (throughput, the time split across parse, chunk and index, parse time per
format, OCR pages per second), then one long scanned PDF read alone (OCR pages per second, and
the knowledge service's peak memory while it reads the pages one at a time).

    .venv/bin/python -m bench.ingestion [--documents 1000] [--scan-pages 200] [--concurrency 2]
                                        [--memory-mib MIB] [--out bench/results/ingestion.md]

--scan-pages 0 leaves the long scan out; --documents 0 runs it alone.

knowledge and rag_engine run in processes of their own (SQLite, local blobs, Milvus Lite,
tantivy, all-MiniLM-L6-v2 on ONNX Runtime). The mixed corpus runs with the services' defaults
but for what the command line sets (--concurrency, --memory-mib); the long scan on a knowledge
service of its own whose OCR limits let every page be read. The output states the settings. The documents are synthetic: 13 kinds in equal shares,
written by scripts/sample_documents.py (the knowledge tests' writers). Figures are refused,
and the command fails, when any document fails or the long scan leaves a page out.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF

from bench import machine
from bench.refused import Refused
from bench.rag_harness import auth_metadata, service_process, token_issuer
from bench.retrieval_speed import Corpus
from sagemesh.knowledge.v1 import knowledge_pb2 as pb
from sagemesh.knowledge.v1 import knowledge_pb2_grpc
from scripts import sample_documents as samples
from services.knowledge.settings import KnowledgeSettings

TENANT = "bench"
PIECE = 64 * 1024
FINISHED = (pb.DOCUMENT_STATUS_INDEXED, pb.DOCUMENT_STATUS_FAILED)
# The kinds of the mixed corpus, in equal shares, and what each is.
KINDS = {
    "txt": "plain text", "md": "Markdown", "html": "HTML", "jsonl": "JSON Lines", "pdf": "PDF with text",
    "docx": "Word", "pptx": "PowerPoint", "xlsx": "Excel", "csv": "CSV", "eml": "e-mail (.eml, with a .txt attachment)",
    "epub": "EPUB", "png": "PNG image of text", "scan": "scanned PDF of 1-2 pages (no text layer)",
}
# Scanned pages: 12-point type at 150 dpi, as an office scanner writes a letter or report.
SCAN_TYPE_SIZE = 25
# Refused past this: a document still not finished has its ingestion stuck.
GIVE_UP_SECONDS = 3 * 3600
# 1 GB, the goal for the knowledge service's memory while it reads a long scan.
MEMORY_GOAL = 10**9
MIB = 2**20



@dataclass(frozen=True)
class Sample:
    filename: str
    kind: str
    content: bytes
    pages: int = 0  # scanned pages, which OCR reads


def paragraphs(corpus: Corpus, words: int) -> list[str]:
    result = []
    while words > 0:
        length = min(words, corpus.rng.randint(40, 140))
        result.append(corpus.text(length))
        words -= length
    return result


def as_pdf(title: str, parts: list[str]) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    pdf.multi_cell(0, 6, title, new_x="LMARGIN", new_y="NEXT")
    for number, part in enumerate(parts):
        if number and number % 4 == 0:
            pdf.add_page()
        pdf.multi_cell(0, 6, part, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
    return bytes(pdf.output())


def heading(corpus: Corpus, words: int = 3) -> str:
    return corpus.text(words).rstrip(".")


def scanned_page(corpus: Corpus, words: int):
    """A page image of about `words` words in paragraphs, as far as the page holds them."""
    width, rows = samples.page_lines(SCAN_TYPE_SIZE)
    lines: list[list[str]] = []
    used = 0
    while words > 0:
        length = min(words, corpus.rng.randint(40, 90))
        wrapped = samples.wrap(corpus.text(length), SCAN_TYPE_SIZE, width)
        if used + len(wrapped) > rows:
            break
        lines.append(wrapped)
        used += len(wrapped) + 1
        words -= length
    return samples.page(lines, size=SCAN_TYPE_SIZE).convert("L")  # a grey scan


def scan(corpus: Corpus, pages: int) -> bytes:
    return samples.scanned_pdf([scanned_page(corpus, corpus.rng.randint(150, 400)) for _ in range(pages)])


def rows(corpus: Corpus, words: int) -> list[list[object]]:
    """A table of items: a header, then rows of a note of 8-20 words, an amount and a date."""
    table: list[list[object]] = [["Item", "Amount", "Due", "Note"]]
    start = datetime.date(2025, 1, 1)
    while words > 0:
        note = corpus.rng.randint(8, 20)
        table.append([heading(corpus, 2), round(corpus.rng.uniform(10, 50_000), 2),
                      start + datetime.timedelta(days=corpus.rng.randint(0, 700)), corpus.text(note)])
        words -= note + 2
    return table


def document(corpus: Corpus, number: int) -> Sample:
    kind = list(KINDS)[number % len(KINDS)]
    title = heading(corpus, 4)
    name = f"doc-{number:04d}"
    if kind == "png":
        parts = paragraphs(corpus, corpus.rng.randint(60, 200))
        image = samples.text_image([samples.wrap(p, 30, 1100) for p in parts], size=30, width=1200)
        return Sample(f"{name}.png", kind, samples.image_bytes(image, "PNG"), pages=1)
    if kind == "scan":
        pages = corpus.rng.randint(1, 2)
        return Sample(f"{name}-scan.pdf", kind, scan(corpus, pages), pages=pages)
    words = corpus.rng.randint(150, 1200)
    parts = paragraphs(corpus, words)
    if kind == "txt":
        content = "\n\n".join(parts).encode()
    elif kind == "md":
        content = (f"# {title}\n\n" + "\n\n".join(f"## {heading(corpus)}\n\n{p}" for p in parts)).encode()
    elif kind == "html":
        body = "".join(f"<h2>{corpus.text(3)}</h2><p>{p}</p>" for p in parts)
        content = (f"<html><head><title>{title}</title><script>var x = 1;</script></head>"
                   f"<body>{body}</body></html>").encode()
    elif kind == "jsonl":
        content = "\n".join(json.dumps({"title": f"{title} {i}", "text": p}) for i, p in enumerate(parts)).encode()
    elif kind == "pdf":
        content = as_pdf(title, parts)
    elif kind == "docx":
        content = samples.write_docx(title, [(heading(corpus), parts[i:i + 2]) for i in range(0, len(parts), 2)])
    elif kind == "pptx":
        slides = []
        while words > 0:
            points = [corpus.text(corpus.rng.randint(8, 20)) for _ in range(corpus.rng.randint(3, 5))]
            notes = corpus.text(corpus.rng.randint(15, 40))
            slides.append((heading(corpus, 4), points, notes))
            words -= sum(len(p.split()) for p in points) + len(notes.split())
        content = samples.write_pptx(slides)
    elif kind == "xlsx":
        content = samples.write_xlsx({"Items": rows(corpus, words), "Summary": [["Note"], [corpus.text(20)]]})
    elif kind == "csv":
        content = samples.write_csv(rows(corpus, words))
    elif kind == "eml":
        message = samples.email_message(
            title, "Alice Archer <alice@example.com>", "Bob Baker <bob@example.com>",
            datetime.datetime(2025, 3, 1 + number % 28, 9, 30, tzinfo=datetime.timezone.utc),
            plain="\n\n".join(parts[:-1] or parts), html="".join(f"<p>{p}</p>" for p in parts[:-1] or parts))
        message.add_attachment(parts[-1].encode(), maintype="text", subtype="plain", filename="notes.txt")
        content = bytes(message)
    else:  # epub
        chapters = [(heading(corpus), f"<h1>{heading(corpus)}</h1>" + "".join(f"<p>{p}</p>" for p in parts[i:i + 2]))
                    for i in range(0, len(parts), 2)]
        content = samples.write_epub(title, chapters, identifier=name)
    return Sample(f"{name}.{kind}", kind, content)


async def upload(stub, metadata, kb_id: str, filename: str, content: bytes) -> str:
    def requests():
        yield pb.UploadDocumentRequest(metadata=pb.DocumentMetadata(kb_id=kb_id, filename=filename))
        for start in range(0, len(content), PIECE):
            yield pb.UploadDocumentRequest(data=content[start:start + PIECE])

    return (await stub.UploadDocument(requests(), metadata=metadata)).document_id


async def all_documents(stub, metadata, kb_id: str) -> list[pb.Document]:
    documents, token = [], ""
    while True:
        page = await stub.ListDocuments(pb.ListDocumentsRequest(kb_id=kb_id, page_size=200, page_token=token),
                                        metadata=metadata)
        documents += page.documents
        token = page.next_page_token
        if not token:
            return documents


async def create_base(stub, metadata, name: str) -> str:
    reply = await stub.CreateKnowledgeBase(pb.CreateKnowledgeBaseRequest(knowledge_base=pb.KnowledgeBase(name=name)),
                                           metadata=metadata)
    return reply.knowledge_base.id


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value at least `share` of them are at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def mib(size: int) -> str:
    return f"{size / MIB:,.0f} MiB"


def failures(documents: list[pb.Document]) -> str:
    failed = [d for d in documents if d.status == pb.DOCUMENT_STATUS_FAILED]
    return "; ".join(f"{d.filename}: {d.error}" for d in failed[:10]) + (" …" if len(failed) > 10 else "")


def settings_sentence(**overrides: object) -> str:
    """The knowledge settings a run depends on, as the service reads them, each one set otherwise
    than by default with its default."""
    settings = KnowledgeSettings(_env_file=None, **overrides)
    defaults = KnowledgeSettings(_env_file=None)
    names = ("ingest_concurrency", "ingest_in_flight", "ingest_memory_mib", "ingest_timeout_seconds", "ocr_max_pages",
             "ocr_budget_seconds")
    return ", ".join(f"SAGEMESH_{name.upper()}={getattr(settings, name):g}"
                     + (f" (default {getattr(defaults, name):g})" if getattr(settings, name) != getattr(defaults, name)
                        else "")
                     for name in names)


def knowledge_settings(options: argparse.Namespace) -> dict[str, object]:
    """What the command line sets of both knowledge services."""
    return {"ingest_concurrency": options.concurrency,
            **({"ingest_memory_mib": options.memory_mib} if options.memory_mib else {})}


async def mixed_corpus(count: int, settings: dict[str, object], data_dir: Path, rag_address: str, metadata,
                       ours: list[int]) -> list[str]:
    concurrency = settings["ingest_concurrency"]
    corpus = Corpus(seed=21)
    started = time.perf_counter()
    files = [document(corpus, number) for number in range(count)]
    print(f"wrote {count} documents in {time.perf_counter() - started:.0f} s", flush=True)
    kinds = {sample.filename: sample for sample in files}
    megabytes = sum(len(sample.content) for sample in files) / 1e6
    async with service_process("knowledge", data_dir, rag_engine_addr=rag_address,
                               **{name: str(value) for name, value in settings.items()}) as (channel, _, process):
        ours.append(process.pid)
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        kb_id = await create_base(stub, metadata, "mixed")
        with machine.MemoryWatch(process.pid) as memory:
            started = time.perf_counter()
            uploads = asyncio.Semaphore(8)

            async def send(sample: Sample) -> None:
                async with uploads:
                    await upload(stub, metadata, kb_id, sample.filename, sample.content)

            await asyncio.gather(*(send(sample) for sample in files))
            uploaded = time.perf_counter() - started
            print(f"uploaded {count} documents ({megabytes:.1f} MB) in {uploaded:.1f} s", flush=True)
            while True:
                documents = await all_documents(stub, metadata, kb_id)
                done = sum(d.status in FINISHED for d in documents)
                if done == count:
                    break
                if time.perf_counter() - started > GIVE_UP_SECONDS:
                    raise Refused(f"{count - done} of {count} documents were not finished after "
                                  f"{GIVE_UP_SECONDS} s")
                print(f"{done}/{count} finished after {time.perf_counter() - started:.0f} s", flush=True)
                await asyncio.sleep(10)
            elapsed = time.perf_counter() - started
        ours.remove(process.pid)
    indexed = [d for d in documents if d.status == pb.DOCUMENT_STATUS_INDEXED]
    if len(indexed) != count:
        raise Refused(f"{count - len(indexed)} of {count} documents failed: {failures(documents)}")
    chunks = sum(d.chunk_count for d in indexed)
    stages = {stage: sum(getattr(d.timings, f"{stage}_ms") for d in indexed) for stage in ("parse", "chunk", "index")}
    total = sum(stages.values()) or 1.0
    by_kind: dict[str, list[pb.Document]] = {kind: [] for kind in KINDS}
    for d in indexed:
        by_kind[kinds[d.filename].kind].append(d)
    table = []
    for kind, docs in by_kind.items():
        if not docs:
            continue
        parse_ms = [d.timings.parse_ms for d in docs]
        size = statistics.median(len(kinds[d.filename].content) for d in docs) / 1e3
        table.append(f"| {kind} | {len(docs)} | {size:,.0f} | {statistics.mean(d.chunk_count for d in docs):.1f} | "
                     f"{statistics.median(parse_ms):,.1f} | {percentile(parse_ms, 0.95):,.1f} | "
                     f"{statistics.median(d.timings.chunk_ms for d in docs):.1f} | "
                     f"{statistics.median(d.timings.index_ms for d in docs):,.0f} |")
    ocr = []
    for kind, what in (("scan", "scanned PDFs"), ("png", "PNG images (a page each)")):
        docs = by_kind[kind]
        if docs:
            pages = sum(kinds[d.filename].pages for d in docs)
            seconds = sum(d.timings.parse_ms for d in docs) / 1e3
            ocr.append(f"{what}: {pages} page{'s' if pages != 1 else ''} in {seconds:,.0f} s of parsing, "
                       f"**{pages / seconds:.2f} pages/s**")
    warned = sum(bool(d.warnings) for d in indexed)
    return [
        "## Mixed corpus", "",
        f"{count} synthetic documents ({megabytes:.1f} MB) in equal shares of {len(KINDS)} kinds: "
        f"{', '.join(f'{what} ({kind})' for kind, what in KINDS.items())}; 150 to 1,200 words each (an image 60 to "
        f"200, a scanned page 150 to 400 in 12-point type, a page at 150 dpi), uploaded over gRPC (8 at a time) "
        f"and followed until indexed. The services with their defaults but for the command line's: "
        f"{settings_sentence(**settings)}.", "",
        f"- {len(indexed)} indexed, 0 failed ({warned} with warnings), {chunks} chunks in {elapsed:.0f} s: "
        f"**{len(indexed) / elapsed:.1f} documents/s, {chunks / elapsed:.1f} chunks/s** "
        f"(uploads took {uploaded:.1f} s of it).",
        f"- Time across stages, summed over documents: parse {stages['parse'] / total:.1%}, "
        f"chunk {stages['chunk'] / total:.1%}, index (embedding included) {stages['index'] / total:.1%}.",
        f"- OCR, while the other documents were parsed and indexed beside it: {'; '.join(ocr)}.",
        f"- The knowledge service's peak resident memory (its process and its {concurrency} sandbox workers, "
        f"summed, sampled every 0.2 s): **{mib(memory.peak_bytes)}** of RSS, {mib(memory.peak_proportional_bytes)} "
        f"of PSS (shared pages counted once).", "",
        "Per format, from each document's timings (GetDocumentStatus): parse ms is the parse stage (the sandbox "
        "call), p95 the 95th percentile by nearest rank.", "",
        "| format | documents | KB (median) | chunks each | parse ms (median) | parse ms (p95) | chunk ms (median) "
        "| index ms (median) |",
        "|---|---|---|---|---|---|---|---|",
        *table, "",
    ]


async def long_scan(pages: int, common: dict[str, object], data_dir: Path, rag_address: str, metadata,
                    ours: list[int]) -> list[str]:
    corpus = Corpus(seed=42)
    started = time.perf_counter()
    content = scan(corpus, pages)
    print(f"wrote a {pages}-page scan ({len(content) / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s",
          flush=True)
    # Every page read: the page cap at the pages, a budget for pages at 0.04 pages a second (the
    # speed measured was 0.29 pages/s on a quiet machine, 0.08 on a busy one, where a budget of 10 s
    # a page left 35 of 200 pages unread), the timeout above it. Memory as for the mixed corpus:
    # pages are rendered and recognised one at a time.
    budget = max(75.0, 25.0 * pages)
    settings = {**common, "ocr_max_pages": pages, "ocr_budget_seconds": budget,
                "ingest_timeout_seconds": budget + 600}
    stated = settings_sentence(**settings)
    scan_dir = data_dir / "long-scan"
    async with service_process("knowledge", data_dir, rag_engine_addr=rag_address,
                               database_url=f"sqlite:///{scan_dir}.db", blob_dir=str(scan_dir),
                               **{name: str(value) for name, value in settings.items()}) as (channel, _, process):
        ours.append(process.pid)
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        kb_id = await create_base(stub, metadata, "long-scan")
        with machine.MemoryWatch(process.pid) as memory:
            document_id = await upload(stub, metadata, kb_id, f"scan-{pages}-pages.pdf", content)
            started = time.monotonic()
            # When parsing was first and last seen, to within the polls.
            parsing: list[float] = []
            while True:
                status = await stub.GetDocumentStatus(pb.GetDocumentStatusRequest(document_id=document_id),
                                                      metadata=metadata)
                if status.status == pb.DOCUMENT_STATUS_PARSING:
                    parsing.append(time.monotonic())
                if status.status in FINISHED:
                    break
                if time.monotonic() - started > GIVE_UP_SECONDS:
                    raise Refused(f"the {pages}-page scan was not finished after {GIVE_UP_SECONDS} s")
                await asyncio.sleep(1)
        ours.remove(process.pid)
    if status.status != pb.DOCUMENT_STATUS_INDEXED:
        raise Refused(f"the {pages}-page scan failed: {status.error}")
    left_out = [warning for warning in status.warnings if "not read" in warning or "stopped" in warning]
    if left_out:
        raise Refused(f"the {pages}-page scan was indexed with pages left out: {'; '.join(left_out)}")
    seconds = status.timings.parse_ms / 1e3
    marks = memory.high_water_marks()
    growth = ""
    if len(parsing) >= 10:  # seconds of parsing seen: enough to compare its start with its end
        first, last = parsing[0], parsing[-1]
        fifth = (last - first) / 5
        growth = (f" The RSS sum's peak over the first fifth of the parsing: "
                  f"{mib(memory.peak_between(first, first + fifth))}; over the last fifth: "
                  f"{mib(memory.peak_between(last - fifth, last))}.")
    verdict = "under" if memory.peak_bytes < MEMORY_GOAL else "**over**"
    return [
        f"## A {pages}-page scan", "",
        f"A scanned PDF of {pages} A4 pages ({len(content) / 1e6:.1f} MB: grey JPEG pages at 150 dpi, no text "
        f"layer, 150 to 400 words a page in 12-point type) uploaded alone to a knowledge service of its own, "
        f"started with {stated} (the page cap and OCR budget raised so that every page is read, the timeout "
        f"above the budget).", "",
        f"- All {pages} pages recognised ({len(status.warnings)} warnings), {status.chunk_count} chunks; "
        f"parsing took {seconds:,.0f} s: **{pages / seconds:.2f} pages/s**.",
        f"- The knowledge service's peak resident memory while it read them, its process and its sandbox workers "
        f"summed ({memory.processes_at_peak} processes, sampled every 0.2 s): **{mib(memory.peak_bytes)}** of "
        f"RSS, {verdict} the goal of 1 GB ({mib(MEMORY_GOAL)}); {mib(memory.peak_proportional_bytes)} of PSS "
        f"(shared pages counted once). Each process's own peak (VmHWM): "
        + ", ".join(f"{mark.role} {mib(mark.high_water_bytes)}" for mark in marks) + "." + growth, "",
    ]


async def run(options: argparse.Namespace) -> list[str]:
    ours = [os.getpid()]
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as scratch, \
            machine.OtherCpuWatch(lambda: list(ours)) as others:
        data_dir = Path(scratch)
        metadata = auth_metadata(token_issuer(data_dir), TENANT)
        async with service_process("rag_engine", data_dir) as (_, rag_address, rag_process):
            ours.append(rag_process.pid)
            sections = []
            if options.documents:
                sections += await mixed_corpus(options.documents, knowledge_settings(options), data_dir,
                                               rag_address, metadata, ours)
            if options.scan_pages:
                sections += await long_scan(options.scan_pages, knowledge_settings(options), data_dir, rag_address,
                                            metadata, ours)
    environment = ", ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("SAGEMESH_"))
    return [
        f"# Ingestion ({datetime.date.today().isoformat()})", "",
        f"`python -m bench.ingestion --documents {options.documents} --scan-pages {options.scan_pages} "
        f"--concurrency {options.concurrency}"
        + (f" --memory-mib {options.memory_mib}" if options.memory_mib else "")
        + f"` on {machine.describe()}; SAGEMESH_* variables in the bench's "
        f"environment: {environment or 'none'}. {others.use().sentence(os.cpu_count() or 1)}", "",
        *sections,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1000, help="the mixed corpus's size; 0 skips it")
    parser.add_argument("--scan-pages", type=int, default=200, help="the long scan's pages; 0 skips it")
    parser.add_argument("--concurrency", type=int, default=2, help="the knowledge service's ingest_concurrency")
    parser.add_argument("--memory-mib", type=int, default=None,
                        help="the knowledge service's ingest_memory_mib (default: the service's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    try:
        report = asyncio.run(run(args))
    except Refused as refused:
        print(f"No figures: {refused}", file=sys.stderr)
        return 1
    print("\n".join(report))
    if args.out:
        args.out.write_text("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
