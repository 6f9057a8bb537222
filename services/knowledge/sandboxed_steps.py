"""Parsing an uploaded file in a sandbox worker: a crafted file can make a parser allocate
without bound (a PDF whose streams inflate to gigabytes) or spin, and that must cost a worker
process and the document's attempt, never the service."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from meshkit.sandbox import Sandbox, SandboxCrashed, SandboxLimits, SandboxTimeout
from services.knowledge.parsers import ParsedDocument, parse

log = logging.getLogger(__name__)


class ParsingStopped(Exception):
    """The parse used up its memory or its time; the message says which, for the user."""


@dataclass(frozen=True)
class ParseLimits:
    memory_mib: int
    timeout_seconds: float

    def sandbox_limits(self) -> SandboxLimits:
        # CPU time is only a backstop behind the wall clock: the parsers are single-threaded, so
        # the timeout comes first, and a worker that dies has run out of memory.
        return SandboxLimits(memory_bytes=self.memory_mib * 2**20, cpu_seconds=2 * self.timeout_seconds)


class SandboxedParser:
    def __init__(self, sandbox: Sandbox, limits: ParseLimits) -> None:
        self.sandbox = sandbox
        self.limits = limits

    async def parse(self, content: bytes, content_type: str) -> ParsedDocument:
        """Raises ParsingStopped, or ParseError or UnsupportedType as `parse` does."""
        try:
            return await self.sandbox.run(parse, content, content_type, timeout=self.limits.timeout_seconds)
        except (MemoryError, SandboxCrashed) as error:
            log.warning("parsing stopped for memory: %s", error or type(error).__name__)
            raise ParsingStopped(
                f"parsing was stopped: it used more than {self.limits.memory_mib} MiB of memory") from None
        except SandboxTimeout as error:
            log.warning("parsing stopped for time: %s", error)
            raise ParsingStopped(
                f"parsing was stopped: it took longer than {self.limits.timeout_seconds:g} s") from None
