"""HTML: the visible text, block by block. Headings build the heading path; each paragraph
(or other block) is a section with its whitespace collapsed, the text of inline elements
joining the enclosing block's; lists, tables and quotes are one section each, an item or
row a line; <pre> keeps its layout. Scripts, styles and other invisible parts are dropped.
"""

from __future__ import annotations

import re
import warnings

from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning
from bs4.element import NavigableString, PageElement, PreformattedString, Tag

from services.knowledge.parsers.common import Outline, decode
from services.knowledge.parsers.document import ParsedDocument

# <meta charset="...">, <meta http-equiv="Content-Type" content="text/html; charset=...">,
# <?xml version="1.0" encoding="..."?>
_DECLARED_CHARSET = re.compile(
    rb"""<(?:meta[^>]*?charset|\?xml[^>]*?encoding)\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE
)
_SNIFF_BYTES = 4096
# Ruby text (<rt>, <rp>) is pronunciation, e.g. pinyin over Chinese characters: it would
# interleave with the words.
_DROPPED = frozenset({"head", "title", "script", "style", "noscript", "template", "svg", "iframe",
                      "object", "rt", "rp"})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_LISTS = frozenset({"ul", "ol", "menu", "dl"})
# Kept whole as one section, like Markdown's lists, tables and quotes.
_GROUPS = _LISTS | {"table", "blockquote"}
_BLOCKS = frozenset({
    "address", "article", "aside", "body", "caption", "center", "dd", "details", "dialog", "div",
    "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hgroup", "hr", "html",
    "legend", "main", "nav", "p", "section", "summary", "tbody", "tfoot", "thead",
})
_CELLS = frozenset({"td", "th"})

# XHTML (an EPUB's chapters, many saved pages) is read as HTML on purpose: the visible text is
# the same, and a page that is not well-formed XML still reads. Beautiful Soup warns each time.
warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)


def parse_html(content: bytes) -> ParsedDocument:
    declared = _DECLARED_CHARSET.search(content[:_SNIFF_BYTES])
    text = decode(content, declared.group(1).decode("ascii") if declared else "")
    soup = BeautifulSoup(text, "lxml")
    # Only the head's: an inline <svg> has <title>s of its own.
    title = soup.head.find("title") if soup.head else None
    walker = _Walker()
    walker.walk(soup)
    return walker.outline.document(" ".join(title.get_text().split()) if title else "")


class _Walker:
    """One pass over the tree in document order (iterative: real pages nest deeper than
    Python's recursion limit allows)."""

    def __init__(self) -> None:
        self.outline = Outline()
        # The block being read: segments separated by <br>, each a list of text pieces.
        self._segments: list[list[str]] = [[]]
        self._prefix = ""  # a list item's marker, written before its first line
        self._group_depth = 0
        self._group_lines: list[str] = []
        # Each open list, innermost last: items so far if ordered, None if not.
        self._lists: list[int | None] = []
        self._cells = 0  # cells so far in the current table row

    def walk(self, root: Tag) -> None:
        stack: list[tuple[PageElement, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if leaving:
                self._leave(node)
            elif isinstance(node, Tag):
                if node.name not in _DROPPED and self._enter(node):
                    stack.append((node, True))
                    stack.extend((child, False) for child in reversed(node.contents))
            # Comments, doctypes and processing instructions are preformatted strings.
            elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
                self._segments[-1].append(str(node))
        self._flush()

    def _enter(self, tag: Tag) -> bool:
        """Opens `tag`; False when it has been read whole and its children must be skipped."""
        name = tag.name
        if name == "br":
            self._segments.append([])
            return False
        if name == "pre":
            self._flush()
            self._add(tag.get_text().strip("\n").rstrip())
            return False
        if name in _CELLS:
            if self._cells:
                self._segments[-1].append(" | ")
            self._cells += 1
        elif name == "tr":
            self._flush()
            self._cells = 0
        elif name == "li":
            self._flush()
            self._prefix = self._list_marker()
        elif name in _GROUPS:
            self._flush()
            self._group_depth += 1
            if name in _LISTS:
                self._lists.append(0 if name == "ol" else None)
        elif name in _BLOCKS or name in _HEADINGS:
            self._flush()
        return True

    def _leave(self, tag: Tag) -> None:
        name = tag.name
        # A heading inside a list, table or quote is part of that block, not of the path.
        if name in _HEADINGS and not self._group_depth:
            self.outline.heading(_HEADINGS[name], " ".join(self._take_line().split()))
        elif name in _GROUPS:
            self._flush()
            self._group_depth -= 1
            if name in _LISTS:
                self._lists.pop()
            if not self._group_depth:
                self.outline.add("\n".join(self._group_lines))
                self._group_lines = []
        elif name in _BLOCKS or name in _HEADINGS or name == "li" or name == "tr":
            self._flush()

    def _list_marker(self) -> str:
        if not self._lists:
            return "- "
        indent = "  " * (len(self._lists) - 1)
        count = self._lists[-1]
        if count is None:
            return indent + "- "
        self._lists[-1] = count + 1
        return f"{indent}{count + 1}. "

    def _take_line(self) -> str:
        segments, self._segments = self._segments, [[]]
        collapsed = (" ".join("".join(pieces).split()) for pieces in segments)
        return "\n".join(segment for segment in collapsed if segment)

    def _flush(self) -> None:
        line = self._take_line()
        if line:
            prefix, self._prefix = self._prefix, ""
            self._add(prefix + line)

    def _add(self, text: str) -> None:
        if not text.strip():
            return
        if self._group_depth:
            self._group_lines.append(text)
        else:
            self.outline.add(text)
