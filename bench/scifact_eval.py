"""Retrieval quality on BEIR SciFact, through the real service path: every
abstract goes in with IndexChunks, every test claim is asked with Retrieve.

    .venv/bin/python -m bench.scifact_eval [--data ../shared/data/beir-scifact]
        [--out bench/results/scifact.md] [--modes bm25,vector,hybrid,hybrid+rerank]
        [--precisions int8,fp32]

rag_engine runs as its own process with the settings of this run (pass
SAGEMESH_* variables to choose the embedding model or a reranker), once per
precision of the ONNX model (the modes that embed run in each; BM25 once). The
data set is read where it lies: its licence (CC BY-NC 2.0) forbids copying it
here. Prints nDCG@10 and Recall@100 per mode, as BEIR defines them.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

from bench.rag_harness import ROOT, RagClient, rag_engine
from services.rag_engine.embedding import MINILM
from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb

TENANT, KB = "bench", "scifact"
MODES = {
    "bm25": dict(weights=pb.FusionWeights(vector=0, bm25=1)),
    "vector": dict(weights=pb.FusionWeights(vector=1, bm25=0)),
    "hybrid": dict(weights=pb.FusionWeights(vector=1, bm25=1)),
    "hybrid+rerank": dict(weights=pb.FusionWeights(vector=1, bm25=1), use_rerank=True),
}


def ndcg_at(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(gain / math.log2(i + 2) for i, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    wanted = {doc for doc, gain in relevant.items() if gain > 0}
    return len(wanted & set(ranked[:k])) / len(wanted) if wanted else 0.0


def load(data: Path) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    corpus = [json.loads(line) for line in (data / "corpus.jsonl").open()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (data / "queries.jsonl").open())}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with (data / "qrels" / "test.tsv").open() as rows:
        for row in csv.DictReader(rows, delimiter="\t"):
            qrels[row["query-id"]][row["corpus-id"]] = int(row["score"])
    return corpus, queries, dict(qrels)


async def index(client: RagClient, corpus: list[dict], in_flight: int) -> float:
    """Each abstract is one document of one chunk, as BEIR scores them."""
    pending = iter(corpus)
    started = time.perf_counter()

    async def worker() -> None:
        for doc in pending:
            chunk = pb.Chunk(chunk_id=doc["_id"], title=doc["title"].strip(), text=doc["text"])
            await client.stub.IndexChunks(
                pb.IndexChunksRequest(tenant_id=TENANT, kb_id=KB, document_id=doc["_id"], chunks=[chunk])
            )

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started


async def evaluate(client: RagClient, queries, qrels, mode: str) -> dict[str, float]:
    metadata = client.metadata_for(TENANT)
    ndcg, recall, latency = [], [], []
    for query_id, relevant in qrels.items():
        started = time.perf_counter()
        reply = await client.stub.Retrieve(
            pb.RetrieveRequest(query=queries[query_id], kb_ids=[KB], top_k=100, **MODES[mode]), metadata=metadata
        )
        latency.append((time.perf_counter() - started) * 1000)
        ranked = [r.document_id for r in reply.results]
        ndcg.append(ndcg_at(ranked, relevant, 10))
        recall.append(recall_at(ranked, relevant, 100))
    return {"ndcg@10": statistics.fmean(ndcg), "recall@100": statistics.fmean(recall),
            "p50_ms": statistics.median(latency)}


def configuration() -> str:
    chosen = {k: v for k, v in sorted(os.environ.items()) if k.startswith("SAGEMESH_")}
    settings = ", ".join(f"{k}={v}" for k, v in chosen.items()) or "defaults"
    return (f"settings: {settings}; {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "SAGEMESH_SCIFACT_DIR", ROOT.parent / "shared" / "data" / "beir-scifact")))
    parser.add_argument("--modes", default="bm25,vector,hybrid,hybrid+rerank")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--precisions", default="int8,fp32",
                        help="the ONNX model's precisions to run (SAGEMESH_EMBEDDING_PRECISION); "
                             "ignored for another embedding model")
    args = parser.parse_args()
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {list(MODES)}")
    skipped = []
    if "hybrid+rerank" in modes and os.environ.get("SAGEMESH_RERANKER", "none") == "none":
        modes.remove("hybrid+rerank")
        skipped.append("hybrid+rerank was not run: no reranker is configured "
                       "(set SAGEMESH_RERANKER and its model directory or URL).")
        print(skipped[-1])
    onnx_model = os.environ.get("SAGEMESH_EMBEDDING_MODEL", MINILM) == MINILM
    precisions = args.precisions.split(",") if onnx_model and "SAGEMESH_EMBEDDING_PRECISION" not in os.environ else [""]
    corpus, queries, qrels = load(args.data)
    rows, indexing = [], []
    for precision in precisions:
        settings = {"embedding_precision": precision} if precision else {}
        label = f" ({precision})" if precision else ""
        with tempfile.TemporaryDirectory(prefix="scifact-") as data_dir:
            async with rag_engine(Path(data_dir), **settings) as client:
                seconds = await index(client, corpus, args.in_flight)
                indexing.append(f"{precision or 'indexing'}: {seconds:.0f} s, {len(corpus) / seconds:.1f} abstracts/s")
                print(f"indexed {len(corpus)} abstracts{label} in {seconds:.0f} s ({len(corpus) / seconds:.1f}/s)")
                for mode in modes:
                    if mode == "bm25" and precision != precisions[0]:
                        continue  # no model in it: the same as the first run's
                    result = await evaluate(client, queries, qrels, mode)
                    name = mode if mode == "bm25" else mode + label
                    rows.append((name, result))
                    print(f"{name:21} nDCG@10 {result['ndcg@10']:.3f}  Recall@100 {result['recall@100']:.3f}  "
                          f"p50 {result['p50_ms']:.1f} ms", flush=True)
    table = [
        f"# BEIR SciFact through IndexChunks + Retrieve ({date.today().isoformat()})", "",
        f"{len(corpus)} abstracts, {len(qrels)} test queries; {configuration()}"
        + (f"; the embedding model in {' and in '.join(precisions)} (SAGEMESH_EMBEDDING_PRECISION)"
           if precisions[0] else "") + ".",
        f"Indexing (embedding included; {args.in_flight} IndexChunks calls in flight, an abstract each): "
        + "; ".join(indexing) + ".", "",
        "| mode | nDCG@10 | Recall@100 | Retrieve p50 (ms) |", "|---|---|---|---|",
        *(f"| {mode} | {r['ndcg@10']:.3f} | {r['recall@100']:.3f} | {r['p50_ms']:.1f} |" for mode, r in rows),
        "", *skipped, "",
    ]
    print("\n".join(table))
    if args.out:
        args.out.write_text("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
