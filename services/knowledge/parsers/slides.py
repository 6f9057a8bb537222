"""Presentations: PowerPoint .pptx (python-pptx) and OpenDocument .odp (odfpy).

Each slide is a few sections, all with location "slide N" and the slide's title as their
heading: one per text box or placeholder (a paragraph a line, indented by its outline level),
a table as Markdown with its header row (tables.py), and the speaker notes ("Speaker notes:
..."). A slide with nothing but a title is one section of its title. Shapes are read in the
slide's own order, groups included; hidden slides are read like the others. The title is the
file's title property, else the first slide's title.
"""

from __future__ import annotations

import io

import pptx
from odf.element import Element
from odf.namespaces import DRAWNS, PRESENTATIONNS, TABLENS, TEXTNS
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pptx.presentation import Presentation
from pptx.shapes.base import BaseShape

from services.knowledge.parsers.containers import ODP, POWERPOINT, open_zip, reading
from services.knowledge.parsers.document import ParsedDocument, ParseError, Section
from services.knowledge.parsers.opendocument import (
    attribute,
    elements,
    load_odf,
    meta_title,
    table_rows,
    text_of,
)
from services.knowledge.parsers.tables import RowBudget, markdown_blocks

_MAX_GROUP_DEPTH = 20


class _Slides:
    def __init__(self, noun: str) -> None:
        self.sections: list[Section] = []
        self.budget = RowBudget(noun)
        self.first_title = ""

    def slide(self, number: int, title: str, blocks: list[str], notes: str) -> None:
        title = " ".join(title.split())
        self.first_title = self.first_title or title
        headings = (title,) if title else ()
        blocks = [block for block in blocks if block.strip()]
        if notes.strip():
            blocks.append(f"Speaker notes: {notes.strip()}")
        if not blocks and title:
            blocks = [title]
        location = f"slide {number}"
        self.sections.extend(Section(block.strip(), headings, location=location) for block in blocks)

    def document(self, title: str) -> ParsedDocument:
        return ParsedDocument(" ".join(title.split()) or self.first_title, self.sections)


def parse_pptx(content: bytes) -> ParsedDocument:
    open_zip(content, POWERPOINT)
    with reading(POWERPOINT.noun):
        try:
            presentation: Presentation = pptx.Presentation(io.BytesIO(content))
        except ValueError as error:  # python-pptx reads .pptx and .pptm only
            if "not a PowerPoint file" not in str(error):
                raise
            raise ParseError("the file is a PowerPoint template or slide show (.potx, .ppsx), which we do "
                             "not read; save it as a presentation (.pptx)", detail=str(error)) from None
        slides = _Slides(POWERPOINT.noun)
        for number, slide in enumerate(presentation.slides, start=1):
            title_shape = slide.shapes.title
            title = title_shape.text_frame.text if title_shape is not None and title_shape.has_text_frame else ""
            blocks: list[str] = []
            for shape in _shapes(slide.shapes, 0):
                if title_shape is not None and shape.shape_id == title_shape.shape_id:
                    continue
                blocks.extend(_shape_blocks(shape, slides.budget))
            notes = ""
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                notes = slide.notes_slide.notes_text_frame.text.replace("\v", "\n")
            slides.slide(number, title.replace("\v", " "), blocks, notes)
        return slides.document(presentation.core_properties.title or "")


def _shapes(shapes, depth: int):
    for shape in shapes:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            if depth < _MAX_GROUP_DEPTH:
                yield from _shapes(shape.shapes, depth + 1)
        else:
            yield shape


def _shape_blocks(shape: BaseShape, budget: RowBudget) -> list[str]:
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = []
        for row in shape.table.rows:
            cells = [cell.text for cell in row.cells]
            budget.take(len(cells))
            rows.append(cells)
        return markdown_blocks(rows)
    if shape.has_text_frame:
        lines = []
        for paragraph in shape.text_frame.paragraphs:
            text = paragraph.text.replace("\v", "\n").strip()
            if text:
                lines.append("  " * min(paragraph.level, 8) + text)
        return ["\n".join(lines)] if lines else []
    return []


# -- OpenDocument presentation --------------------------------------------------------------


def parse_odp(content: bytes) -> ParsedDocument:
    document = load_odf(content, ODP)
    with reading(ODP.noun):
        slides = _Slides(ODP.noun)
        pages = [page for page in elements(document.presentation) if page.qname == (DRAWNS, "page")]
        for number, page in enumerate(pages, start=1):
            titles: list[str] = []
            blocks: list[str] = []
            notes: list[str] = []
            _odp_shapes(page, titles, blocks, notes, slides.budget, 0)
            slides.slide(number, titles[0] if titles else "", blocks, "\n".join(notes))
        return slides.document(meta_title(document))


def _odp_shapes(container: Element, titles: list[str], blocks: list[str], notes: list[str],
                budget: RowBudget, depth: int) -> None:
    for shape in elements(container):
        name = shape.qname
        if name == (PRESENTATIONNS, "notes"):
            for frame in elements(shape):
                if attribute(frame, PRESENTATIONNS, "class") == "notes":
                    notes.append(_odp_text(frame))
        elif name == (DRAWNS, "g"):
            if depth < _MAX_GROUP_DEPTH:
                _odp_shapes(shape, titles, blocks, notes, budget, depth + 1)
        elif name[0] == DRAWNS:
            tables = [child for child in elements(shape) if child.qname == (TABLENS, "table")]
            if tables:
                for table in tables:
                    blocks.extend(markdown_blocks(table_rows(table, _cell_text, budget)))
            elif attribute(shape, PRESENTATIONNS, "class") == "title":
                titles.append(" ".join(_odp_text(shape).split()))
            else:
                blocks.append(_odp_text(shape))


def _odp_text(shape: Element) -> str:
    """The lines of a frame or shape: its paragraphs, list items indented by level."""
    lines: list[str] = []
    _odp_lines(shape, lines, 0)
    return "\n".join(lines)


def _odp_lines(node: Element, lines: list[str], lists: int) -> None:
    """`lists`: how many lists `node` is in; an outline's first level is a list too."""
    for child in elements(node):
        if child.qname in ((TEXTNS, "p"), (TEXTNS, "h")):
            text = text_of(child)
            if text:
                lines.append("  " * min(max(lists - 1, 0), 8) + text)
        elif child.qname == (TEXTNS, "list"):
            for item in elements(child):
                _odp_lines(item, lines, lists + 1)
        else:
            _odp_lines(child, lines, lists)


def _cell_text(cell: Element) -> str:
    return " ".join(text_of(cell).split())
