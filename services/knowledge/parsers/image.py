"""Images (PNG, JPEG, TIFF, WebP, BMP): their text, recognised by OCR. pdf.py reads its pages
without a text layer through `recognise` too.

Reading order: lines whose middles share a height form a band, read left to right; bands are
read top to bottom (columns side by side are read across, band by band). A band follows the
one above in its paragraph unless the gap between them is more than PARAGRAPH_GAP of a line's
height or its type is of another size (SIZE_CHANGE). A section is a paragraph, with the mean
confidence of its lines.

Limits: an image over MAX_IMAGE_PIXELS is refused before its pixels are decoded (its header
says its size); a larger one than OCR needs is shrunk (a JPEG already while it is decoded) to
at most OCR_MAX_PIXELS and OCR_MAX_WIDTH; a multi-page TIFF is read to the ParseLimits' pages,
none begun after its OCR budget.
Only the five formats are opened, whatever else Pillow could read (EPS would run Ghostscript).
"""

from __future__ import annotations

import functools
import io
import math
import statistics
import time
from warnings import catch_warnings, simplefilter

from PIL import Image, UnidentifiedImageError

from services.knowledge.parsers.common import WIDE, join_lines
from services.knowledge.parsers.document import ParsedDocument, ParseError, ParseLimits, Section
from services.knowledge.parsers.ocr import Line, Recognizer

# Pillow's names of the formats opened (its JPEG opener also opens what it calls MPO: the JPEGs
# that cameras write with a preview inside).
FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP")
# Refused above this, undecoded: 50 megapixels is past any camera or A4 scan at 600 dpi
# (35 MP). Measured in a parsing worker of 512 MiB that holds the models: 50 MP of RGB, grey
# or JPEG are read; an image with transparency past some 25 MP (decoded, then premultiplied to
# be shrunk: 8 bytes a pixel) stops the worker for memory, as the sandbox then reports.
MAX_IMAGE_PIXELS = 50_000_000
# Shrunk to this before OCR: an A4 page scanned at 250 dpi, a 12-megapixel photo at half its
# size; text still 10 pixels or more high reads as well, and OCR's time grows with pixels.
OCR_MAX_PIXELS = 6_000_000
# And to this width (a 300 dpi A4 scan at 210 dpi): the recogniser reads an image in bands of its
# full width, whose memory grows with it.
OCR_MAX_WIDTH = 2048
# A page or image whose lines' mean confidence is below this gets a warning. Lines read right
# score above 0.9 (clean print 0.97 to 1.0) and lines garbled past an odd letter 0.5 to 0.65
# (measured on blurred and shrunken text; lines under 0.5 are dropped as noise), so a page
# below 0.75 has a good share of its text guessed.
LOW_CONFIDENCE = 0.75
# A gap between two bands of more than this share of the page's median line height starts a
# new paragraph: lines of a paragraph are recognised with boxes that nearly touch.
PARAGRAPH_GAP = 0.6
# A band whose lines are this many times taller or shorter than the band above's starts a new
# paragraph, however close: a heading, and the text under it.
SIZE_CHANGE = 1.5
# An image whose grey levels all lie within this of each other is blank.
_FLAT = 16
_ORIENTATION = 0x0112  # the EXIF tag
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


@functools.cache
def recognizer() -> Recognizer:
    """The recogniser, made once per process (parsing runs in sandbox workers, which keep it
    for the documents after): its models take a second and 100 MiB to load."""
    try:
        # Imported here: importing the parsers must not load onnxruntime, OpenCV and the models.
        from services.knowledge.parsers.ocr_rapidocr import RapidOcrRecognizer

        return RapidOcrRecognizer()
    except Exception as error:
        # onnxruntime reports an allocation that failed as an exception naming std::bad_alloc,
        # an ImportError when it happens as the library loads.
        if "bad_alloc" in str(error):
            raise MemoryError("no memory left to load the OCR models") from None
        raise


def parse_image(content: bytes, limits: ParseLimits = ParseLimits()) -> ParsedDocument:
    image = _open(content)
    # Only a TIFF's further pages are pages; an animated WebP's frames are not.
    pages = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    warnings: list[str] = []
    sections: list[Section] = []
    deadline = time.monotonic() + limits.ocr_budget_seconds
    for index in range(pages):
        if index == limits.ocr_max_pages or (index and time.monotonic() > deadline):
            warnings.append((f"only the first {index} of the image's {pages} pages were recognised" if index > 1
                             else f"only the first of the image's {pages} pages was recognised")
                            + ("" if index == limits.ocr_max_pages
                               else f": recognising stopped after {limits.ocr_budget_seconds:g} s"))
            break
        page = index + 1 if pages > 1 else 0
        if index:
            _read(image.seek, index)
        prepared = prepare(image)
        if pages == 1:
            image.close()  # its decoded pixels, which OCR does not need
        page_sections, confidence = recognise(prepared, page)
        del prepared
        sections.extend(page_sections)
        if confidence is not None and confidence < LOW_CONFIDENCE:
            warnings.append(low_confidence(f"page {page}" if page else "the image", confidence))
    if not sections:
        raise ParseError("no text was found in the image")
    return ParsedDocument("", sections, warnings)


