"""The Recognizer on RapidOCR: PaddleOCR's PP-OCR models (text detection, line orientation,
recognition; trained on Chinese and English, so they read both, mixed too) as ONNX files
shipped inside the rapidocr wheel, run by onnxruntime.

Nothing is downloaded. RapidOCR fetches the models it does not ship and, when it is given no
model path, checks the shipped ones against a manifest and fetches them again if they differ;
each model is named here by its path in the package, which takes neither of those paths.

Memory, under the parsing sandbox's limit (512 MiB by default, of which the parsers' own
libraries take 110): the runtime and models take 100 MiB, and the detector's working memory
grows with the pixels it is shown, some 200 bytes a pixel (420 MiB for an A4 page at 150 dpi).
So lines are found in full-width bands of about BAND_PIXELS, which overlap so that every line
up to BAND_OVERLAP high lies whole in one of them, taller ones on the whole image shrunk to
BAND_PIXELS; each line is then read once, cut out of the whole image.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

# OpenBLAS (numpy's, and the copy OpenCV bundles) reserves buffers for a thread per core when it
# is loaded: 180 MiB of address space, which the sandbox's memory limit counts, for linear
# algebra that OCR does not do. Read when the library is loaded, so set before the imports.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import rapidocr  # noqa: E402
from rapidocr import RapidOCR  # noqa: E402
from rapidocr.inference_engine.onnxruntime import main as rapidocr_onnxruntime  # noqa: E402
from rapidocr.utils.process_img import get_rotate_crop_image  # noqa: E402

from services.knowledge.parsers.ocr import Line  # noqa: E402

from PIL.Image import Resampling  # noqa: E402

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

_MODELS = Path(rapidocr.__file__).parent / "models"
DETECTION_MODEL = _MODELS / "PP-OCRv6_det_small.onnx"
ORIENTATION_MODEL = _MODELS / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
RECOGNITION_MODEL = _MODELS / "PP-OCRv6_rec_small.onnx"

# Pixels the detector is shown at once, about 80 MiB of its working memory (bands are at least
# 2 * BAND_OVERLAP + 64 rows high, so a 2048-pixel-wide image's take 100 MiB). Measured: a
# parsing worker reads pages at 150 dpi and 2048-pixel-wide images, one after the other, in
# 400 MiB (448 with numpy's OpenBLAS threads, see SandboxedSteps).
BAND_PIXELS = 400_000
# Rows shared by neighbouring bands. A line is taken from a band whose cut edges it keeps clear
# of by _EDGE, so lines up to BAND_OVERLAP - 2 * _EDGE high (35-point type at 150 dpi) are
# always whole in one band; taller ones are found on the whole image shrunk.
BAND_OVERLAP = 96
# A box this close to a cut edge is of a line the cut goes through: the detector may find only
# a piece of it (the strokes below the cut), which ends a few pixels short of the edge.
_EDGE = 12
# Lines read with less confidence than this are dropped: below it, PP-OCR's output is mostly
# noise read as letters (measured on blurred and shrunken text: lines it reads right score
# above 0.9, lines it garbles 0.45 to 0.6). RapidOCR's own default.
MIN_CONFIDENCE = 0.5
# Inference threads of each model. Most of OCR's time goes to reading lines one by one (48-pixel
# strips, too small to share out well), and the knowledge service parses INGEST_CONCURRENCY (2)
# documents at once, on two cores here: measured, one thread read a page as fast as two, or
# faster, and each further thread costs memory (8 MiB of stack for each of three models).
THREADS = 1
# glibc's malloc option M_MMAP_THRESHOLD (malloc.h).
_M_MMAP_THRESHOLD = -3


class _SessionOptions(onnxruntime.SessionOptions):
    """RapidOCR's session options, without onnxruntime's memory patterns: a pattern is planned and
    kept for each input shape a session sees, and every line read is a shape of its own (its
    width), so a worker's memory grew page after page (VmData by 107 MiB over 14 pages of a
    scan, measured) until a long scan ran out of the sandbox's 512 MiB; without them it levels off after
    three pages, as fast. RapidOCR has no option for this, so its module makes its sessions' options
    with this class."""

    def __init__(self) -> None:
        super().__init__()
        self.enable_mem_pattern = False


rapidocr_onnxruntime.SessionOptions = _SessionOptions


class RapidOcrRecognizer:
    """Loads its three models when made (under 1 s and 100 MiB): make one per process."""

    def __init__(self, threads: int = THREADS) -> None:
        _return_large_blocks_to_the_system()
        self._engine = RapidOCR(params={
            "Global.log_level": "error",
            "Global.text_score": MIN_CONFIDENCE,
            # The bands are sized here; RapidOCR is not to shrink them.
            "Global.max_side_len": 1_000_000,
            "Det.model_path": str(DETECTION_MODEL),
            "Cls.model_path": str(ORIENTATION_MODEL),
            "Rec.model_path": str(RECOGNITION_MODEL),
            # Never enlarge what the detector sees (its default brings the shorter side up to
            # 736 px, which turns a narrow band into megapixels); small text is found unscaled.
            "Det.limit_type": "max",
            "Det.limit_side_len": 100_000,
            # One line at a time: batches pad every line to the widest, which costs memory
            # (110 MiB more for six lines of a page) and, measured, time too.
            "Rec.rec_batch_num": 1,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })
        # Loaded now rather than on the first image, so that a missing model fails here.
        self._engine._load_det_model()
        self._engine._load_cls_model()
        self._engine._load_rec_model()

    def recognize(self, image: Image) -> list[Line]:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        # OpenCV's channel order (BGR), which RapidOCR takes an array in: a view, each band and
        # line copied out of it as they are read.
        pixels = np.asarray(rgb)[:, :, ::-1]
        height, width = pixels.shape[:2]
        # Lines are found band by band, then each is read once, cut out of the whole image.
        bands = _bands(height, width)
        boxes: list[np.ndarray] = []
        for top, bottom in bands:
            whole, cut = [], []
            for box in self._detect(pixels[top:bottom]):
                # A line that reaches a cut between bands is taken from a neighbouring band,
                # where it is whole (or, taller than the overlap, from the shrunk image below).
                reaches_a_cut = ((top > 0 and box[:, 1].min() <= _EDGE)
                                 or (bottom < height and box[:, 1].max() >= bottom - top - 1 - _EDGE))
                (cut if reaches_a_cut else whole).append(box + np.array([0, top], dtype=box.dtype))
            # Nor is a piece of a cut line taken, which the detector may find besides the line;
            # nor a line found whole in two bands, in the rows they share, twice.
            boxes += [box for box in whole
                      if not any(_same_place(box, other) for other in [*cut, *boxes])]
        if len(bands) > 1:
            # Lines taller than the bands' overlap may reach a cut in every band they are in:
            # they are found on the whole image shrunk to a band's pixels, where they are still
            # large, and taken where the bands found nothing.
            scale = math.sqrt(BAND_PIXELS / (width * height))
            shrunk = rgb.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                Resampling.BOX)
            large = [box / scale for box in self._detect(np.asarray(shrunk)[:, :, ::-1])]
            boxes += [box for box in large if not any(_overlap(box, other) > 0 for other in boxes)]
        lines = []
        for box in boxes:
            # The line's rows, copied out in OpenCV's layout, and the line cut out of them upright.
            top = max(0, math.floor(box[:, 1].min()))
            rows = np.ascontiguousarray(pixels[top:math.ceil(box[:, 1].max()) + 1])
            crop = get_rotate_crop_image(rows, (box - np.array([0, top], dtype=box.dtype)).astype(np.float32))
            read = self._run(crop, use_det=False, use_cls=True, use_rec=True)
            text, confidence = (read.txts[0].strip(), float(read.scores[0])) if read.txts else ("", 0.0)
            if text and confidence >= MIN_CONFIDENCE:
                lines.append(Line(text, (float(box[:, 0].min()), float(box[:, 1].min()),
                                         float(box[:, 0].max()), float(box[:, 1].max())), confidence))
        return lines

    def _detect(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The boxes (4 corners, x and y) of the lines found on `pixels`."""
        detected = self._run(pixels, use_det=True, use_cls=False, use_rec=False)
        return list(detected.boxes) if detected.boxes is not None else []

    def _run(self, pixels: np.ndarray, **steps: bool):
        try:
            return self._engine(np.ascontiguousarray(pixels), **steps)
        except Exception as error:
            # onnxruntime reports an allocation that failed as a RuntimeException.
            if "bad_alloc" in str(error):
                raise MemoryError("OCR ran out of memory") from None
            raise


