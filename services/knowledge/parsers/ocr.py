"""Optical character recognition, behind one small interface.

A Recognizer finds the lines of text on an image. This module only says what one is: the
implementations live in their own modules (ocr_rapidocr.py, PP-OCR models on onnxruntime)
and are imported where a recognizer is made (image.recognizer), so that importing the
parsers loads no model and no inference runtime. There is no Tesseract one: no tesseract
binary (nor its Chinese data) is installed where this runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class Line:
    """One line of text as the recogniser read it."""

    text: str
    # The line's bounding rectangle in the image's pixels: left, top, right, bottom.
    box: tuple[float, float, float, float]
    # How sure the recogniser is of the text, in [0, 1].
    confidence: float

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


class Recognizer(Protocol):
    def recognize(self, image: Image) -> list[Line]:
        """The lines of text on an RGB image, in no particular order. Raises what the engine
        raises when it fails; an image without text gives []."""
        ...
