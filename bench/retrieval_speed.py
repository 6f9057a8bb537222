"""Retrieve latency and indexing throughput on synthetic corpora of 10k and
100k chunks, over gRPC to rag_engine in its own process.

    .venv/bin/python -m bench.retrieval_speed [--sizes 10000,100000] [--queries 300]
        [--rerank-queries 60] [--filter-queries 100] [--embed-all] [--milvus-server]
        [--out bench/results/retrieval_speed.md]

The 10k corpus goes in through IndexChunks with the configured embedding
model, which gives indexing throughput in chunks per second. Embedding 100k
chunks on this 2-core machine would take most of an hour, so by default the
larger corpora are written straight into the indexes with the 10k corpus's
vectors, each slightly perturbed, and texts varied word by word: the indexes
hold as many distinct entries, clustered as real text is. --embed-all sends
every corpus through IndexChunks instead.

Latency is measured one request at a time (p50/p99) for hybrid retrieval of
the top 10 without rerank, and with a cross-encoder of ms-marco-MiniLM-L-6's
size reranking the top 20 (bench/latency_cross_encoder.py).

Vectors go to Milvus Lite unless --milvus-server starts a real Milvus
standalone server here (scripts/milvus_standalone.py) for the run; BM25 goes
to tantivy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import numpy as np
from milvus_lite.server_manager import server_manager_instance
from pymilvus import MilvusClient

from bench import latency_cross_encoder
from bench.rag_harness import ROOT, RagClient, rag_engine
from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb
from scripts.milvus_standalone import milvus_standalone
from services.rag_engine.bm25_tantivy import TantivyKeywordIndex
from services.rag_engine.domain import Chunk
from services.rag_engine.vector_milvus import MilvusVectorIndex

TENANT = "bench"
KBS = [f"kb-{i}" for i in range(4)]
CHUNKS_PER_DOCUMENT = 20


def vocabulary() -> list[str]:
    """Whole English words from the embedding model's WordPiece vocabulary."""
    tokenizer = json.loads((ROOT / "models" / "all-minilm-l6-v2" / "tokenizer.json").read_text())
    return [w for w in tokenizer["model"]["vocab"] if w.isalpha() and w.isascii() and len(w) > 2]


