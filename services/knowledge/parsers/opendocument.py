"""OpenDocument (.odt .ods .odp), read with odfpy, whose XML parsing is defusedxml's (no
entities, no DTDs): loading a file after the container checks, the text of an element, and
the rows of a table. Shared by word.py, slides.py and sheets.py.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator

from odf.element import Element, Node
from odf.namespaces import DCNS, OFFICENS, STYLENS, TABLENS, TEXTNS
from odf.opendocument import OpenDocument, load

from services.knowledge.parsers.containers import Kind, open_zip, reading
from services.knowledge.parsers.document import ParseError
from services.knowledge.parsers.tables import RowBudget

# A spreadsheet's widest row (LibreOffice's limit); repeated cells past it are ignored.
MAX_COLUMNS = 16_384
_MAX_SPACES = 100
_ROW_GROUPS = frozenset({(TABLENS, "table-header-rows"), (TABLENS, "table-rows"), (TABLENS, "table-row-group")})
_CELLS = frozenset({(TABLENS, "table-cell"), (TABLENS, "covered-table-cell")})
_PARAGRAPHS = frozenset({(TEXTNS, "p"), (TEXTNS, "h")})


def load_odf(content: bytes, kind: Kind) -> OpenDocument:
    open_zip(content, kind)
    with reading(kind.noun):
        # odfpy prints a part it cannot parse, whole, and carries on without it.
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            document = load(io.BytesIO(content))
        if "FAILED TO PARSE" in printed.getvalue():
            raise ParseError(f"the {kind.noun} is damaged, so it could not be read",
                             detail="odfpy: an XML part is not well-formed")
    return document


def elements(node: Element) -> Iterator[Element]:
    return (child for child in node.childNodes if child.nodeType == Node.ELEMENT_NODE)


def attribute(element: Element, namespace: str, name: str) -> str:
    return element.attributes.get((namespace, name)) or ""


def meta_title(document: OpenDocument) -> str:
    for element in elements(document.meta):
        if element.qname == (DCNS, "title"):
            return " ".join(text_of(element).split())
    return ""


def text_of(node: Element, notes: list[str] | None = None) -> str:
    """The text of `node` with its spaces, tabs and line breaks; paragraphs inside it (a text
    box, a cell) on lines of their own. Footnotes and comments are left out of it and, if
    `notes` is given, added to it as "Footnote 1: ..." and "Comment by Ann: ..."."""
    parts: list[str] = []
    _collect(node, parts, notes)
    return "".join(parts).strip()


def _collect(node: Element, parts: list[str], notes: list[str] | None) -> None:
    for child in node.childNodes:
        if child.nodeType == Node.TEXT_NODE:
            parts.append(child.data)
            continue
        if child.nodeType != Node.ELEMENT_NODE:
            continue
        name = child.qname
        if name == (TEXTNS, "s"):
            count = attribute(child, TEXTNS, "c")
            parts.append(" " * min(int(count) if count.isdigit() else 1, _MAX_SPACES))
        elif name == (TEXTNS, "tab"):
            parts.append("\t")
        elif name == (TEXTNS, "line-break"):
            parts.append("\n")
        elif name == (TEXTNS, "note"):
            if notes is not None:
                notes.append(_note(child))
        elif name == (OFFICENS, "annotation"):
            if notes is not None:
                notes.append(_comment(child))
        elif name in _PARAGRAPHS:
            if parts and not parts[-1].endswith("\n"):
                parts.append("\n")
            _collect(child, parts, notes)
            parts.append("\n")
        else:
            _collect(child, parts, notes)


def _note(note: Element) -> str:
    kind = "Endnote" if attribute(note, TEXTNS, "note-class") == "endnote" else "Footnote"
    citation = body = ""
    for child in elements(note):
        if child.qname == (TEXTNS, "note-citation"):
            citation = text_of(child)
        elif child.qname == (TEXTNS, "note-body"):
            body = " ".join(text_of(child).split())
    return f"{kind} {citation}: {body}" if citation else f"{kind}: {body}"


def _comment(annotation: Element) -> str:
    author = ""
    paragraphs = []
    for child in elements(annotation):
        if child.qname == (DCNS, "creator"):
            author = " ".join(text_of(child).split())
        elif child.qname in _PARAGRAPHS or child.qname == (TEXTNS, "list"):
            paragraphs.append(" ".join(text_of(child).split()))
    text = " ".join(paragraph for paragraph in paragraphs if paragraph)
    return f"Comment by {author}: {text}" if author else f"Comment: {text}"


def table_rows(table: Element, cell_value: Callable[[Element], str], budget: RowBudget) -> list[list[str]]:
    """The non-empty rows of a table:table, repeated rows and cells expanded (empty ones only
    where later content needs them: spreadsheets pad to a million rows that way)."""
    rows: list[list[str]] = []
    for row in _rows(table):
        cells = _cells(row, cell_value)
        if not any(cells):
            continue
        repeat = _count(attribute(row, TABLENS, "number-rows-repeated"))
        for _ in range(repeat):  # the budget ends a hostile repeat count
            budget.take(len(cells))
            rows.append(cells)
    return rows


def _rows(node: Element) -> Iterator[Element]:
    for child in elements(node):
        if child.qname == (TABLENS, "table-row"):
            yield child
        elif child.qname in _ROW_GROUPS:
            yield from _rows(child)


def _cells(row: Element, cell_value: Callable[[Element], str]) -> list[str]:
    cells: list[str] = []
    empty = 0
    for cell in elements(row):
        if cell.qname not in _CELLS:
            continue
        repeat = _count(attribute(cell, TABLENS, "number-columns-repeated"))
        value = cell_value(cell) if cell.qname == (TABLENS, "table-cell") else ""
        if not value:
            empty += repeat
            continue
        cells.extend([""] * min(empty, MAX_COLUMNS - len(cells)))
        empty = 0
        cells.extend([value] * min(repeat, MAX_COLUMNS - len(cells)))
        if len(cells) >= MAX_COLUMNS:
            break
    return cells


def _count(value: str) -> int:
    return max(int(value), 1) if value.isdigit() else 1


def hidden_table_styles(document: OpenDocument) -> set[str]:
    """The names of the automatic table styles that hide their table (a hidden sheet)."""
    hidden = set()
    for style in elements(document.automaticstyles):
        if style.qname != (STYLENS, "style"):
            continue
        for properties in elements(style):
            if properties.qname == (STYLENS, "table-properties") and \
                    attribute(properties, TABLENS, "display") == "false":
                hidden.add(attribute(style, STYLENS, "name"))
    return hidden
