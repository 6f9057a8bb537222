"""Text ingestion against the embedder's own speed: short text documents uploaded through the
gateway and followed until indexed, then the same chunks embedded by the embedding model alone,
in this process, once the mesh has stopped. The ratio says how much of the model's speed the
pipeline (upload, queue, parse, chunk, the IndexChunks calls, both index writes) keeps.

    .venv/bin/python -m bench.text_ingestion [--documents 2000] [--corpus scifact|synthetic]
                                             [--out bench/results/text_ingestion.md]

The documents are BEIR SciFact abstracts, read where they lie (../shared/data/beir-scifact or
SAGEMESH_SCIFACT_DIR; their licence forbids copying them), or synthetic text of the same length
where the set is not there. The whole mesh runs with its defaults but for the settings printed
(the gateway's rate limits off: 2,000 uploads from one user would otherwise wait on them).
Figures are refused when an upload or a document fails.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import machine
from bench.refused import Refused
from bench.retrieval_speed import Corpus
from scripts.mesh_process import mesh_env, running_mesh
from services.knowledge.chunking import ChunkingSettings, TokenizerCounter, chunk_document
from services.knowledge.parsers import parse
from services.knowledge.settings import KnowledgeSettings
from services.rag_engine.embedding import load_embedder
from services.rag_engine.settings import RagEngineSettings

ROOT = Path(__file__).resolve().parent.parent
BENCH_SETTINGS = {"SAGEMESH_RATE_LIMITS": "false", "SAGEMESH_LOG_LEVEL": "WARNING"}
PASSWORD = "bench-password-1"
UPLOADS_AT_ONCE = 8
GIVE_UP_SECONDS = 3600
POLL_SECONDS = 2.0
# Goals of issue 21: the pipeline at 0.85 of the model's own speed, and 50 chunks/s.
RATIO_GOAL = 0.85
CHUNKS_PER_SECOND_GOAL = 50


@dataclass(frozen=True)
class TextDocument:
    filename: str
    content: bytes


def scifact(documents: int) -> list[TextDocument] | None:
    data = Path(os.environ.get("SAGEMESH_SCIFACT_DIR", ROOT.parent / "shared" / "data" / "beir-scifact"))
    if not (data / "corpus.jsonl").is_file():
        return None
    found = []
    with (data / "corpus.jsonl").open() as lines:
        for line in lines:
            abstract = json.loads(line)
            found.append(TextDocument(f"{abstract['_id']}.txt",
                                      f"{abstract['title'].strip()}\n\n{abstract['text']}".encode()))
            if len(found) == documents:
                break
    return found


def synthetic(documents: int) -> list[TextDocument]:
    # SciFact's abstracts run about 200 words.
    corpus = Corpus()
    return [TextDocument(f"note-{n}.txt", corpus.text(corpus.rng.randint(120, 320)).encode())
            for n in range(documents)]


async def sign_in(client: httpx.AsyncClient) -> dict[str, str]:
    email = "ingest-bench@example.com"
    (await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})).raise_for_status()
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    login.raise_for_status()
    return {"Authorization": f"Bearer {login.json()['accessToken']}"}


async def ingest(url: str, documents: list[TextDocument]) -> tuple[float, int]:
    """Seconds from the first upload to the last document indexed, and the chunks indexed."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        headers = await sign_in(client)
        base = await client.post("/api/v1/knowledge/bases", headers=headers, json={"name": "text-bench"})
        base.raise_for_status()
        kb_id = base.json()["id"]
        pending = iter(documents)
        failures: list[str] = []

        async def uploader() -> None:
            for document in pending:
                reply = await client.post(f"/api/v1/knowledge/bases/{kb_id}/documents", headers=headers,
                                          files={"file": (document.filename, document.content, "text/plain")})
                if reply.status_code != 200:
                    failures.append(f"{document.filename}: {reply.status_code} {reply.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(uploader() for _ in range(UPLOADS_AT_ONCE)))
        print(f"uploaded {len(documents)} documents in {time.perf_counter() - started:.1f} s", flush=True)
        if failures:
            raise Refused(f"no figures: {len(failures)} uploads failed, e.g. {failures[0]}")
        while True:
            listed = await every_document(client, headers, kb_id)
            finished = [d for d in listed if d["status"] in ("DOCUMENT_STATUS_INDEXED", "DOCUMENT_STATUS_FAILED")]
            if len(finished) == len(documents):
                seconds = time.perf_counter() - started
                break
            if time.perf_counter() - started > GIVE_UP_SECONDS:
                raise Refused(f"no figures: {len(documents) - len(finished)} documents not finished "
                              f"after {GIVE_UP_SECONDS} s")
            print(f"{len(finished)}/{len(documents)} finished after {time.perf_counter() - started:.0f} s",
                  flush=True)
            # Not more often: listing 2,000 documents takes the knowledge service CPU that the
            # pipeline being measured needs (every 0.5 s, a tenth of its main thread).
            await asyncio.sleep(POLL_SECONDS)
        failed = [d for d in listed if d["status"] == "DOCUMENT_STATUS_FAILED"]
        if failed:
            raise Refused(f"no figures: {len(failed)} documents failed, e.g. {failed[0].get('error')}")
        return seconds, sum(int(d.get("chunkCount", 0)) for d in listed)


async def every_document(client: httpx.AsyncClient, headers: dict[str, str], kb_id: str) -> list[dict]:
    found, token = [], ""
    while True:
        page = await client.get(f"/api/v1/knowledge/bases/{kb_id}/documents", headers=headers,
                                params={"pageSize": 1000, "pageToken": token})
        page.raise_for_status()
        body = page.json()
        found += body.get("documents", [])
        token = body.get("nextPageToken", "")
        if not token:
            return found


def passages(documents: list[TextDocument]) -> list[str]:
    """What the rag_engine embedded: each chunk as the knowledge service cut it, under its title."""
    knowledge = KnowledgeSettings(_env_file=None)
    counter = TokenizerCounter(knowledge.chunk_tokenizer)
    texts = []
    for document in documents:
        parsed = parse(document.content, "text/plain")
        title = parsed.title or document.filename
        texts += [f"{title}\n{chunk.text}" for chunk in chunk_document(parsed, ChunkingSettings(), counter)]
    return texts


async def embedder_alone(texts: list[str]) -> float:
    """Chunks per second, the default embedding model embedding `texts` as IndexChunks would."""
    embedder = load_embedder(RagEngineSettings(_env_file=None))
    try:
        await embedder.embed_documents(texts[:32])  # the first run sets the runtime up
        started = time.perf_counter()
        await embedder.embed_documents(texts)
        return len(texts) / (time.perf_counter() - started)
    finally:
        await embedder.close()


def report(documents: list[TextDocument], corpus: str, seconds: float, chunks: int, alone: float,
           expected_chunks: int, other: machine.OtherUse) -> str:
    pipeline = chunks / seconds
    ratio = pipeline / alone
    rag = RagEngineSettings(_env_file=None)
    knowledge = KnowledgeSettings(_env_file=None)
    settings = ", ".join(f"{key}={value}" for key, value in BENCH_SETTINGS.items())
    return "\n".join([
        f"# Text ingestion against the embedder ({datetime.date.today().isoformat()})", "",
        f"`python -m bench.text_ingestion --documents {len(documents)} --corpus {corpus.lower()}` on {machine.describe()}. "
        f"The whole mesh with its defaults but for {settings}: embedding model {rag.embedding_model} "
        f"({rag.embedding_precision}), chunks of up to {ChunkingSettings().max_tokens} tokens, "
        f"SAGEMESH_INGEST_CONCURRENCY={knowledge.ingest_concurrency}, "
        f"SAGEMESH_INGEST_IN_FLIGHT={knowledge.ingest_in_flight}. {other.sentence(os.cpu_count() or 1)}", "",
        f"- {len(documents)} {corpus} documents ({sum(len(d.content) for d in documents) / 1e6:.1f} MB of text) "
        f"uploaded through the gateway ({UPLOADS_AT_ONCE} at a time) and followed until indexed: {chunks} chunks "
        f"in {seconds:.0f} s, **{len(documents) / seconds:.1f} documents/s, {pipeline:.1f} chunks/s** "
        f"(goal: {CHUNKS_PER_SECOND_GOAL}).",
        f"- The embedding model alone on the same {expected_chunks} chunks, in one process after the mesh stopped: "
        f"**{alone:.1f} chunks/s**.",
        f"- The pipeline kept **{ratio:.2f}** of the model's speed (goal: {RATIO_GOAL}).", "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--corpus", choices=("scifact", "synthetic"), default="scifact",
                        help="SciFact abstracts where the set is found, else synthetic text")
    parser.add_argument("--out", type=Path, default=None)
    options = parser.parse_args()
    documents = scifact(options.documents) if options.corpus == "scifact" else None
    corpus = "SciFact" if documents else "synthetic"
    if documents is None:
        if options.corpus == "scifact":
            print("SciFact not found: synthetic text instead", file=sys.stderr)
        documents = synthetic(options.documents)
    texts = passages(documents)
    try:
        with tempfile.TemporaryDirectory(prefix="text-ingestion-") as data_dir, \
                running_mesh(mesh_env(Path(data_dir), **BENCH_SETTINGS)) as mesh:
            with machine.OtherCpuWatch(lambda: [mesh.launcher.pid, os.getpid()]) as others:
                seconds, chunks = asyncio.run(ingest(mesh.url, documents))
        if chunks != len(texts):
            raise Refused(f"no figures: the mesh indexed {chunks} chunks, the chunker here cut {len(texts)}")
        alone = asyncio.run(embedder_alone(texts))
    except Refused as refused:
        sys.exit(str(refused))
    table = report(documents, corpus, seconds, chunks, alone, len(texts), others.use())
    print(table)
    if options.out:
        options.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
