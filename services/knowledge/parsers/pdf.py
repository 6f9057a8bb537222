"""PDF: each page's text as paragraphs, with the page number.

pypdf gives one line per printed line and seldom a blank line between paragraphs, so a
paragraph also ends after a line that stops well short of the page's widest one: the last
line of a paragraph, a heading, a list item. Lines of a paragraph are joined with a space,
except between CJK characters, and a word hyphenated across a line break is rejoined.

A page without a text layer (a scan; or fewer than MIN_TEXT_CHARACTERS and an image: a scan
stamped with a page number) is rendered by PDFium at RENDER_DPI and its text recognised
(image.recognise), one page at a time, each bitmap dropped before the next is rendered; pages
with text keep theirs. At most the ParseLimits' ocr_max_pages pages of a document are
recognised, and none is begun after its ocr_budget_seconds: the rest are skipped with a warning,
as a page recognised with low confidence gets one.
"""

from __future__ import annotations

import io
import math
import re
import time

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image
from pypdf import PasswordType, PdfReader

from services.knowledge.parsers.common import WIDE, join_lines
from services.knowledge.parsers.document import ParsedDocument, ParseError, ParseLimits, Section
from services.knowledge.parsers.image import LOW_CONFIDENCE, low_confidence, recognise

# A line narrower than this share of the page's widest line ends its paragraph.
_SHORT_LINE = 0.75
# A page with fewer characters (spaces aside) in its text layer and an image is recognised
# instead: a scanner's or a PDF tool's stamp ("Page 3 of 12", "ACME-000123") on a scanned page
# is not the page's text.
MIN_TEXT_CHARACTERS = 20
# Pages are rendered for OCR at this resolution: 10-point type is 20 pixels high, which the
# recogniser reads as well as larger; an A4 page is 2.2 megapixels.
RENDER_DPI = 150
# Past this a page is rendered at a lower resolution (an A3 page at 143 dpi, a poster lower).
MAX_RENDER_PIXELS = 4_000_000
_POINTS_PER_INCH = 72
# Runs of pages a warning names, of those OCR left out.
_NAMED_RUNS = 10
_SPACE = re.compile(r"\s+")


def parse_pdf(content: bytes, limits: ParseLimits = ParseLimits()) -> ParsedDocument:
    title, pages, little_text = _read_text_layer(content)
    warnings: list[str] = []
    if little_text:
        _recognise_pages(content, little_text, pages, warnings, limits)
    sections = [section for page_sections in pages for section in page_sections]
    if not sections:
        raise ParseError("the PDF has no text: its pages have no text layer, and no text was recognised on them")
    return ParsedDocument(title, sections, warnings)


def _read_text_layer(content: bytes) -> tuple[str, list[list[Section]], dict[int, str]]:
    """The title; each page's sections; and the numbers of the pages with next to no text, with
    the little text they have (they may be recognised instead). The reader is gone when this
    returns: it holds a copy of the file and what it parsed (100 MiB for a 50 MB scan), which
    OCR needs the room of."""
    try:
        reader = PdfReader(io.BytesIO(content))
        # Opening tries the empty user password, which many "encrypted" PDFs have.
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise ParseError("the PDF is encrypted; upload it without a password")
        if not reader.pages:
            raise ParseError("the PDF has no pages")
        pages: list[list[Section]] = []
        little_text: dict[int, str] = {}
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text()
            if len(_SPACE.sub("", text)) < MIN_TEXT_CHARACTERS:
                little_text[number] = text
            pages.append([Section(paragraph, page=number) for paragraph in _paragraphs(text)])
        return _title(reader), pages, little_text
    except (ParseError, MemoryError):  # running out of memory is the sandbox's to report
        raise
    except Exception as error:  # a broken file makes pypdf raise nearly anything
        raise _damaged(error) from None


