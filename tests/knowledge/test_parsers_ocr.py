"""OCR: images of every supported format and scanned PDF pages read by the real recogniser
(PP-OCR models shipped in the rapidocr wheel, nothing downloaded), in reading order and
paragraphs, Chinese as well as English; confidence and its warnings; the limits on pixels and
pages; files that are not images; and the recogniser within the parsing sandbox's memory."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from meshkit.sandbox import Sandbox, SandboxLimits
from services.knowledge.parsers import (SUPPORTED, ParsedDocument, ParseError, ParseLimits, Section, parse,
                                        resolve_content_type)
from services.knowledge.parsers import image as image_parser
from services.knowledge.parsers import pdf as pdf_parser
from services.knowledge.parsers.image import paragraphs
from services.knowledge.parsers.ocr import Line
from tests.knowledge import scanned_files as files

PDF = "application/pdf"


def texts(document: ParsedDocument) -> list[str]:
    return [section.text for section in document.sections]


# -- content types -------------------------------------------------------------------------


def test_the_image_types_and_their_names():
    assert {kind: SUPPORTED[kind] for kind in SUPPORTED if kind.startswith("image/")} == {
        "image/png": (".png",),
        "image/jpeg": (".jpg", ".jpeg"),
        "image/tiff": (".tif", ".tiff"),
        "image/webp": (".webp",),
        "image/bmp": (".bmp",),
    }
    assert resolve_content_type("scan.JPEG") == "image/jpeg"
    assert resolve_content_type("scan.tif", "application/octet-stream") == "image/tiff"
    assert resolve_content_type("photo", "image/jpg") == "image/jpeg"
    assert resolve_content_type("x", "image/x-ms-bmp") == "image/bmp"
    assert resolve_content_type("x", "image/x-png") == "image/png"


# -- images --------------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "image_format", "fact", "options"), [
    ("image/png", "PNG", files.PNG_FACT, {}),
    ("image/jpeg", "JPEG", files.JPEG_FACT, {"quality": 85}),
    ("image/tiff", "TIFF", files.TIFF_FACT, {"compression": "tiff_lzw"}),
    ("image/webp", "WEBP", files.WEBP_FACT, {"quality": 80}),
    ("image/bmp", "BMP", files.BMP_FACT, {}),
], ids=["png", "jpeg", "tiff", "webp", "bmp"])
def test_each_image_format_is_read(content_type, image_format, fact, options):
    content = files.image_bytes(files.text_image([[fact]]), image_format, **options)
    document = parse(content, content_type)
    assert texts(document) == [fact]
    [section] = document.sections
    assert section.page == 0 and section.confidence > 0.9
    assert document.title == "" and document.warnings == []


def _sixteen_bit_grey(image: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)  # mode I;16


@pytest.mark.parametrize(("convert", "image_format", "options"), [
    (lambda image: image.convert("1"), "TIFF", {"compression": "group4"}),  # a fax, a bilevel scan
    (lambda image: image.convert("P"), "PNG", {}),
    (lambda image: image.convert("CMYK"), "JPEG", {}),
    (_sixteen_bit_grey, "PNG", {}),
], ids=["bilevel-g4-tiff", "palette-png", "cmyk-jpeg", "16-bit-grey-png"])
def test_images_of_every_pixel_mode_are_read(convert, image_format, options):
    content = files.image_bytes(convert(files.text_image([[files.TIFF_FACT]])), image_format, **options)
    assert texts(parse(content, "image/png")) == [files.TIFF_FACT]  # the content, not the type, says the format


def test_chinese_and_english_are_read_in_order_as_paragraphs():
    image = files.text_image([
        ["Travel policy, section 4"],
        [f"{files.CHINESE_FACT}，需提供发票。", "差旅住宿标准：每晚不超过五百元。"],
        ["Meals are reimbursed up to 45 euros", "a day on business trips."],
    ])
    document = parse(files.image_bytes(image, "PNG"), "image/png")
    # Lines of a paragraph join with a space, except between Chinese characters.
    assert texts(document) == [
        "Travel policy, section 4",
        f"{files.CHINESE_FACT}，需提供发票。差旅住宿标准：每晚不超过五百元。",
        "Meals are reimbursed up to 45 euros a day on business trips.",
    ]
    assert all(section.confidence > 0.9 for section in document.sections)


def test_lines_on_one_height_are_read_left_to_right():
    image = Image.new("RGB", (1400, 260), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.truetype(str(files.FONT), 40)
    draw.text((40, 60), "Extension:", font=font, fill="black")
    draw.text((700, 66), "4417", font=font, fill="black")  # a little lower, as on a form
    draw.text((40, 120), "Ask for Ms Okafor.", font=font, fill="black")
    assert texts(parse(files.image_bytes(image, "PNG"), "image/png")) == ["Extension: 4417 Ask for Ms Okafor."]


def test_a_tall_image_is_read_in_bands_without_losing_or_repeating_a_line():
    # 2048 pixels wide, 30 lines: the detector sees it in overlapping bands, and lines fall on
    # their edges.
    facts = [f"Locker {n} on the ground floor belongs to team {n * 3}." for n in range(1, 31)]
    document = parse(files.image_bytes(files.text_image([[fact] for fact in facts], size=56, width=2048), "PNG"),
                     "image/png")
    assert texts(document) == facts


def test_large_print_taller_than_the_bands_overlap_is_read():
    headings = ["Fire exit", "Assembly point B", "Keep clear", "Floor 3 west"]
    image = files.text_image([[heading] for heading in headings], size=170)
    assert image.height > 3 * 288  # read in bands, which lines this tall cross
    assert texts(parse(files.image_bytes(image, "PNG"), "image/png")) == headings


def test_a_large_photo_is_shrunk_before_it_is_read_and_turned_upright():
    # 8000 × 1500 pixels, stored on its side with the EXIF orientation that says so.
    image = Image.new("RGB", (8000, 1500), "white")
    image.paste(files.text_image([[files.JPEG_FACT]], size=150), (200, 500))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90° clockwise to show it
    content = files.image_bytes(image.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif)
    assert texts(parse(content, "image/jpeg")) == [files.JPEG_FACT]


def test_black_text_on_a_transparent_background_is_read():
    image = files.text_image([[files.PNG_FACT]], background=(0, 0, 0, 0), mode="RGBA")
    assert texts(parse(files.image_bytes(image, "PNG"), "image/png")) == [files.PNG_FACT]


def test_a_multi_page_tiff_keeps_its_page_numbers():
    pages = [files.text_image([[fact]]) for fact in files.SCANNED_FACTS]
    content = files.image_bytes(pages[0], "TIFF", save_all=True, append_images=pages[1:], compression="tiff_lzw")
    document = parse(content, "image/tiff")
    assert [(section.text, section.page) for section in document.sections] == list(zip(files.SCANNED_FACTS, [1, 2]))
    capped = parse(content, "image/tiff", ParseLimits(ocr_max_pages=1))
    assert texts(capped) == [files.SCANNED_FACTS[0]]
    assert capped.warnings == ["only the first of the image's 2 pages was recognised"]


def test_an_image_without_text_is_a_parse_error():
    for image in [Image.new("RGB", (800, 600), "white"), Image.new("L", (300, 200), 40)]:
        with pytest.raises(ParseError, match="^no text was found in the image$"):
            parse(files.image_bytes(image, "PNG"), "image/png")


def test_an_image_read_with_low_confidence_gets_a_warning():
    document = parse(files.image_bytes(files.blurred_image(), "PNG"), "image/png")
    assert document.sections, "the blurred lines are still read, badly"
    confidence = min(section.confidence for section in document.sections)
    assert confidence < image_parser.LOW_CONFIDENCE
    [warning] = document.warnings
    assert warning.startswith("the image was recognised with low confidence (0.")


# -- files that are not what they say, or too large ---------------------------------------


NOT_AN_IMAGE = "the file is not a PNG, JPEG, TIFF, WebP or BMP image, so it could not be read"


@pytest.mark.parametrize(("content", "message"), [
    (b"just some text, not an image", NOT_AN_IMAGE),
    # Pillow reads EPS by running Ghostscript: only the five formats are ever opened.
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n", NOT_AN_IMAGE),
    (files.image_bytes(files.text_image([["Cut short"]]), "PNG")[:300],
     "the image is damaged, so it could not be read"),
    (b"", NOT_AN_IMAGE),
], ids=["text", "eps", "truncated", "empty"])
def test_what_is_not_a_readable_image_is_a_parse_error_in_words_of_ours(content, message):
    with pytest.raises(ParseError) as failed:
        parse(content, "image/png")
    assert str(failed.value) == message
    if content:
        assert failed.value.detail  # Pillow's words, for the log


@pytest.mark.parametrize(("width", "height", "message"), [
    # Over our limit: refused from the header, before a pixel is decoded (this PNG has no data
    # to decode, so decoding it would say it is damaged instead).
    (8000, 8000, "the image is too large: 8,000 × 8,000 pixels, where at most 50 megapixels are read"),
    # Far over, where Pillow itself refuses to open it.
    (100_000, 100_000, "the image is too large: at most 50 megapixels are read"),
])
def test_an_image_of_too_many_pixels_is_refused_undecoded(width, height, message):
    with pytest.raises(ParseError) as failed:
        parse(files.png_claiming(width, height), "image/png")
    assert str(failed.value) == message


# -- scanned PDFs --------------------------------------------------------------------------


def test_a_scanned_pdf_is_read_page_by_page():
    content = files.scanned_pdf([files.page([[fact]]) for fact in files.SCANNED_FACTS])
    document = parse(content, PDF)
    assert [(section.text, section.page) for section in document.sections] == list(zip(files.SCANNED_FACTS, [1, 2]))
    assert all(section.confidence > 0.9 for section in document.sections)
    assert document.warnings == []


def test_a_mixed_pdf_keeps_the_text_layer_of_its_text_page():
    content = files.mixed_pdf([files.TEXT_PAGE_FACT], files.page([[files.IMAGE_PAGE_FACT]]))
    assert parse(content, PDF).sections == [
        Section(files.TEXT_PAGE_FACT, page=1),  # confidence None: read, not recognised
        Section(files.IMAGE_PAGE_FACT, page=2, confidence=pytest.approx(1, abs=0.05)),
    ]


def test_a_scanned_page_stamped_with_a_few_words_is_recognised_but_a_short_text_page_is_not():
    content = files.mixed_pdf(["Page 2 of 2"], files.page([[files.IMAGE_PAGE_FACT]]))
    # Page 1 is text alone: its few words stand. Page 2 is a scan: recognised as usual.
    assert texts(parse(content, PDF)) == ["Page 2 of 2", files.IMAGE_PAGE_FACT]
    stamped = files.stamped_scan("ACME-000123", files.page([[files.IMAGE_PAGE_FACT]]))
    document = parse(stamped, PDF)
    assert files.IMAGE_PAGE_FACT in texts(document)
    assert all(section.confidence is not None for section in document.sections)


def test_a_scanned_pdf_encrypted_without_a_user_password_is_recognised():
    pdf = FPDF()
    pdf.add_page()
    pdf.image(files.page([[files.IMAGE_PAGE_FACT]]), x=0, y=0, w=pdf.w)
    pdf.set_encryption(owner_password="owner")  # opens with the empty user password
    assert texts(parse(bytes(pdf.output()), PDF)) == [files.IMAGE_PAGE_FACT]


def test_a_pdf_of_blank_pages_has_no_text():
    content = files.scanned_pdf([Image.new("RGB", files.A4_150, "white")] * 2)
    with pytest.raises(ParseError, match="^the PDF has no text: its pages have no text layer, and no text was "
                                         "recognised on them$"):
        parse(content, PDF)


def test_pages_past_the_cap_are_skipped_with_a_warning():
    facts = [f"Scanned page {n} says the code is {n * 111}." for n in range(1, 5)]
    document = parse(files.scanned_pdf([files.page([[fact]]) for fact in facts]), PDF, ParseLimits(ocr_max_pages=2))
    assert texts(document) == facts[:2]
    assert document.warnings == ["only the first 2 pages without a text layer were recognised: 2 more were not "
                                 "read (pages 3-4)"]


def test_no_page_is_begun_after_the_time_for_ocr():
    spent = ParseLimits(ocr_budget_seconds=-1)
    document = parse(files.mixed_pdf([files.TEXT_PAGE_FACT], files.page([[files.IMAGE_PAGE_FACT]])), PDF, spent)
    assert texts(document) == [files.TEXT_PAGE_FACT]
    assert document.warnings == ["recognising pages without a text layer stopped after -1 s: 1 more was not "
                                 "read (page 2)"]


def test_the_pages_left_out_are_named_in_runs():
    assert pdf_parser._page_list([7]) == "page 7"
    assert pdf_parser._page_list([3, 4, 5, 7, 9, 10]) == "pages 3-5, 7, 9-10"
    assert pdf_parser._page_list(list(range(1, 40, 2))) == "pages 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, …"


class _Recognizer:
    """Says what it is told to, so that the warnings can be checked to the digit."""

    def __init__(self, confidence: float) -> None:
        self.confidence = confidence

    def recognize(self, image):
        return [Line("Something was read here.", (10, 10, 400, 40), self.confidence),
                Line("And something else.", (10, 45, 300, 75), self.confidence + 0.1)]


def test_a_page_recognised_with_low_confidence_gets_a_warning(monkeypatch):
    content = files.scanned_pdf([files.page([[fact]]) for fact in files.SCANNED_FACTS])
    monkeypatch.setattr(image_parser, "recognizer", lambda: _Recognizer(0.37))
    document = parse(content, PDF)
    assert document.warnings == ["page 1 was recognised with low confidence (0.42)",
                                 "page 2 was recognised with low confidence (0.42)"]
    assert [section.confidence for section in document.sections] == [0.42, 0.42]
    monkeypatch.setattr(image_parser, "recognizer", lambda: _Recognizer(0.8))
    assert parse(content, PDF).warnings == []


# -- reading order, without the recogniser -------------------------------------------------


def line(text: str, left: float, top: float, right: float, bottom: float, confidence: float = 0.9) -> Line:
    return Line(text, (left, top, right, bottom), confidence)


def test_paragraphs_follow_bands_and_gaps():
    lines = [
        line("right", 500, 12, 600, 42, 0.8),  # the same band as "left", a little lower
        line("left", 10, 10, 100, 40, 1.0),
        line("second line", 10, 44, 300, 74),  # touching: the same paragraph
        line("中文", 10, 130, 60, 160),  # a gap of two lines: a new paragraph
        line("汉字", 70, 131, 120, 161),
        line("next", 10, 163, 100, 193),
    ]
    assert paragraphs(lines) == [("left right second line", pytest.approx(0.9)), ("中文汉字 next", pytest.approx(0.9))]


def test_a_heading_is_a_paragraph_of_its_own_however_close_the_text_under_it():
    lines = [line("Expenses", 10, 10, 400, 90), line("Meals are paid", 10, 95, 300, 125),
             line("up to 45 euros.", 10, 127, 300, 157)]
    assert [text for text, _ in paragraphs(lines)] == ["Expenses", "Meals are paid up to 45 euros."]


def test_a_hyphenated_word_is_rejoined_across_lines():
    lines = [line("the recogni-", 10, 10, 300, 40), line("tion of text", 10, 42, 300, 72)]
    assert paragraphs(lines) == [("the recognition of text", pytest.approx(0.9))]


# -- offline, memory, the sandbox ----------------------------------------------------------


def test_the_recogniser_loads_and_reads_without_the_network(monkeypatch):
    from services.knowledge.parsers.ocr_rapidocr import RapidOcrRecognizer

    def no_network(*args, **kwargs):
        raise AssertionError("OCR tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    recognizer = RapidOcrRecognizer()
    assert [line.text for line in recognizer.recognize(files.text_image([[files.BMP_FACT]]))] == [files.BMP_FACT]


async def test_scanned_pages_and_a_wide_image_are_read_within_the_default_memory_limit(monkeypatch):
    """The knowledge service's default: 512 MiB for a parsing worker, which keeps its models
    from one document to the next (measured: 400 MiB are enough)."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # as SandboxedSteps sets it for its workers
    sandbox = Sandbox("ocr test", SandboxLimits(memory_bytes=512 * 2**20, cpu_seconds=300))
    try:
        scanned = files.scanned_pdf([files.dense_page(1), files.dense_page(2)])
        wide = files.image_bytes(files.text_image([[files.PNG_FACT]] * 12, size=60, width=3000), "PNG")
        for content, content_type in [(scanned, PDF), (wide, "image/png"), (scanned, PDF)]:
            document = await sandbox.run(parse, content, content_type, timeout=240)
            assert document.sections
        assert texts(document)[-1].endswith("Line 36 of page 2: the quarterly figures for region 1 were checked.")
    finally:
        await asyncio.to_thread(sandbox.close)



def test_the_recognisers_sessions_keep_no_memory_pattern_per_shape():
    """Every line read is a shape of its own, and onnxruntime keeps a memory pattern per shape: a
    worker grew page after page until a 200-page scan ran out of the sandbox's 512 MiB (VmData up
    by 107 MiB over 14 pages, measured; 27 MiB without them, level after page 3). The growth shows in
    coarse steps of the allocator's arenas, too unevenly for a test of its own; this is its cause."""
    from services.knowledge.parsers.ocr_rapidocr import RapidOcrRecognizer

    engine = RapidOcrRecognizer()._engine
    for model in (engine.text_det, engine.text_cls, engine.text_rec):
        assert model.session.session.get_session_options().enable_mem_pattern is False