def recognise(image: Image.Image, page: int = 0) -> tuple[list[Section], float | None]:
    """The paragraphs recognised on an RGB image, as sections on `page`, and the mean
    confidence of all its lines (None when there are none)."""
    low, high = image.convert("L").getextrema()
    if high - low < _FLAT:  # a blank page: nothing to find, and no models to load for it
        return [], None
    lines = [line for line in recognizer().recognize(image) if any(c.isalnum() for c in line.text)]
    if not lines:
        return [], None
    sections = [Section(text, page=page, confidence=round(confidence, 3))
                for text, confidence in paragraphs(lines)]
    return sections, statistics.fmean(line.confidence for line in lines)


def low_confidence(where: str, confidence: float) -> str:
    return f"{where} was recognised with low confidence ({confidence:.2f})"


def paragraphs(lines: list[Line]) -> list[tuple[str, float]]:
    """Lines in reading order as paragraphs: each one's text and its lines' mean confidence."""
    line_height = statistics.median(line.height for line in lines)
    groups: list[list[list[Line]]] = []
    above, size_above = -math.inf, 0.0
    for band in _bands(lines):
        top = min(line.box[1] for line in band)
        size = statistics.median(line.height for line in band)
        if groups and top - above <= PARAGRAPH_GAP * line_height and _same_size(size, size_above):
            groups[-1].append(band)
        else:
            groups.append([band])
        above, size_above = max(above, max(line.box[3] for line in band)), size
    return [(join_lines([_band_text(band) for band in group]),
             statistics.fmean(line.confidence for band in group for line in band))
            for group in groups]


def _same_size(a: float, b: float) -> bool:
    """Whether two lines' heights are of one type size (a heading over its text is not)."""
    return max(a, b) <= SIZE_CHANGE * min(a, b)


def _bands(lines: list[Line]) -> list[list[Line]]:
    """Lines on one height, each band left to right, bands top to bottom. A line joins the band
    above when each one's middle is within the other's height (a slightly skewed line still
    does; a line beside a taller one does not)."""
    def middle(line: Line) -> float:
        return (line.box[1] + line.box[3]) / 2

    bands: list[list[Line]] = []
    for line in sorted(lines, key=middle):
        if bands:
            first = bands[-1][0]
            if first.box[1] <= middle(line) <= first.box[3] and line.box[1] <= middle(first) <= line.box[3]:
                bands[-1].append(line)
                continue
        bands.append([line])
    return [sorted(band, key=lambda line: line.box[0]) for band in bands]


def _band_text(band: list[Line]) -> str:
    text = band[0].text
    for line in band[1:]:
        text += ("" if WIDE.match(text[-1]) and WIDE.match(line.text[0]) else " ") + line.text
    return text


def prepare(image: Image.Image) -> Image.Image:
    """The current frame of an opened image decoded as RGB, shrunk to what OCR needs and turned
    upright as its EXIF orientation says; transparency is flattened onto white. ParseError
    when it has too many pixels (checked before decoding) or cannot be decoded."""
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ParseError(f"the image is too large: {width:,} × {height:,} pixels, where at most "
                         f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels are read")
    orientation = _read(lambda: image.getexif().get(_ORIENTATION))
    # Upright, as the width limit is meant.
    upright_width = height if orientation in (5, 6, 7, 8) else width
    scale = min(1.0, OCR_MAX_WIDTH / upright_width, math.sqrt(OCR_MAX_PIXELS / (width * height)))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1 and image.format in ("JPEG", "MPO"):
        # Decoded at 1/2, 1/4 or 1/8 of its size, still at least `size`: less memory and time.
        image.draft(image.mode, size)
    _read(image.load)
    image = _resizable(image)
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if image.mode in ("RGBA", "LA"):
        flat = Image.new("RGBA", image.size, "white")
        flat.alpha_composite(image.convert("RGBA"))
        image = flat
    image = image.convert("RGB")
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
    return image


def _resizable(image: Image.Image) -> Image.Image:
    """The image in a mode that resizes smoothly: L, LA, RGB or RGBA."""
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if image.mode.startswith("I;16"):  # 16-bit grey, which converting to L would clip to white
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if image.mode in ("1", "I", "F"):
        return image.convert("L")
    if image.mode in ("P", "PA") and ("transparency" in image.info or image.mode == "PA"):
        return image.convert("RGBA")
    if image.mode in ("La", "RGBa"):
        return image.convert({"La": "LA", "RGBa": "RGBA"}[image.mode])
    return image.convert("RGB")


def _open(content: bytes) -> Image.Image:
    try:
        with catch_warnings():
            # Pillow warns of images over its own limit and raises past twice it.
            simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(content), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ParseError(f"the image is too large: at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels are read",
                         detail=str(error)) from None
    except UnidentifiedImageError as error:
        raise ParseError("the file is not a PNG, JPEG, TIFF, WebP or BMP image, so it could not be read",
                         detail=str(error)) from None
    except MemoryError:
        raise
    except Exception as error:  # a header Pillow recognises but cannot read
        raise ParseError("the image is damaged, so it could not be read",
                         detail=f"{type(error).__name__}: {error}") from None


def _read(function, *args):
    """`function(*args)`, whatever decoding raises turned into a ParseError in our words."""
    try:
        return function(*args)
    except (ParseError, MemoryError):  # running out of memory is the sandbox's to report
        raise
    except Exception as error:  # truncated data, a broken stream, a bad tag: Pillow raises many
        raise ParseError("the image is damaged, so it could not be read",
                         detail=f"{type(error).__name__}: {error}") from None
