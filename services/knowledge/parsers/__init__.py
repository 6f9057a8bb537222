"""An uploaded file's bytes -> the document's title and its text in sections.

document.py  Section, ParsedDocument and the two errors
common.py    text decoding, paragraphs and the heading path, shared by the text formats
plain.py, markdown.py, html.py, pdf.py, jsonl.py   one format each
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

from services.knowledge.parsers.document import ParsedDocument, ParseError, Section, UnsupportedType
from services.knowledge.parsers.html import parse_html
from services.knowledge.parsers.jsonl import parse_jsonl
from services.knowledge.parsers.markdown import parse_markdown
from services.knowledge.parsers.pdf import parse_pdf
from services.knowledge.parsers.plain import parse_plain

__all__ = ["SUPPORTED", "ParseError", "ParsedDocument", "Section", "UnsupportedType", "parse",
           "resolve_content_type"]

# Canonical content type -> the filename extensions it goes by.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "text/plain": (".txt", ".text", ".log"),
    "text/markdown": (".md", ".markdown"),
    "text/html": (".html", ".htm"),
    "application/pdf": (".pdf",),
    "application/jsonl": (".jsonl", ".ndjson"),
}
_ALIASES = {
    "text/x-markdown": "text/markdown",
    "application/xhtml+xml": "text/html",
    "application/x-pdf": "application/pdf",
    "application/x-ndjson": "application/jsonl",
    "application/ndjson": "application/jsonl",
    "application/x-jsonl": "application/jsonl",
    "application/jsonlines": "application/jsonl",
    "application/x-jsonlines": "application/jsonl",
}
_BY_EXTENSION = {extension: content_type for content_type, extensions in SUPPORTED.items()
                 for extension in extensions}
_PARSERS: dict[str, Callable[[bytes], ParsedDocument]] = {
    "text/plain": parse_plain,
    "text/markdown": parse_markdown,
    "text/html": parse_html,
    "application/pdf": parse_pdf,
    "application/jsonl": parse_jsonl,
}
_SUPPORTED_LIST = f"{', '.join(_BY_EXTENSION)} ({', '.join(SUPPORTED)})"


def resolve_content_type(filename: str, declared: str = "") -> str:
    """The canonical content type of an upload: the declared MIME type (parameters such as
    '; charset=utf-8' ignored, aliases mapped) when it is a supported one, otherwise the one
    the filename's extension names. A declared text/plain yields to a supported extension,
    since clients send it for any text file (.md, .jsonl, .html...). Raises UnsupportedType,
    naming the supported types, when neither is supported."""
    content_type = _canonical(declared)
    if content_type and content_type != "text/plain":
        return content_type
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    content_type = _BY_EXTENSION.get(suffix) or content_type
    if content_type is None:
        raise UnsupportedType(f"{filename or 'the file'} ({declared.strip() or 'no content type'}) is not "
                              f"a supported type; supported: {_SUPPORTED_LIST}")
    return content_type


def parse(content: bytes, content_type: str) -> ParsedDocument:
    """The title and sections of a file of `content_type` (canonical, though aliases work).
    Raises ParseError for unreadable content, UnsupportedType for an unknown type."""
    canonical = _canonical(content_type)
    if canonical is None:
        raise UnsupportedType(f"the document's content type is not one we read; supported: {_SUPPORTED_LIST}")
    document = _PARSERS[canonical](content)
    if not document.sections:
        raise ParseError("the document has no text")
    return document


def _canonical(content_type: str) -> str | None:
    mime = content_type.partition(";")[0].strip().lower()
    mime = _ALIASES.get(mime, mime)
    return mime if mime in SUPPORTED else None