def _recognise_pages(content: bytes, little_text: dict[int, str], pages: list[list[Section]],
                     warnings: list[str], limits: ParseLimits) -> None:
    """Replaces the sections of the pages in `little_text` with the text recognised on them:
    pages without text, and pages whose few words come with an image (a stamped scan). A
    page of a few words and no image (a title page) keeps them."""
    document = _pdfium(pdfium.PdfDocument, content)
    deadline = time.monotonic() + limits.ocr_budget_seconds
    recognised, skipped, stopped = 0, [], ""
    try:
        for number, text in little_text.items():
            page = _pdfium(document.get_page, number - 1)
            try:
                if text.strip() and not _pdfium(_shows_an_image, page):
                    continue
                if not stopped and recognised == limits.ocr_max_pages:
                    stopped = ("only the first page without a text layer was recognised" if recognised == 1 else
                               f"only the first {recognised} pages without a text layer were recognised")
                elif not stopped and time.monotonic() > deadline:
                    stopped = (f"recognising pages without a text layer stopped after "
                               f"{limits.ocr_budget_seconds:g} s")
                if stopped:
                    skipped.append(number)
                    continue
                image = _pdfium(_render, page)
            finally:
                page.close()
            recognised += 1
            sections, confidence = recognise(image, number)
            del image  # before the next page is rendered
            if sections:
                pages[number - 1] = sections
            if confidence is not None and confidence < LOW_CONFIDENCE:
                warnings.append(low_confidence(f"page {number}", confidence))
    finally:
        document.close()
    if skipped:
        warnings.append(f"{stopped}: {len(skipped)} more {'was' if len(skipped) == 1 else 'were'} not read "
                        f"({_page_list(skipped)})")


def _page_list(numbers: list[int]) -> str:
    """'page 4', 'pages 31-45, 47, 50-200': runs of consecutive pages, the first _NAMED_RUNS
    of them (pages with text between scans split them)."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    named = [f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs[:_NAMED_RUNS]]
    return ("page " if len(numbers) == 1 else "pages ") + ", ".join(named) + (", …" if len(runs) > _NAMED_RUNS else "")


def _shows_an_image(page: pdfium.PdfPage) -> bool:
    return next(page.get_objects([pdfium_c.FPDF_PAGEOBJ_IMAGE]), None) is not None


def _render(page: pdfium.PdfPage) -> Image.Image:
    """The page as an RGB image of at most MAX_RENDER_PIXELS; PDFium's bitmap is freed."""
    width, height = page.get_size()
    scale = min(RENDER_DPI / _POINTS_PER_INCH, math.sqrt(MAX_RENDER_PIXELS / max(width * height, 1.0)))
    bitmap = page.render(scale=scale)
    try:
        return bitmap.to_pil().convert("RGB")  # a copy, not a view of the bitmap's memory
    finally:
        bitmap.close()


def _pdfium(function, *args):
    """`function(*args)`, what PDFium raises for a file pypdf read turned into a ParseError."""
    try:
        return function(*args)
    except MemoryError:
        raise
    except Exception as error:
        raise _damaged(error) from None


def _damaged(error: Exception) -> ParseError:
    # The library's message names its internals: the user gets ours, the log gets the library's.
    return ParseError("the PDF is damaged or not a PDF, so it could not be read",
                      detail=f"{type(error).__name__}: {error}")


def _title(reader: PdfReader) -> str:
    title = reader.metadata.title if reader.metadata else None
    return " ".join(title.split()) if isinstance(title, str) else ""


def _paragraphs(page_text: str) -> list[str]:
    text = page_text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.strip() for line in text.split("\n")]
    widths = [len(line) + len(WIDE.findall(line)) for line in lines]
    short = max(widths, default=0) * _SHORT_LINE
    paragraphs: list[str] = []
    current: list[str] = []
    for line, width in zip(lines, widths):
        if line:
            current.append(line)
        if current and (not line or width < short):
            paragraphs.append(join_lines(current))
            current = []
    if current:
        paragraphs.append(join_lines(current))
    return paragraphs
