"""Markdown: headings build the heading path; every other top-level block (paragraph, list,
code, table, quote, HTML block) is a section of its source lines, so code and lists keep
their layout."""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.token import Token

from services.knowledge.parsers.common import Outline, decode
from services.knowledge.parsers.document import ParsedDocument

# Tables are GitHub's extension, but people write them everywhere.
_MARKDOWN = MarkdownIt("commonmark").enable("table")
_INLINE_TEXT = frozenset({"text", "code_inline", "image"})  # an image's content is its alt text
_LINE_BREAKS = frozenset({"softbreak", "hardbreak"})


def parse_markdown(content: bytes) -> ParsedDocument:
    text = decode(content)
    lines = text.split("\n")
    outline = Outline()
    tokens = _MARKDOWN.parse(text)
    for index, token in enumerate(tokens):
        # Closing tokens have no map; a thematic break separates, it says nothing.
        if token.level != 0 or token.map is None or token.type == "hr":
            continue
        if token.type == "heading_open":
            outline.heading(int(token.tag[1:]), _plain(tokens[index + 1]))
        else:
            start, end = token.map
            outline.add("\n".join(lines[start:end]).strip("\n").rstrip())
    return outline.document()


def _plain(inline: Token) -> str:
    """A heading's text without its Markdown markup."""
    parts = []
    for child in inline.children or ():
        if child.type in _INLINE_TEXT:
            parts.append(child.content)
        elif child.type in _LINE_BREAKS:
            parts.append(" ")
    return " ".join("".join(parts).split())
