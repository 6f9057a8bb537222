"""Word-processing documents: Word .docx (python-docx) and OpenDocument .odt (odfpy).

As for Markdown, headings (Word's Heading 1-9 styles and styles based on them, or an outline
level; ODF's text:h) build the heading path of the sections after them. Each paragraph is a
section; consecutive list items are one section, an item a line ("- " or "1. ", indented by
level); a table is Markdown with its header row (tables.py), in blocks. Footnotes, endnotes and
comments follow the block that refers to them as sections of their own ("Footnote 1: ...",
"Comment by Ann: ..."). Page headers and footers are not read. The title is the Title-styled
paragraph, else the file's title property, else the first level-1 heading.

Text in tracked insertions counts, tracked deletions do not (they are not the text).
"""

from __future__ import annotations

import io
import re

import docx
from docx.document import Document as DocxDocument
from docx.opc.constants import RELATIONSHIP_TYPE as RT
from docx.oxml import parse_xml
from docx.oxml.ns import qn
from docx.table import Table
from docx.text.paragraph import Paragraph
from lxml import etree
from odf.element import Element
from odf.namespaces import STYLENS, TABLENS, TEXTNS
from odf.opendocument import OpenDocument

from services.knowledge.parsers.common import Outline
from services.knowledge.parsers.containers import ODT, WORD, open_zip, reading
from services.knowledge.parsers.document import ParsedDocument, ParseError
from services.knowledge.parsers.opendocument import (
    attribute,
    elements,
    load_odf,
    meta_title,
    table_rows,
    text_of,
)
from services.knowledge.parsers.tables import RowBudget, markdown_blocks

_HEADING_STYLE = re.compile(r"heading ([1-9])", re.IGNORECASE)
_MAX_STYLE_DEPTH = 10
# The runs of a paragraph, those of hyperlinks, tracked insertions, fields and content
# controls included (python-docx's Paragraph.text reads only the first two).
_RUNS = ("w:r | w:hyperlink | w:ins/w:r | w:ins/w:hyperlink | w:smartTag/w:r | w:fldSimple/w:r"
         " | w:sdt/w:sdtContent/w:r | w:sdt/w:sdtContent/w:hyperlink")
_ORDERED = "ordered"


def parse_docx(content: bytes) -> ParsedDocument:
    open_zip(content, WORD)
    with reading(WORD.noun):
        try:
            document = docx.Document(io.BytesIO(content))
        except ValueError as error:  # python-docx reads .docx only
            if "not a Word file" not in str(error):
                raise
            raise ParseError("the file is a Word template or macro-enabled document (.dotx, .docm), "
                             "which we do not read; save it as a Word document (.docx)", detail=str(error)) from None
        return _Docx(document).read()


class _Blocks:
    """The sections of a word-processing document as its blocks arrive: list items gather
    into one section, and notes wait for the end of the block that cites them."""

    def __init__(self, noun: str) -> None:
        self.outline = Outline()
        self.budget = RowBudget(noun)
        self._items: list[str] = []
        self._list = ""
        self._notes: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.flush()
        self.outline.heading(level, " ".join(text.split()))

    def paragraph(self, text: str) -> None:
        self.flush()
        self.outline.add(text.strip())

    def item(self, text: str, list_id: str = "") -> None:
        """A list item; a list that is not the one before starts a section of its own."""
        if not self._items or list_id != self._list:
            self.flush()
        self._list = list_id
        self._items.append(text)

    def table(self, rows: list[list[str]]) -> None:
        self.flush()
        for block in markdown_blocks(rows):
            self.outline.add(block)

    def notes(self, notes: list[str]) -> None:
        self._notes.extend(note for note in notes if note)

    def flush(self) -> None:
        if self._items:
            self.outline.add("\n".join(self._items))
            self._items = []
        for note in self._notes:
            self.outline.add(note)
        self._notes = []


