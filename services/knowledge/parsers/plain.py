"""Plain text: one section per blank-line separated paragraph."""

from __future__ import annotations

from services.knowledge.parsers.common import decode, paragraphs
from services.knowledge.parsers.document import ParsedDocument, Section


def parse_plain(content: bytes) -> ParsedDocument:
    return ParsedDocument("", [Section(paragraph) for paragraph in paragraphs(decode(content))])
