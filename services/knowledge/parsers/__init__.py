"""An uploaded file's bytes -> the document's title and its text in sections.

document.py  Section, ParsedDocument, ParseLimits (OCR's pages and time) and the two errors
common.py    text decoding, paragraphs and the heading path, shared by the text formats
plain.py, markdown.py, html.py, pdf.py, jsonl.py   one format each
word.py      Word .docx and OpenDocument .odt
slides.py    PowerPoint .pptx and OpenDocument .odp
sheets.py    Excel .xlsx .xlsm .xls, OpenDocument .ods, .csv and .tsv
mail.py      e-mail .eml and Outlook .msg, with their attachments
ebook.py     EPUB e-books
image.py     images (.png .jpg .tif .webp .bmp) by OCR, which pdf.py uses for pages without text;
             ocr.py is the recogniser's interface, ocr_rapidocr.py the one used (PP-OCR models)
containers.py, tables.py, opendocument.py   shared by those: zip and OLE checks (zip bombs,
             passwords, mislabelled files), Markdown tables and the row cap, odfpy helpers
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from services.knowledge.parsers.document import ParsedDocument, ParseError, ParseLimits, Section, UnsupportedType
from services.knowledge.parsers.ebook import parse_epub
from services.knowledge.parsers.html import parse_html
from services.knowledge.parsers.image import parse_image
from services.knowledge.parsers.jsonl import parse_jsonl
from services.knowledge.parsers.mail import parse_eml, parse_msg
from services.knowledge.parsers.markdown import parse_markdown
from services.knowledge.parsers.pdf import parse_pdf
from services.knowledge.parsers.plain import parse_plain
from services.knowledge.parsers.sheets import parse_csv, parse_ods, parse_tsv, parse_xls, parse_xlsx
from services.knowledge.parsers.slides import parse_odp, parse_pptx
from services.knowledge.parsers.word import parse_docx, parse_odt

__all__ = ["SUPPORTED", "FileType", "ParseError", "ParseLimits", "ParsedDocument", "Section", "UnsupportedType",
           "parse", "resolve_content_type", "supported_types"]

_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_XLSM = "application/vnd.ms-excel.sheet.macroenabled.12"  # lower case, as types are compared
_XLS = "application/vnd.ms-excel"
_ODT = "application/vnd.oasis.opendocument.text"
_ODP = "application/vnd.oasis.opendocument.presentation"
_ODS = "application/vnd.oasis.opendocument.spreadsheet"
# Canonical content type -> the filename extensions it goes by. Legacy binary Word and
# PowerPoint files (.doc, application/msword; .ppt) are not read.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "text/plain": (".txt", ".text", ".log"),
    "text/markdown": (".md", ".markdown"),
    "text/html": (".html", ".htm"),
    "application/pdf": (".pdf",),
    "application/jsonl": (".jsonl", ".ndjson"),
    _DOCX: (".docx",),
    _ODT: (".odt",),
    _PPTX: (".pptx",),
    _ODP: (".odp",),
    _XLSX: (".xlsx",),
    _XLSM: (".xlsm",),
    _XLS: (".xls",),
    _ODS: (".ods",),
    "text/csv": (".csv",),
    "text/tab-separated-values": (".tsv",),
    "message/rfc822": (".eml",),
    "application/vnd.ms-outlook": (".msg",),
    "application/epub+zip": (".epub",),
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/tiff": (".tif", ".tiff"),
    "image/webp": (".webp",),
    "image/bmp": (".bmp",),
}
_ALIASES = {
    "text/x-markdown": "text/markdown",
    "application/xhtml+xml": "text/html",
    "application/x-pdf": "application/pdf",
    "application/x-ndjson": "application/jsonl",
    "application/ndjson": "application/jsonl",
    "application/x-jsonl": "application/jsonl",
    "application/jsonlines": "application/jsonl",
    "application/x-jsonlines": "application/jsonl",
    "application/x-vnd.oasis.opendocument.text": _ODT,
    "application/x-vnd.oasis.opendocument.presentation": _ODP,
    "application/x-vnd.oasis.opendocument.spreadsheet": _ODS,
    "application/x-msexcel": _XLS,
    "application/x-excel": _XLS,
    "text/x-csv": "text/csv",
    "application/csv": "text/csv",
    "application/x-csv": "text/csv",
    "text/comma-separated-values": "text/csv",
    "text/tsv": "text/tab-separated-values",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-tiff": "image/tiff",
    "image/x-bmp": "image/bmp",
    "image/x-ms-bmp": "image/bmp",
}
_BY_EXTENSION = {extension: content_type for content_type, extensions in SUPPORTED.items()
                 for extension in extensions}
_PARSERS: dict[str, Callable[[bytes], ParsedDocument]] = {
    "text/plain": parse_plain,
    "text/markdown": parse_markdown,
    "text/html": parse_html,
    "application/pdf": parse_pdf,
    "application/jsonl": parse_jsonl,
    _DOCX: parse_docx,
    _ODT: parse_odt,
    _PPTX: parse_pptx,
    _ODP: parse_odp,
    _XLSX: parse_xlsx,
    _XLSM: parse_xlsx,
    _XLS: parse_xls,
    _ODS: parse_ods,
    "text/csv": parse_csv,
    "text/tab-separated-values": parse_tsv,
    "message/rfc822": parse_eml,
    "application/vnd.ms-outlook": parse_msg,
    "application/epub+zip": parse_epub,
    "image/png": parse_image,
    "image/jpeg": parse_image,
    "image/tiff": parse_image,
    "image/webp": parse_image,
    "image/bmp": parse_image,
}
# The parsers that take the ParseLimits: those that recognise text, and e-mails, whose
# attachments may be scans.
_LIMITED = {parse_pdf, parse_image, parse_eml, parse_msg}
_SUPPORTED_LIST = f"{', '.join(_BY_EXTENSION)} ({', '.join(SUPPORTED)})"


@dataclass(frozen=True)
class FileType:
    """A type uploads may be, as ListSupportedTypes tells clients."""

    content_type: str
    extensions: tuple[str, ...]
    aliases: tuple[str, ...]


def supported_types() -> list[FileType]:
    return [FileType(content_type, extensions,
                     tuple(alias for alias, canonical in _ALIASES.items() if canonical == content_type))
            for content_type, extensions in SUPPORTED.items()]


def resolve_content_type(filename: str, declared: str = "") -> str:
    """The canonical content type of an upload: the declared MIME type (parameters such as
    '; charset=utf-8' ignored, aliases mapped) when it is a supported one, otherwise the one
    the filename's extension names. A declared text/plain yields to a supported extension,
    since clients send it for any text file (.md, .jsonl, .html...). Raises UnsupportedType,
    naming the supported types, when neither is supported."""
    content_type = _canonical(declared)
    if content_type and content_type != "text/plain":
        return content_type
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    content_type = _BY_EXTENSION.get(suffix) or content_type
    if content_type is None:
        raise UnsupportedType(f"{filename or 'the file'} ({declared.strip() or 'no content type'}) is not "
                              f"a supported type; supported: {_SUPPORTED_LIST}")
    return content_type


def parse(content: bytes, content_type: str, limits: ParseLimits = ParseLimits()) -> ParsedDocument:
    """The title and sections of a file of `content_type` (canonical, though aliases work), OCR
    held to `limits`. Raises ParseError for unreadable content, UnsupportedType for an unknown
    type."""
    canonical = _canonical(content_type)
    if canonical is None:
        raise UnsupportedType(f"the document's content type is not one we read; supported: {_SUPPORTED_LIST}")
    parser = _PARSERS[canonical]
    document = parser(content, limits) if parser in _LIMITED else parser(content)
    if not document.sections:
        raise ParseError("the document has no text")
    return document


def _canonical(content_type: str) -> str | None:
    mime = content_type.partition(";")[0].strip().lower()
    mime = _ALIASES.get(mime, mime)
    return mime if mime in SUPPORTED else None