class _Docx:
    def __init__(self, document: DocxDocument) -> None:
        self.document = document
        self.body = document._body  # the container python-docx gives its paragraphs
        self.blocks = _Blocks(WORD.noun)
        self.title = ""
        self._levels: dict[str | None, int | None] = {}
        self._footnotes = self._notes(RT.FOOTNOTES, "w:footnote", "Footnote")
        self._endnotes = self._notes(RT.ENDNOTES, "w:endnote", "Endnote")
        self._comments = self._read_comments()
        self._list_kinds = self._numbering()
        self._counters: dict[tuple[str, int], int] = {}

    def read(self) -> ParsedDocument:
        self._walk(self.document.element.body)
        # Notes cited from nowhere we read (a text box, a header) still say something.
        self.blocks.notes([*self._footnotes.values(), *self._endnotes.values(), *self._comments.values()])
        self.blocks.flush()
        title = self.title or " ".join((self.document.core_properties.title or "").split())
        return self.blocks.outline.document(title)

    def _walk(self, container: etree._Element) -> None:
        for child in container.iterchildren():
            if child.tag == qn("w:p"):
                self._paragraph(Paragraph(child, self.body))
            elif child.tag == qn("w:tbl"):
                self._table(Table(child, self.body))
            elif child.tag == qn("w:sdt"):  # a content control: a cover page, a table of contents
                for content in child.iterchildren(qn("w:sdtContent")):
                    self._walk(content)

    def _paragraph(self, paragraph: Paragraph) -> None:
        p = paragraph._p
        text = "".join(run.text for run in p.xpath(_RUNS)).rstrip()
        notes = self._cited(p)
        if text.strip() and not self.title and self._style_name(paragraph).lower() == "title":
            self.title = " ".join(text.split())
            self.blocks.notes(notes)
            return
        level = self._level(paragraph)
        if level and text.strip():
            self.blocks.heading(level, text)
        elif text.strip() and self._list_item(paragraph, text):
            pass
        elif text.strip():
            self.blocks.paragraph(text)
        self.blocks.notes(notes)

    def _list_item(self, paragraph: Paragraph, text: str) -> bool:
        p = paragraph._p
        num_pr = p.pPr.numPr if p.pPr is not None else None
        style_name = self._style_name(paragraph).lower()
        if num_pr is not None and num_pr.numId is not None and num_pr.numId.val:
            num_id = str(num_pr.numId.val)
            level = num_pr.ilvl.val if num_pr.ilvl is not None else 0
            ordered = self._list_kinds.get((num_id, level)) == _ORDERED
        elif style_name.startswith("list"):
            num_id, level, ordered = style_name, 0, "number" in style_name
        else:
            return False
        indent = "  " * max(0, min(level, 8))
        if ordered:
            count = self._counters.get((num_id, level), 0) + 1
            self._counters[(num_id, level)] = count
            # A new item restarts the numbering of the levels below it.
            for key in [key for key in self._counters if key[0] == num_id and key[1] > level]:
                del self._counters[key]
            self.blocks.item(f"{indent}{count}. {text.strip()}", num_id)
        else:
            self.blocks.item(f"{indent}- {text.strip()}", num_id)
        return True

    def _table(self, table: Table) -> None:
        rows = []
        for row in table.rows:
            cells = [cell.text for cell in row.cells]
            self.blocks.budget.take(len(cells))
            rows.append(cells)
        self.blocks.table(rows)
        self.blocks.notes(self._cited(table._tbl))

    def _style_name(self, paragraph: Paragraph) -> str:
        style = paragraph.style
        return (style.name or "") if style is not None else ""

    def _level(self, paragraph: Paragraph) -> int | None:
        """The heading level of a paragraph, 1-9, or None for body text."""
        own = self._outline_level(paragraph._p.pPr)
        if own is not None:
            return own
        style_id = paragraph._p.style
        if style_id not in self._levels:
            self._levels[style_id] = self._style_level(paragraph.style)
        return self._levels[style_id]

    def _style_level(self, style) -> int | None:
        for _ in range(_MAX_STYLE_DEPTH):
            if style is None:
                return None
            match = _HEADING_STYLE.fullmatch(style.name or "")
            if match:
                return int(match.group(1))
            level = self._outline_level(style.element.pPr)
            if level is not None:
                return level
            style = style.base_style
        return None

    @staticmethod
    def _outline_level(p_pr) -> int | None:
        if p_pr is None:
            return None
        values = p_pr.xpath("w:outlineLvl/@w:val")
        # 0-8 are heading levels 1-9; 9 is body text.
        return int(values[0]) + 1 if values and values[0].isdigit() and int(values[0]) < 9 else None

    def _part_element(self, reltype: str) -> etree._Element | None:
        try:
            part = self.document.part.part_related_by(reltype)
        except KeyError:
            return None
        element = getattr(part, "element", None)
        # python-docx has no class for footnotes: their part comes as bytes, parsed here with
        # python-docx's own parser (entities unresolved).
        return element if element is not None else parse_xml(part.blob)

    def _notes(self, reltype: str, tag: str, label: str) -> dict[str, str]:
        element = self._part_element(reltype)
        notes: dict[str, str] = {}
        if element is None:
            return notes
        for note in element.iterchildren(qn(tag)):
            if note.get(qn("w:type")) in ("separator", "continuationSeparator", "continuationNotice"):
                continue
            text = " ".join(" ".join(run.text for run in p.xpath(_RUNS)) for p in note.iterchildren(qn("w:p")))
            note_id = note.get(qn("w:id"), "")
            if text.strip():
                notes[note_id] = f"{label} {note_id}: {' '.join(text.split())}"
        return notes

    def _read_comments(self) -> dict[str, str]:
        if self._part_element(RT.COMMENTS) is None:  # python-docx would make an empty part
            return {}
        comments = {}
        for comment in self.document.comments:
            text = " ".join(comment.text.split())
            if text:
                author = " ".join((comment.author or "").split())
                comments[str(comment.comment_id)] = (f"Comment by {author}: {text}" if author
                                                      else f"Comment: {text}")
        return comments

    def _cited(self, p: etree._Element) -> list[str]:
        cited = []
        for reference in p.iter(qn("w:footnoteReference"), qn("w:endnoteReference"), qn("w:commentReference")):
            notes = {qn("w:footnoteReference"): self._footnotes, qn("w:endnoteReference"): self._endnotes,
                     qn("w:commentReference"): self._comments}[reference.tag]
            note = notes.pop(reference.get(qn("w:id"), ""), "")
            if note:
                cited.append(note)
        return cited

    def _numbering(self) -> dict[tuple[str, int], str]:
        """(numId, level) -> "ordered" or "bullet", from the numbering part."""
        element = self._part_element(RT.NUMBERING)
        if element is None:
            return {}
        formats: dict[str, dict[int, str]] = {}
        for abstract in element.iterchildren(qn("w:abstractNum")):
            levels = {}
            for level in abstract.iterchildren(qn("w:lvl")):
                ilvl = level.get(qn("w:ilvl"), "0")
                fmt = level.find(qn("w:numFmt"))
                value = fmt.get(qn("w:val"), "") if fmt is not None else ""
                if ilvl.isdigit():
                    levels[int(ilvl)] = "bullet" if value in ("bullet", "none", "") else _ORDERED
            formats[abstract.get(qn("w:abstractNumId"), "")] = levels
        kinds = {}
        for num in element.iterchildren(qn("w:num")):
            abstract_id = num.find(qn("w:abstractNumId"))
            if abstract_id is not None:
                for level, kind in formats.get(abstract_id.get(qn("w:val"), ""), {}).items():
                    kinds[(num.get(qn("w:numId"), ""), level)] = kind
        return kinds


