"""PDF: each page's text as paragraphs, with the page number.

pypdf gives one line per printed line and seldom a blank line between paragraphs, so a
paragraph also ends after a line that stops well short of the page's widest one: the last
line of a paragraph, a heading, a list item. Lines of a paragraph are joined with a space,
except between CJK characters, and a word hyphenated across a line break is rejoined.
"""

from __future__ import annotations

import io
import re

from pypdf import PasswordType, PdfReader

from services.knowledge.parsers.document import ParsedDocument, ParseError, Section

# A line narrower than this share of the page's widest line ends its paragraph.
_SHORT_LINE = 0.75
# Characters printed twice as wide as Latin ones: CJK, Hangul, full-width forms.
_WIDE = re.compile(
    r"[\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]"
)
_HYPHENATED = re.compile(r"[^\W\d_]-$")


def parse_pdf(content: bytes) -> ParsedDocument:
    try:
        reader = PdfReader(io.BytesIO(content))
        # Opening tries the empty user password, which many "encrypted" PDFs have.
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise ParseError("the PDF is encrypted; upload it without a password")
        if not reader.pages:
            raise ParseError("the PDF has no pages")
        title = _title(reader)
        sections = [
            Section(paragraph, page=number)
            for number, page in enumerate(reader.pages, start=1)
            for paragraph in _paragraphs(page.extract_text())
        ]
    except (ParseError, MemoryError):  # running out of memory is the sandbox's to report
        raise
    except Exception as error:  # a broken file makes pypdf raise nearly anything
        # pypdf's message names its internals: the user gets ours, the log gets pypdf's.
        raise ParseError("the PDF is damaged or not a PDF, so it could not be read",
                         detail=f"{type(error).__name__}: {error}") from None
    if not sections:
        raise ParseError("the PDF has no extractable text (scanned pages need OCR)")
    return ParsedDocument(title, sections)


def _title(reader: PdfReader) -> str:
    title = reader.metadata.title if reader.metadata else None
    return " ".join(title.split()) if isinstance(title, str) else ""


def _paragraphs(page_text: str) -> list[str]:
    text = page_text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.strip() for line in text.split("\n")]
    widths = [len(line) + len(_WIDE.findall(line)) for line in lines]
    short = max(widths, default=0) * _SHORT_LINE
    paragraphs: list[str] = []
    current: list[str] = []
    for line, width in zip(lines, widths):
        if line:
            current.append(line)
        if current and (not line or width < short):
            paragraphs.append(_join(current))
            current = []
    if current:
        paragraphs.append(_join(current))
    return paragraphs


def _join(lines: list[str]) -> str:
    parts = [lines[0]]
    for line in lines[1:]:
        previous = parts[-1]
        if _HYPHENATED.search(previous) and line[0].islower():
            parts[-1] = previous[:-1]
        elif not (_WIDE.match(previous[-1]) and _WIDE.match(line[0])):
            parts.append(" ")
        parts.append(line)
    return "".join(parts)
