"""Shared by the text formats: bytes -> str, paragraphs, and the heading path that
Markdown and HTML headings build."""

from __future__ import annotations

import codecs
import re

import charset_normalizer

from services.knowledge.parsers.document import ParsedDocument, ParseError, Section

_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")
# C0 controls other than tab, newline, vertical tab, form feed and carriage return, and DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
# Text editors do not write control characters; a few stray ones are tolerated, more is binary.
_MAX_CONTROL_SHARE = 0.01


def decode(content: bytes, declared_charset: str = "") -> str:
    """The text of a file, newlines normalised to \\n: UTF-8 (with or without a BOM) first,
    then the charset the file itself declares (an HTML <meta charset>), then whatever
    charset_normalizer detects. ParseError when none of them gives text."""
    if content.startswith(codecs.BOM_UTF8):
        content = content[len(codecs.BOM_UTF8):]
    text = _try(content, "utf-8")
    if text is None and declared_charset:
        text = _try(content, declared_charset)
    if text is None:
        text = _detect(content)
    if text is None:
        raise ParseError("the file is not text: no character encoding makes sense of its bytes")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _try(content: bytes, encoding: str) -> str | None:
    try:
        text = content.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None
    return text if _looks_like_text(text) else None


def _detect(content: bytes) -> str | None:
    matches = charset_normalizer.from_bytes(content)
    best = matches.best()
    if best is None:
        return None
    # On short Western text charset_normalizer cannot tell cp1252 from cp1250 and its
    # neighbours and may rank cp1250 first; cp1252 (what "Latin-1" means in practice) is
    # by far the likelier, so it wins any tie.
    if any(match.chaos <= best.chaos and match.coherence >= best.coherence
           and "cp1252" in match.could_be_from_charset for match in matches):
        text = _try(content, "cp1252")
        if text is not None:
            return text
    text = str(best)
    return text if _looks_like_text(text) else None


def _looks_like_text(text: str) -> bool:
    return len(_CONTROL.findall(text)) <= len(text) * _MAX_CONTROL_SHARE


def paragraphs(text: str) -> list[str]:
    """The blank-line separated blocks of text, each without its surrounding blank lines and
    trailing whitespace but keeping its inner layout (indentation, line breaks)."""
    blocks = (block.strip("\n").rstrip() for block in _BLANK_LINE.split(text))
    return [block for block in blocks if block.strip()]


class Outline:
    """Sections in document order under the heading path that Markdown and HTML headings
    build: a heading replaces the previous one of its level and drops the deeper ones."""

    def __init__(self) -> None:
        self._sections: list[Section] = []
        self._path: list[tuple[int, str]] = []
        self._first_h1 = ""
        # A document that is nothing but headings still has something to say.
        self._headings_as_sections: list[Section] = []

    def heading(self, level: int, text: str) -> None:
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        if not text:
            return
        self._path.append((level, text))
        if level == 1 and not self._first_h1:
            self._first_h1 = text
        self._headings_as_sections.append(Section(text, self.headings()))

    def headings(self) -> tuple[str, ...]:
        return tuple(text for _, text in self._path)

    def add(self, text: str) -> None:
        if text.strip():
            self._sections.append(Section(text, self.headings()))

    def document(self, title: str = "") -> ParsedDocument:
        """The parsed document, titled `title` or else by its first H1."""
        return ParsedDocument(title or self._first_h1, self._sections or self._headings_as_sections)


# Characters printed twice as wide as Latin ones: CJK, Hangul, full-width forms.
WIDE = re.compile(
    r"[\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]"
)
_HYPHENATED = re.compile(r"[^\W\d_]-$")


def join_lines(lines: list[str]) -> str:
    """Printed lines (of a PDF page, or recognised on an image) as one paragraph: joined with a
    space, except between CJK characters, and a word hyphenated across a line break rejoined."""
    parts = [lines[0]]
    for line in lines[1:]:
        previous = parts[-1]
        if _HYPHENATED.search(previous) and line[0].islower():
            parts[-1] = previous[:-1]
        elif not (WIDE.match(previous[-1]) and WIDE.match(line[0])):
            parts.append(" ")
        parts.append(line)
    return "".join(parts)