# -- OpenDocument text ----------------------------------------------------------------------


def parse_odt(content: bytes) -> ParsedDocument:
    document = load_odf(content, ODT)
    with reading(ODT.noun):
        return _Odt(document).read()


# Parts of the body that repeat or annotate the text: tables of contents and indexes list the
# headings again; tracked changes hold deleted text.
_ODT_SKIPPED = frozenset({
    (TEXTNS, "table-of-content"), (TEXTNS, "illustration-index"), (TEXTNS, "table-index"),
    (TEXTNS, "object-index"), (TEXTNS, "user-index"), (TEXTNS, "alphabetical-index"),
    (TEXTNS, "bibliography"), (TEXTNS, "tracked-changes"), (TEXTNS, "sequence-decls"),
    (TEXTNS, "variable-decls"), (TEXTNS, "user-field-decls"),
})


class _Odt:
    def __init__(self, document: OpenDocument) -> None:
        self.document = document
        self.blocks = _Blocks(ODT.noun)
        self.title = ""
        self._title_styles = self._styles_named("title")
        self._ordered_lists = self._ordered_list_styles()

    def read(self) -> ParsedDocument:
        self._walk(self.document.text)
        self.blocks.flush()
        return self.blocks.outline.document(self.title or meta_title(self.document))

    def _walk(self, container: Element) -> None:
        for child in elements(container):
            name = child.qname
            if name == (TEXTNS, "h"):
                notes: list[str] = []
                level = attribute(child, TEXTNS, "outline-level")
                self.blocks.heading(int(level) if level.isdigit() and int(level) > 0 else 1, text_of(child, notes))
                self.blocks.notes(notes)
            elif name == (TEXTNS, "p"):
                notes = []
                text = text_of(child, notes)
                if attribute(child, TEXTNS, "style-name") in self._title_styles and text and not self.title:
                    self.title = " ".join(text.split())
                else:
                    self.blocks.paragraph(text)
                self.blocks.notes(notes)
            elif name == (TEXTNS, "list"):
                self.blocks.flush()
                self._list(child, 0, attribute(child, TEXTNS, "style-name"))
                self.blocks.flush()
            elif name == (TABLENS, "table"):
                notes = []
                self.blocks.table(table_rows(child, lambda cell: " ".join(text_of(cell, notes).split()),
                                             self.blocks.budget))
                self.blocks.notes(notes)
            elif name not in _ODT_SKIPPED:  # sections, and whatever else holds blocks
                self._walk(child)

    def _list(self, text_list: Element, level: int, style: str) -> None:
        style = attribute(text_list, TEXTNS, "style-name") or style
        ordered = (style, min(level + 1, 10)) in self._ordered_lists
        number = 0
        for item in elements(text_list):
            if item.qname not in ((TEXTNS, "list-item"), (TEXTNS, "list-header")):
                continue
            number += 1
            marker = f"{number}. " if ordered else "- "
            for child in elements(item):
                if child.qname == (TEXTNS, "list"):
                    self._list(child, level + 1, style)
                elif child.qname in ((TEXTNS, "p"), (TEXTNS, "h")):
                    notes: list[str] = []
                    text = " ".join(text_of(child, notes).split())
                    if text:
                        self.blocks.item(f"{'  ' * min(level, 8)}{marker}{text}")
                        marker = "   " if ordered else "  "  # a second paragraph of the item
                    self.blocks.notes(notes)

    def _styles_named(self, name: str) -> set[str]:
        """The paragraph styles called `name`, and the automatic styles built on them."""
        names = {name, name.capitalize()}
        for styles in (self.document.styles, self.document.automaticstyles):
            for style in elements(styles):
                if style.qname == (STYLENS, "style") and (
                        attribute(style, STYLENS, "parent-style-name") in names
                        or attribute(style, STYLENS, "name").lower() == name):
                    names.add(attribute(style, STYLENS, "name"))
        return names

    def _ordered_list_styles(self) -> set[tuple[str, int]]:
        ordered = set()
        for styles in (self.document.styles, self.document.automaticstyles):
            for style in elements(styles):
                if style.qname != (TEXTNS, "list-style"):
                    continue
                for level in elements(style):
                    if level.qname == (TEXTNS, "list-level-style-number"):
                        number = attribute(level, TEXTNS, "level")
                        ordered.add((attribute(style, STYLENS, "name"), int(number) if number.isdigit() else 1))
        return ordered

