"""Parsing and chunking an uploaded file in sandbox workers: a crafted file can make a parser
allocate without bound (a PDF whose streams inflate to gigabytes) or spin, and one long
paragraph makes the chunker hold its every token; that must cost a worker process and the
document's attempt, never the service."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from meshkit.sandbox import Sandbox, SandboxCrashed, SandboxLimits, SandboxTimeout
from services.knowledge.chunking import ChunkingSettings, ChunkText, TokenizerCounter, chunk_document, tokenizer_file
from services.knowledge.parsers import ParsedDocument, ParseLimits, parse

log = logging.getLogger(__name__)


class StepStopped(Exception):
    """Parsing or chunking used up its memory or its time; the message says which, for the user."""


@dataclass(frozen=True)
class StepLimits:
    memory_mib: int
    timeout_seconds: float

    def sandbox_limits(self) -> SandboxLimits:
        # CPU time is only a backstop behind the wall clock: parsing and chunking are
        # single-threaded, so the timeout comes first, and a worker that dies ran out of memory.
        return SandboxLimits(memory_bytes=self.memory_mib * 2**20, cpu_seconds=2 * self.timeout_seconds)


def _chunk(document: ParsedDocument, settings: ChunkingSettings, tokenizer: Path) -> list[ChunkText]:
    return chunk_document(document, settings, _counter(tokenizer))


@functools.cache
def _counter(tokenizer: Path) -> TokenizerCounter:
    # Once per worker process: it outlives the call.
    return TokenizerCounter(tokenizer)


class SandboxedSteps:
    def __init__(self, sandbox: Sandbox, limits: StepLimits, tokenizer: Path,
                 parse_limits: ParseLimits = ParseLimits()) -> None:
        self.sandbox = sandbox
        self.limits = limits
        # What parsing bounds within the sandbox's memory and time (OCR's pages and seconds).
        self.parse_limits = parse_limits
        self.tokenizer = tokenizer_file(tokenizer)
        # For the workers, which start on the sandbox's first call with this environment:
        # OpenBLAS (numpy's, which the spreadsheet parsers import, and OpenCV's, which OCR does)
        # reserves buffers for a thread per core when it loads, 40 MiB of the workers' memory
        # limit for linear algebra that parsing does not do.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    async def parse(self, content: bytes, content_type: str) -> ParsedDocument:
        """Raises StepStopped, or ParseError or UnsupportedType as `parse` does."""
        return await self._run("parsing", parse, content, content_type, self.parse_limits)

    async def chunk(self, document: ParsedDocument, settings: ChunkingSettings) -> list[ChunkText]:
        """Raises StepStopped."""
        return await self._run("chunking", _chunk, document, settings, self.tokenizer)

    async def _run(self, step: str, function, *args):
        try:
            return await self.sandbox.run(function, *args, timeout=self.limits.timeout_seconds)
        except (MemoryError, SandboxCrashed) as error:
            log.warning("%s stopped for memory: %s", step, error or type(error).__name__)
            raise StepStopped(f"{step} was stopped: it used more than {self.limits.memory_mib} MiB of memory") from None
        except SandboxTimeout as error:
            log.warning("%s stopped for time: %s", step, error)
            raise StepStopped(f"{step} was stopped: it took longer than {self.limits.timeout_seconds:g} s") from None