class Corpus:
    """Deterministic text with Zipf-distributed words, as natural text has."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary()
        self.rng.shuffle(self.words)
        ranks = np.arange(1, len(self.words) + 1)
        self.weights = (1 / ranks ** 1.1).tolist()

    def text(self, length: int) -> str:
        return " ".join(self.rng.choices(self.words, self.weights, k=length)).capitalize() + "."

    def chunks(self, count: int) -> list[Chunk]:
        return [
            Chunk(TENANT, KBS[i // CHUNKS_PER_DOCUMENT % len(KBS)], f"doc-{i // CHUNKS_PER_DOCUMENT}",
                  f"c{i}", self.text(self.rng.randint(40, 120)), title=self.text(5),
                  metadata={"year": str(2015 + i % 10)})
            for i in range(count)
        ]

    def query(self) -> str:
        return self.text(self.rng.randint(3, 8))


async def index_through_service(client: RagClient, chunks: list[Chunk], in_flight: int = 2) -> float:
    documents: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        documents.setdefault(chunk.document_id, []).append(chunk)
    pending = iter(documents.values())
    started = time.perf_counter()

    async def worker() -> None:
        for group in pending:
            await client.stub.IndexChunks(pb.IndexChunksRequest(
                tenant_id=TENANT, kb_id=group[0].kb_id, document_id=group[0].document_id,
                chunks=[pb.Chunk(chunk_id=c.chunk_id, text=c.text, title=c.title, metadata=c.metadata)
                        for c in group],
            ))

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started


def stored_vectors(uri: str, collection: str) -> tuple[list[str], np.ndarray]:
    client = MilvusClient(uri)
    client.load_collection(collection)
    iterator = client.query_iterator(collection, batch_size=4096, output_fields=["chunk_id", "embedding"])
    ids, vectors = [], []
    while batch := iterator.next():
        ids += [row["chunk_id"] for row in batch]
        vectors += [row["embedding"] for row in batch]
    iterator.close()
    client.close()
    if "://" not in uri:
        server_manager_instance.release_server(uri)  # unlocks the file for the next process
    return ids, np.array(vectors, dtype=np.float32)


async def write_directly(data_dir: Path, milvus_uri: str, collection: str, corpus: Corpus, base: dict[str, Chunk],
                         vectors: dict[str, np.ndarray], size: int) -> None:
    """`size` chunks derived from the embedded base corpus, into the indexes."""
    rng = np.random.default_rng(11)
    bases = list(base)
    dimension = len(next(iter(vectors.values())))
    milvus = MilvusVectorIndex(milvus_uri, dimension, collection=collection)
    bm25 = TantivyKeywordIndex(data_dir / "rag_engine" / "bm25")
    for start in range(0, size, 5_000):
        batch, batch_vectors = [], []
        for i in range(start, min(size, start + 5_000)):
            source = base[bases[i % len(bases)]]
            words = source.text.split()
            for position in rng.integers(0, len(words), size=max(1, len(words) // 10)):
                words[position] = corpus.rng.choice(corpus.words)
            batch.append(Chunk(TENANT, KBS[i // CHUNKS_PER_DOCUMENT % len(KBS)], f"doc-{i // CHUNKS_PER_DOCUMENT}",
                               f"c{i}", " ".join(words), title=source.title, metadata=source.metadata))
            vector = vectors[source.chunk_id] + rng.normal(0, 0.015, dimension).astype(np.float32)
            batch_vectors.append((vector / np.linalg.norm(vector)).tolist())
        await milvus.upsert(batch, batch_vectors)
        await bm25.upsert(batch)
    await bm25.close()
    await milvus.close()


# What each measured request asks for, besides a query and top_k=10.
REQUESTS = {
    "hybrid": {},
    "hybrid, filter year >= 2020": {"filters": [pb.MetadataFilter(field="year", range=pb.NumericRange(gte=2020))]},
    "hybrid, rerank top 20": {"use_rerank": True},
}


async def measure(client: RagClient, corpus: Corpus, queries: int, request: dict) -> dict[str, float]:
    metadata = client.metadata_for(TENANT)
    latencies, stages = [], {"embed": [], "vector": [], "bm25": [], "rerank": []}
    warm_up = min(20, queries // 5)  # the first calls warm caches and connections
    for round_ in range(queries + warm_up):
        started = time.perf_counter()
        reply = await client.stub.Retrieve(
            pb.RetrieveRequest(query=corpus.query(), top_k=10, **request), metadata=metadata
        )
        if round_ >= warm_up:
            latencies.append((time.perf_counter() - started) * 1000)
            for stage in stages:
                stages[stage].append(getattr(reply.timings, f"{stage}_ms"))
    latencies.sort()
    return {"p50": statistics.median(latencies), "p99": latencies[int(len(latencies) * 0.99) - 1],
            **{stage: statistics.median(values) for stage, values in stages.items()}}


async def run(sizes: list[int], queries: int, rerank_queries: int, filter_queries: int,
              embed_all: bool, milvus_server: bool) -> list[str]:
    reranker_dir = latency_cross_encoder.build(ROOT / "models" / "latency-cross-encoder")
    settings = {"reranker": "cross-encoder", "reranker_model_dir": str(reranker_dir), "rerank_candidates": "20",
                # The larger corpora's vectors are perturbed on purpose: no text embeds to them.
                "check_stored_vectors": "false"}
    corpus = Corpus()
    base_size = min(sizes)
    base = {c.chunk_id: c for c in corpus.chunks(base_size)}
    rows, notes = [], []
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-speed-")))
        server_url = stack.enter_context(milvus_standalone(scratch / "milvus")) if milvus_server else None
        base_vectors: dict[str, np.ndarray] = {}
        for size in sizes:
            data_dir = scratch / str(size)
            collection = f"speed_{size}"
            milvus_uri = server_url or str(data_dir / "rag_engine" / "milvus.db")
            settings.update(milvus_uri=milvus_uri, vector_collection=collection)
            through_service = size == base_size or embed_all
            if not through_service:
                await write_directly(data_dir, milvus_uri, collection, corpus, base, base_vectors, size)
            async with rag_engine(data_dir, **settings) as client:
                if through_service:
                    chunks = list(base.values()) if size == base_size else corpus.chunks(size)
                    seconds = await index_through_service(client, chunks)
                    notes.append(f"Indexed {size:,} chunks through IndexChunks in {seconds:.0f} s: "
                                 f"{size / seconds:.0f} chunks/s, embedding included.")
                    print(notes[-1], flush=True)
                for name, request in REQUESTS.items():
                    count = rerank_queries if request.get("use_rerank") else filter_queries if "filters" in request \
                        else queries
                    result = await measure(client, corpus, count, request)
                    rows.append((size, name, result))
                    print(size, name, {k: round(v, 1) for k, v in result.items()}, flush=True)
            if size == base_size and not embed_all:
                ids, vectors = stored_vectors(milvus_uri, collection)
                base_vectors = dict(zip(ids, vectors))
    settings_text = ", ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("SAGEMESH_"))
    vectors = "a Milvus 2.3.5 standalone server" if milvus_server else "Milvus Lite"
    keywords = "Elasticsearch" if "SAGEMESH_ELASTICSEARCH_URL" in os.environ else "tantivy"
    return [
        f"# Retrieval speed ({date.today().isoformat()})", "",
        f"Synthetic corpora, {queries} queries each ({filter_queries} with a filter, {rerank_queries} with rerank), "
        "one at a time; "
        f"{platform.machine()}, {os.cpu_count()} cores; settings: {settings_text or 'defaults'} "
        f"({vectors}, {keywords}, all-minilm-l6-v2 on ONNX Runtime).",
        *notes,
        "" if embed_all else f"Corpora above {base_size:,} reuse the {base_size:,} embedded chunks' vectors, "
        "perturbed, with texts varied word by word (see the script's docstring).", "",
        "| chunks | request | p50 ms | p99 ms | embed | vector | bm25 | rerank |", "|---|---|---|---|---|---|---|---|",
        *(f"| {size:,} | {name} | {m['p50']:.1f} | {m['p99']:.1f} | {m['embed']:.1f} | "
          f"{m['vector']:.1f} | {m['bm25']:.1f} | {m['rerank']:.1f} |" for size, name, m in rows),
        "", "Stage columns are medians in ms, as the service reports them in RetrievalTimings.", "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    # A CPU cross-encoder takes seconds per query here: fewer samples.
    parser.add_argument("--rerank-queries", type=int, default=60)
    parser.add_argument("--filter-queries", type=int, default=100)
    parser.add_argument("--embed-all", action="store_true")
    parser.add_argument("--milvus-server", action="store_true", help="vectors in a Milvus server started here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = asyncio.run(run(sorted(int(s) for s in args.sizes.split(",")), args.queries, args.rerank_queries,
                            args.filter_queries, args.embed_all, args.milvus_server))
    print("\n".join(table))
    if args.out:
        args.out.write_text("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
