"""Images and scanned PDFs with text to recognise, drawn with Pillow in Noto Sans SC (see
scripts/sample_documents.py, which draws them), each carrying facts of its own that a test can
look for in the recognised text. Shared by the parser tests and end-to-end tests that upload them.

Every builder of a file returns its bytes; `page` and `text_image` return a Pillow image, to be
saved in any format or put in a PDF.
"""

from __future__ import annotations

import struct
import zlib

from fpdf import FPDF
from PIL import Image, ImageFilter

# The tests use these through this module too.
from scripts.sample_documents import A4_150, FONT, image_bytes, page, scanned_pdf, text_image  # noqa: F401

# Facts to look for, one per file; the Chinese one reads "the reimbursement cap is 3,000 yuan".
PNG_FACT = "The parking permit for lot F costs 35 euros a month."
JPEG_FACT = "Visitors to the Leiden office sign in at desk 4."
TIFF_FACT = "The fire drill is held on the first Tuesday of March."
WEBP_FACT = "Badge 7316 opens the server room on floor 9."
BMP_FACT = "Printer P12 on floor 2 prints in colour."
CHINESE_FACT = "报销上限为三千元"
SCANNED_FACTS = ("Invoices are approved by the finance lead within 5 days.",
                 "The warehouse in Lyon closes at 18:00 on Fridays.")
TEXT_PAGE_FACT = "The text page of the mixed file lists 12 holidays."
IMAGE_PAGE_FACT = "The scanned page of the mixed file names room C-14."


def dense_page(number: int) -> Image.Image:
    """An A4 page at 150 dpi full of text (36 numbered lines of 12-point type in 4 paragraphs),
    as a page of a scanned report would be."""
    text = [f"Line {i} of page {number}: the quarterly figures for region {i % 7} were checked."
            for i in range(1, 37)]
    return page([text[start:start + 9] for start in range(0, 36, 9)], size=25)


def mixed_pdf(text_lines: list[str], scanned: Image.Image) -> bytes:
    """Page 1 printed text (a text layer), page 2 an image of text (none)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    for line in text_lines:
        pdf.cell(text=line, new_x="LMARGIN", new_y="NEXT")
    pdf.add_page()
    pdf.image(scanned, x=0, y=0, w=pdf.epw + 2 * pdf.l_margin)
    return bytes(pdf.output())


def stamped_scan(stamp: str, scanned: Image.Image) -> bytes:
    """A PDF of one scanned page with a few words of text printed on it, as a PDF tool stamps
    a page number or a Bates number on a scan."""
    pdf = FPDF()
    pdf.set_auto_page_break(False)
    pdf.set_font("helvetica", size=9)
    pdf.add_page()
    pdf.image(scanned, x=0, y=0, w=pdf.epw + 2 * pdf.l_margin)
    pdf.set_xy(pdf.l_margin, pdf.h - 15)
    pdf.cell(text=stamp)
    return bytes(pdf.output())


def blurred_image() -> Image.Image:
    """Text blurred past reading: the recogniser still finds lines there, with low confidence."""
    image = text_image([["The vault code is 7316 for building C.", "Visitors sign in at the front desk.",
                         "Parcels go to the loading bay at gate 2.", "The canteen opens at half past eleven."]],
                       size=24)
    # Lines there score 0.50 to 0.57 from blurs of 4.2 to 4.8 (measured); sharper, they read.
    return image.filter(ImageFilter.GaussianBlur(4.4))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width × height pixels (RGB) but whose data is a few bytes: a
    decompression bomb's header, without its bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))
