"""Retrieve latency and indexing throughput on synthetic corpora of 10k and
100k chunks, over gRPC to rag_engine in its own process.

    .venv/bin/python -m bench.retrieval_speed [--sizes 10000,100000] [--queries 300]
        [--rerank-queries 60] [--filter-queries 100] [--recall-queries 100] [--embed-all]
        [--vectors local|milvus-lite|milvus-server] [--out bench/results/retrieval_speed.md]

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

Vectors go to the local index (the default), to Milvus Lite, or to a real
Milvus standalone server started here for the run (scripts/milvus_standalone.py);
BM25 goes to tantivy. Each size also prints the vector search's recall@10
against exact search over the same vectors, with and without the filter: the
bench embeds each query with the service's model and compares it with every
stored vector.
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
from services.rag_engine.chunk_store import ChunkStore
from services.rag_engine.domain import Chunk
from services.rag_engine.embedding import load_embedder
from services.rag_engine.settings import RagEngineSettings
from services.rag_engine.vector_local import LocalVectorIndex
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


VECTOR_BACKENDS = ("local", "milvus-lite", "milvus-server")
# The filter the filtered requests and the filtered recall use: about half the corpus passes.
FILTER_FROM_YEAR = 2020
# Cosine within which a returned neighbour counts as tied with the exact tenth.
TIE = 0.001


def local_directory(data_dir: Path, collection: str) -> Path:
    # By its variable's name: a field with an alias takes no keyword of its own name.
    return RagEngineSettings(_env_file=None, data_dir=data_dir, SAGEMESH_VECTOR_COLLECTION=collection).local_vector_dir


def stored_vectors(backend: str, data_dir: Path, uri: str, collection: str, dimension: int
                   ) -> tuple[list[str], np.ndarray]:
    if backend == "local":
        store = ChunkStore(local_directory(data_dir, collection) / "chunks.sqlite", dimension)
        try:
            rids = [rid for block, _ in store.vectors_after(0) for rid in block.tolist()]
            identified = store.identified(rids)
        finally:
            store.close()
        return [identified[rid][0] for rid in rids], np.array([identified[rid][1] for rid in rids], np.float32)
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


async def write_directly(backend: str, data_dir: Path, milvus_uri: str, collection: str, corpus: Corpus,
                         base: dict[str, Chunk], vectors: dict[str, np.ndarray], size: int
                         ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """`size` chunks derived from the embedded base corpus, into the indexes; returns their ids,
    vectors and years, for the exact search that recall is measured against."""
    rng = np.random.default_rng(11)
    bases = list(base)
    dimension = len(next(iter(vectors.values())))
    if backend == "local":
        index = LocalVectorIndex(local_directory(data_dir, collection), dimension)
    else:
        index = MilvusVectorIndex(milvus_uri, dimension, collection=collection)
    bm25 = TantivyKeywordIndex(data_dir / "rag_engine" / "bm25")
    ids, written, years = [], np.empty((size, dimension), np.float32), np.empty(size, np.int64)
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
            written[i] = vector / np.linalg.norm(vector)
            batch_vectors.append(written[i].tolist())
            ids.append(f"c{i}")
            years[i] = int(source.metadata["year"])
        await index.upsert(batch, batch_vectors)
        await bm25.upsert(batch)
    await bm25.close()
    if backend == "local":
        # Into the HNSW graph (and its snapshot) before the service opens it: rows not yet in
        # the graph are searched exactly, which is not what a settled index measures.
        while index.unindexed_rows:
            await asyncio.sleep(0.5)
    await index.close()
    return ids, written, years


async def recall_at_10(client: RagClient, corpus: Corpus, queries: int, ids: list[str], vectors: np.ndarray,
                       years: np.ndarray, filtered: bool) -> tuple[float, float]:
    """The vector search's top 10 (through Retrieve, vectors only) against exact search over
    every stored vector (over those that pass the filter, when `filtered`): the share of the
    exact ten returned, and the share of those returned within TIE of the exact tenth."""
    embedder = load_embedder(RagEngineSettings(_env_file=None))
    metadata = client.metadata_for(TENANT)
    allowed = years >= FILTER_FROM_YEAR if filtered else np.ones(len(ids), bool)
    candidates = np.flatnonzero(allowed)
    candidate_vectors = vectors[candidates]
    position = {chunk_id: i for i, chunk_id in enumerate(ids)}
    found, near = [], []
    try:
        for _ in range(queries):
            text = corpus.query()
            query = np.array(await embedder.embed_query(text), np.float32)
            similarities = candidate_vectors @ query
            best = np.argsort(-similarities, kind="stable")[:10]
            exact = candidates[best]
            request = REQUESTS["hybrid, filter year >= 2020"] if filtered else {}
            reply = await client.stub.Retrieve(pb.RetrieveRequest(
                query=text, top_k=10, weights=pb.FusionWeights(vector=1, bm25=0), **request), metadata=metadata)
            returned = [r.chunk_id for r in reply.results]
            found.append(len({ids[i] for i in exact} & set(returned)) / 10)
            # A returned chunk as near to the query as the exact 10th (within TIE) is as good a
            # neighbour: near-copies in the corpus tie to the third decimal.
            tenth = float(similarities[best[-1]])
            near.append(sum(float(vectors[position[c]] @ query) >= tenth - TIE for c in returned) / 10)
    finally:
        await embedder.close()
    return statistics.fmean(found), statistics.fmean(near)


# What each measured request asks for, besides a query and top_k=10.
REQUESTS = {
    "hybrid": {},
    "hybrid, filter year >= 2020": {"filters": [pb.MetadataFilter(field="year",
                                                                  range=pb.NumericRange(gte=FILTER_FROM_YEAR))]},
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


async def run(sizes: list[int], queries: int, rerank_queries: int, filter_queries: int, recall_queries: int,
              embed_all: bool, backend: str) -> list[str]:
    reranker_dir = latency_cross_encoder.build(ROOT / "models" / "latency-cross-encoder")
    settings = {"reranker": "cross-encoder", "reranker_model_dir": str(reranker_dir), "rerank_candidates": "20",
                # The larger corpora's vectors are perturbed on purpose: no text embeds to them.
                "check_stored_vectors": "false"}
    corpus = Corpus()
    base_size = min(sizes)
    base = {c.chunk_id: c for c in corpus.chunks(base_size)}
    rows, notes, recalls = [], [], []
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-speed-")))
        server_url = (stack.enter_context(milvus_standalone(scratch / "milvus")) if backend == "milvus-server"
                      else None)
        base_vectors: dict[str, np.ndarray] = {}
        for size in sizes:
            data_dir = scratch / str(size)
            collection = f"speed_{size}"
            milvus_uri = server_url or str(data_dir / "rag_engine" / "milvus.db")
            settings.update(vector_collection=collection, vector_index="local" if backend == "local" else "milvus")
            if backend != "local":
                settings.update(milvus_uri=milvus_uri)
            through_service = size == base_size or embed_all
            written = None
            if not through_service:
                written = await write_directly(backend, data_dir, milvus_uri, collection, corpus, base, base_vectors,
                                               size)
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
                if written is not None and recall_queries:
                    ids, vectors, years = written
                    recall = [value for filtered in (False, True) for value in
                              await recall_at_10(client, corpus, recall_queries, ids, vectors, years, filtered)]
                    recalls.append((size, *recall))
                    print(size, "recall@10", recall, flush=True)
            if size == base_size and not embed_all:
                ids, vectors = stored_vectors(backend, data_dir, milvus_uri, collection, 384)
                base_vectors = dict(zip(ids, vectors))
    settings_text = ", ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("SAGEMESH_"))
    vectors = {"local": "the local index (SQLite, faiss HNSW-SQ fp16)", "milvus-lite": "Milvus Lite",
               "milvus-server": "a Milvus 2.3.5 standalone server"}[backend]
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
        *([f"The vector search's recall@10 against exact search over the same vectors ({recall_queries} queries "
           "each, vectors only; the filter as above):", "",
           f"| chunks | recall@10 | within {TIE} of the 10th | filtered: recall@10 | within {TIE} |",
           "|---|---|---|---|---|",
           *(f"| {size:,} | {plain:.3f} | {plain_near:.3f} | {filtered:.3f} | {filtered_near:.3f} |"
             for size, plain, plain_near, filtered, filtered_near in recalls), ""]
          if recalls else []),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    # A CPU cross-encoder takes seconds per query here: fewer samples.
    parser.add_argument("--rerank-queries", type=int, default=60)
    parser.add_argument("--filter-queries", type=int, default=100)
    parser.add_argument("--embed-all", action="store_true")
    parser.add_argument("--recall-queries", type=int, default=100,
                        help="queries for recall@10 against exact search, on the corpora written directly")
    parser.add_argument("--vectors", choices=VECTOR_BACKENDS, default="local",
                        help="the vector index: local (the default), milvus-lite, or a Milvus server started here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = asyncio.run(run(sorted(int(s) for s in args.sizes.split(",")), args.queries, args.rerank_queries,
                            args.filter_queries, args.recall_queries, args.embed_all, args.vectors))
    print("\n".join(table))
    if args.out:
        args.out.write_text("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