def _bands(height: int, width: int) -> list[tuple[int, int]]:
    """The rows [top, bottom) of each band the image is read in, neighbours sharing BAND_OVERLAP
    rows or more."""
    rows = max(2 * BAND_OVERLAP + 64, BAND_PIXELS // max(width, 1))
    if height <= rows:
        return [(0, height)]
    tops = [*range(0, height - rows, rows - BAND_OVERLAP), height - rows]
    return [(top, top + rows) for top in tops]


def _same_place(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two boxes' bounding rectangles share more than half of the smaller one."""
    return _overlap(a, b) > 0.5 * min(_area(a), _area(b))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """The area the two boxes' bounding rectangles share."""
    (a_left, a_top), (a_right, a_bottom) = a.min(axis=0), a.max(axis=0)
    (b_left, b_top), (b_right, b_bottom) = b.min(axis=0), b.max(axis=0)
    width = min(a_right, b_right) - max(a_left, b_left)
    height = min(a_bottom, b_bottom) - max(a_top, b_top)
    return float(max(0, width) * max(0, height))


def _area(box: np.ndarray) -> float:
    (left, top), (right, bottom) = box.min(axis=0), box.max(axis=0)
    return float((right - left) * (bottom - top))


def _return_large_blocks_to_the_system() -> None:
    """onnxruntime frees its large intermediate tensors to malloc, and glibc, which raises its
    mmap threshold as blocks are freed, keeps them in the heap for the next allocation, where
    differently sized ones do not fit: the heap grows image after image (by 240 MiB after one
    page, measured) past the sandbox's memory limit. A fixed threshold gives blocks of 4 MiB and
    more back to the system as soon as they are freed."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 4 * 2**20)
    except (OSError, AttributeError):  # not glibc: its allocator is its own
        log.debug("no glibc: the malloc threshold is left as it is")
