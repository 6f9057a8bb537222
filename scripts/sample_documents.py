"""Files of the formats the knowledge service reads, written from text the caller gives by the
libraries people's tools use (or that write what those tools write): pages and images of text to
recognise, scanned PDFs, Word, PowerPoint, Excel, CSV, e-mail and EPUB. The knowledge tests
(tests/knowledge/scanned_files.py and office_files.py, which add their facts and their hostile
and feature-specific files) and the ingestion benchmark (bench/ingestion.py, its corpus) both
build on these; neither imports the other.

Text is drawn with Pillow in Noto Sans SC (shipped by the pylopdf-fonts-zh-cn package, a dev
dependency: it prints Chinese and Latin alike). The writers are dev dependencies too (fpdf2,
EbookLib); python-docx, python-pptx and openpyxl are the service's own.
"""

from __future__ import annotations

import csv
import datetime
import io
from email.message import EmailMessage
from email.utils import format_datetime

import docx
import openpyxl
import pptx
import pylopdf_fonts_zh_cn
from ebooklib import epub
from PIL import Image, ImageDraw, ImageFont

FONT = pylopdf_fonts_zh_cn.sans_path()
# A4 at 150 dpi, which is what the PDF parser renders a scanned page at.
A4_150 = (1240, 1754)
# Where `page` puts its text on an A4_150 page.
_PAGE_LEFT, _PAGE_TOP = 60, 80


# -- pages and images of text ----------------------------------------------------------------


def text_image(paragraphs: list[list[str]], size: int = 40, width: int | None = None,
               background: str | tuple[int, ...] = "white", mode: str = "RGB") -> Image.Image:
    """Each paragraph's lines one under another, a blank line between paragraphs, on a
    `width`-wide image (wide enough for the longest line if None) just tall enough."""
    font = ImageFont.truetype(str(FONT), size)
    margin, pitch = size, round(size * 1.5)
    longest = max(font.getlength(line) for lines in paragraphs for line in lines)
    width = width or round(longest) + 2 * margin
    rows = sum(len(lines) for lines in paragraphs) + len(paragraphs) - 1
    image = Image.new(mode, (width, 2 * margin + rows * pitch), background)
    draw = ImageDraw.Draw(image)
    y = margin
    for lines in paragraphs:
        for line in lines:
            draw.text((margin, y), line, font=font, fill="black")
            y += pitch
        y += pitch
    return image


def page(paragraphs: list[list[str]], size: int = 30) -> Image.Image:
    """An A4 page at 150 dpi with the paragraphs printed from its top."""
    image = Image.new("RGB", A4_150, "white")
    image.paste(text_image(paragraphs, size=size), (_PAGE_LEFT, _PAGE_TOP))
    return image


def wrap(text: str, size: int, width: int) -> list[str]:
    """`text` broken at spaces into lines at most `width` pixels long in the font at `size`."""
    font = ImageFont.truetype(str(FONT), size)
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def page_lines(size: int) -> tuple[int, int]:
    """How wide a line (pixels) and how many rows (lines and the blank lines between
    paragraphs) `page` holds in type of `size`."""
    width = A4_150[0] - 2 * _PAGE_LEFT - 2 * size
    rows = (A4_150[1] - _PAGE_TOP - 2 * size) // round(size * 1.5)
    return width, rows


def image_bytes(image: Image.Image, format: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=format, **options)
    return out.getvalue()


def scanned_pdf(pages: list[Image.Image], dpi: int = 150) -> bytes:
    """A PDF of page images and nothing else, as a scanner writes one."""
    out = io.BytesIO()
    pages[0].save(out, format="PDF", save_all=True, append_images=pages[1:], resolution=dpi)
    return out.getvalue()


# -- office files, e-mail, e-books ----------------------------------------------------------


def write_docx(title: str, sections: list[tuple[str, list[str]]]) -> bytes:
    """A Word document: the title, then each section's heading (level 1) and paragraphs."""
    document = docx.Document()
    document.add_paragraph(title, style="Title")
    for heading, paragraphs in sections:
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def write_pptx(slides: list[tuple[str, list[str], str]]) -> bytes:
    """A PowerPoint deck: a slide per (title, bullet points, speaker notes)."""
    deck = pptx.Presentation()
    for title, points, notes in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        frame = slide.placeholders[1].text_frame
        frame.text = points[0] if points else ""
        for point in points[1:]:
            frame.add_paragraph().text = point
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def write_xlsx(sheets: dict[str, list[list[object]]]) -> bytes:
    """An Excel workbook: a sheet per name with its rows (the first the header); dates are
    shown as yyyy-mm-dd, floats with two decimals."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
        for row in sheet.iter_rows(min_row=2):
            for cell in row:
                if isinstance(cell.value, (datetime.date, datetime.datetime)):
                    cell.number_format = "yyyy-mm-dd"
                elif isinstance(cell.value, float):
                    cell.number_format = "#,##0.00"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def write_csv(rows: list[list[object]], delimiter: str = ",", encoding: str = "utf-8") -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode(encoding)


def email_message(subject: str, sender: str, to: str, date: datetime.datetime, *, cc: str = "",
                  plain: str = "", html: str = "") -> EmailMessage:
    """An e-mail with a plain-text body, and an HTML alternative when `html` is given; add
    attachments with its add_attachment, and bytes() it for the .eml file."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = to
    if cc:
        message["Cc"] = cc
    message["Date"] = format_datetime(date)
    message.set_content(plain)
    if html:
        message.add_alternative(html, subtype="html")
    return message


def write_epub(title: str, chapters: list[tuple[str, str]], identifier: str, language: str = "en") -> bytes:
    """An EPUB 3 with a nav document and an NCX (EbookLib writes both), a chapter per (title,
    body HTML) in the spine after the nav page, as text/chapter_<n>.xhtml."""
    book = epub.EpubBook()
    book.set_identifier(identifier)
    book.set_title(title)
    book.set_language(language)
    items = []
    for number, (chapter_title, body) in enumerate(chapters, start=1):
        chapter = epub.EpubHtml(title=chapter_title, file_name=f"text/chapter_{number}.xhtml", lang=language)
        chapter.content = f"<html><body>{body}</body></html>"
        book.add_item(chapter)
        items.append(chapter)
    book.toc = [epub.Link(item.file_name, chapter_title, f"c{n}")
                for n, (item, (chapter_title, _)) in enumerate(zip(items, chapters))]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    out = io.BytesIO()
    epub.write_epub(out, book, {"raise_exceptions": True})
    return out.getvalue()
