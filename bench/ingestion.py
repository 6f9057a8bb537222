"""Ingestion throughput: 1,000 mixed documents uploaded to the knowledge
service and followed until indexed, with the time split across parse, chunk
and index.

    .venv/bin/python -m bench.ingestion [--documents 1000] [--concurrency 2] [--out bench/results/ingestion.md]

knowledge and rag_engine run in processes of their own, with their defaults
(SQLite, local blobs, Milvus Lite, tantivy, all-MiniLM-L6-v2 on ONNX
Runtime). The documents are synthetic, in equal shares of plain text,
Markdown, HTML, JSON Lines and PDF, 150 to 1,200 words each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from fpdf import FPDF

from bench.rag_harness import auth_metadata, service, token_issuer
from bench.retrieval_speed import Corpus
from sagemesh.knowledge.v1 import knowledge_pb2 as pb
from sagemesh.knowledge.v1 import knowledge_pb2_grpc

TENANT = "bench"
PIECE = 64 * 1024
FINISHED = (pb.DOCUMENT_STATUS_INDEXED, pb.DOCUMENT_STATUS_FAILED)


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


def document(corpus: Corpus, number: int) -> tuple[str, bytes]:
    title = corpus.text(4).rstrip(".")
    parts = paragraphs(corpus, corpus.rng.randint(150, 1200))
    kind = ("txt", "md", "html", "jsonl", "pdf")[number % 5]
    if kind == "txt":
        content = "\n\n".join(parts).encode()
    elif kind == "md":
        sections = [f"## {corpus.text(3).rstrip('.')}\n\n{p}" for p in parts]
        content = f"# {title}\n\n" + "\n\n".join(sections)
        content = content.encode()
    elif kind == "html":
        body = "".join(f"<h2>{corpus.text(3)}</h2><p>{p}</p>" for p in parts)
        content = f"<html><head><title>{title}</title><script>var x = 1;</script></head><body>{body}</body></html>"
        content = content.encode()
    elif kind == "jsonl":
        content = "\n".join(json.dumps({"title": f"{title} {i}", "text": p}) for i, p in enumerate(parts)).encode()
    else:
        content = as_pdf(title, parts)
    return f"doc-{number:04d}.{kind}", content


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


async def run(count: int, concurrency: int) -> list[str]:
    corpus = Corpus(seed=21)
    files = [document(corpus, number) for number in range(count)]
    megabytes = sum(len(content) for _, content in files) / 1e6
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as scratch:
        data_dir = Path(scratch)
        metadata = auth_metadata(token_issuer(data_dir), TENANT)
        async with service("rag_engine", data_dir) as (_, rag_address), \
                service("knowledge", data_dir, rag_engine_addr=rag_address,
                        ingest_concurrency=str(concurrency)) as (channel, _):
            stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
            kb = (await stub.CreateKnowledgeBase(pb.CreateKnowledgeBaseRequest(
                knowledge_base=pb.KnowledgeBase(name="bench")), metadata=metadata)).knowledge_base
            started = time.perf_counter()
            uploads = asyncio.Semaphore(8)

            async def send(filename: str, content: bytes) -> None:
                async with uploads:
                    await upload(stub, metadata, kb.id, filename, content)

            await asyncio.gather(*(send(filename, content) for filename, content in files))
            uploaded = time.perf_counter() - started
            print(f"uploaded {count} documents ({megabytes:.1f} MB) in {uploaded:.1f} s", flush=True)
            while True:
                documents = await all_documents(stub, metadata, kb.id)
                done = sum(d.status in FINISHED for d in documents)
                if done == count:
                    break
                print(f"{done}/{count} finished after {time.perf_counter() - started:.0f} s", flush=True)
                await asyncio.sleep(10)
            elapsed = time.perf_counter() - started
    failed = [d for d in documents if d.status == pb.DOCUMENT_STATUS_FAILED]
    indexed = [d for d in documents if d.status == pb.DOCUMENT_STATUS_INDEXED]
    chunks = sum(d.chunk_count for d in indexed)
    stages = {stage: sum(getattr(d.timings, f"{stage}_ms") for d in indexed) for stage in ("parse", "chunk", "index")}
    total = sum(stages.values()) or 1.0
    by_kind: dict[str, list[pb.Document]] = {}
    for d in indexed:
        by_kind.setdefault(d.filename.rsplit(".", 1)[1], []).append(d)
    rows = [
        f"| {kind} | {len(docs)} | {statistics.mean(d.chunk_count for d in docs):.1f} | "
        f"{statistics.median(d.timings.parse_ms for d in docs):.1f} | "
        f"{statistics.median(d.timings.chunk_ms for d in docs):.1f} | "
        f"{statistics.median(d.timings.index_ms for d in docs):.0f} |"
        for kind, docs in sorted(by_kind.items())
    ]
    settings_text = ", ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("SAGEMESH_"))
    return [
        f"# Ingestion throughput ({date.today().isoformat()})", "",
        f"{count} synthetic documents ({megabytes:.1f} MB; text, Markdown, HTML, JSON Lines and PDF in equal "
        f"shares) uploaded over gRPC and followed until indexed; ingest_concurrency={concurrency}; "
        f"{platform.machine()}, {os.cpu_count()} cores; settings: {settings_text or 'defaults'}.", "",
        f"- {len(indexed)} indexed, {len(failed)} failed, {chunks} chunks in {elapsed:.0f} s: "
        f"**{len(indexed) / elapsed:.1f} documents/s, {chunks / elapsed:.1f} chunks/s** "
        f"(uploads took {uploaded:.1f} s of it).",
        f"- Time across stages, summed over documents: parse {stages['parse'] / total:.1%}, "
        f"chunk {stages['chunk'] / total:.1%}, index (embedding included) {stages['index'] / total:.1%}.", "",
        "| format | documents | chunks each | parse ms (median) | chunk ms | index ms |", "|---|---|---|---|---|---|",
        *rows, "",
        *([f"Failed: {', '.join(f'{d.filename}: {d.error}' for d in failed[:5])}", ""] if failed else []),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = asyncio.run(run(args.documents, args.concurrency))
    print("\n".join(table))
    if args.out:
        args.out.write_text("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
