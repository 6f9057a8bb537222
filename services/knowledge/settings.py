from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

from pydantic import Field

from meshkit.settings import MeshSettings
from services.knowledge.parsers.document import ParseLimits

_PARSING = ParseLimits()


class KnowledgeSettings(MeshSettings):
    # Uploaded files; default <data_dir>/knowledge/blobs.
    blob_dir: Path | None = None
    # The gateway reads the same setting: one limit for uploads however they come.
    max_upload_bytes: int = 100 * 1024 * 1024
    # A new knowledge base's chunking, unless it sets its own.
    chunk_max_tokens: int = 200
    chunk_overlap_tokens: int = 30
    # Counts tokens for the chunk budget: the embedding model's tokenizer.
    chunk_tokenizer: Path = Path("models/all-minilm-l6-v2/tokenizer.json")

    # The ingestion worker: documents parsed and chunked at once (each in a sandbox worker
    # process, see INGEST_MEMORY_MIB), and documents run at once, those whose chunks are
    # being indexed included (the rag_engine embeds concurrent documents' chunks together,
    # so more in flight keeps its batches full; a document indexing holds only its chunks).
    ingest_concurrency: int = 2
    ingest_in_flight: int = Field(default=16, ge=1)
    ingest_poll_seconds: float = 1.0
    # A worker holds a document for this long, renewing it as it works; a
    # crashed worker's documents are taken up again once it runs out.
    ingest_lease_seconds: float = 30.0
    # Names this worker's leases. Stable across restarts of one pod (its
    # hostname), so a restarted worker takes its documents back at once; it
    # must differ between workers running at the same time.
    worker_name: str = socket.gethostname()
    # Waits after the rag_engine could not be reached: doubling, capped.
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    # Runs of one document before it is failed, counted when a worker takes it (so a run whose
    # process died counts too); waits for an unreachable rag_engine do not count. Five rides out
    # a few restarts and database blips without a bad document looping for long.
    ingest_max_attempts: int = 5
    # Parsing and chunking an uploaded file run in a worker process with this much memory
    # each; past it the attempt is stopped. Chunking takes about 20 times the text's size (a
    # 22 MB text of paragraphs measured 450 MiB; one paragraph, 140 times), so 512 MiB takes
    # text documents of some 15 MB, PDFs of far more, and stops a crafted file (a PDF that
    # inflates to gigabytes). The pod's memory must hold INGEST_CONCURRENCY such workers.
    ingest_memory_mib: int = 512
    # The time each of parsing and chunking may take. Real files take milliseconds (bench:
    # 23 ms for the median PDF, 6 ms to chunk) and a 22 MB text 8 s to chunk; two minutes
    # stops a file crafted to spin.
    ingest_timeout_seconds: float = 120.0
    # OCR within one document: the pages recognised, and the seconds after which no further page
    # is begun (see ParseLimits: the rest are skipped with a warning, before the timeout above
    # would fail the whole document). Long scans need the three raised together.
    ocr_max_pages: int = Field(default=_PARSING.ocr_max_pages, ge=1)
    ocr_budget_seconds: float = Field(default=_PARSING.ocr_budget_seconds, gt=0)
    index_batch_size: int = 64
    index_timeout_seconds: float = 120.0

    @property
    def blob_root(self) -> Path:
        return self.blob_dir or self.data_dir / "knowledge" / "blobs"

    @property
    def parse_limits(self) -> ParseLimits:
        """The settings above that bound parsing, as the parsers take them."""
        return ParseLimits(**{field.name: getattr(self, field.name) for field in dataclasses.fields(ParseLimits)})
