"""What the office formats share before and around their libraries: a look at the container
(zip or OLE compound file) before any library opens it, a name for what a file really is when
it is not what its type says, XML parsing without entities, and library errors in our words.

Zip formats (.docx .xlsx .xlsm .pptx .odt .ods .odp .epub) pass `open_zip` first: an archive
of more than MAX_ENTRIES parts, or whose parts' declared sizes add up to more than
MAX_UNPACKED_BYTES, or with a part of over a megabyte declared to inflate more than MAX_RATIO
times, is refused unread. Declared sizes suffice: Python's zipfile, which every library here
reads archives with, stops inflating a part at its declared size (and fails its CRC check).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import olefile
from defusedxml import DefusedXmlException
from lxml import etree

from services.knowledge.parsers.common import decode
from services.knowledge.parsers.document import ParseError

MAX_UNPACKED_BYTES = 200_000_000
MAX_ENTRIES = 10_000
MAX_RATIO = 100
# Small parts may inflate any amount: a megabyte of XML harms nobody.
_RATIO_FLOOR = 1_000_000

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # the second: an empty archive
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


@dataclass(frozen=True)
class Kind:
    """A file format as a person names it, and how its zip archive is recognised: OOXML by
    the folder of its parts, OpenDocument and EPUB by their `mimetype` part."""

    description: str  # "a Word document (.docx)"
    noun: str  # "Word document"
    folder: str = ""
    mimetype: str = ""


WORD = Kind("a Word document (.docx)", "Word document", folder="word/")
EXCEL = Kind("an Excel workbook (.xlsx)", "Excel workbook", folder="xl/")
POWERPOINT = Kind("a PowerPoint presentation (.pptx)", "PowerPoint presentation", folder="ppt/")
ODT = Kind("an OpenDocument text (.odt)", "OpenDocument text", mimetype="application/vnd.oasis.opendocument.text")
ODS = Kind("an OpenDocument spreadsheet (.ods)", "OpenDocument spreadsheet",
           mimetype="application/vnd.oasis.opendocument.spreadsheet")
ODP = Kind("an OpenDocument presentation (.odp)", "OpenDocument presentation",
           mimetype="application/vnd.oasis.opendocument.presentation")
EPUB = Kind("an EPUB e-book (.epub)", "EPUB e-book", mimetype="application/epub+zip")
XLS = Kind("an Excel 97-2003 workbook (.xls)", "Excel 97-2003 workbook")
MSG = Kind("an Outlook message (.msg)", "Outlook message")
_ZIP_KINDS = (WORD, EXCEL, POWERPOINT, ODT, ODS, ODP, EPUB)

# Streams that name what an OLE compound file holds.
_OLE_KINDS = (
    ("WordDocument", "a Word 97-2003 document (.doc)"),
    ("Workbook", XLS.description),
    ("Book", XLS.description),
    ("PowerPoint Document", "a PowerPoint 97-2003 presentation (.ppt)"),
    ("__properties_version1.0", MSG.description),
)
_MAGIC = (
    (b"%PDF-", "a PDF"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"{\\rtf", "an RTF document"),
)
PASSWORD_PROTECTED = "the file is password-protected; upload it without a password"
PROTECTED_OFFICE_FILE = "a password-protected Office file"


def describe(content: bytes) -> str:
    """What `content` is, as a person would say it: "a PNG image", "a text file"..."""
    if not content:
        return "empty"
    for magic, description in _MAGIC:
        if content.startswith(magic):
            return description
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "a WebP image"
    if content.startswith(_ZIP_MAGIC):
        return _zip_description(content)
    if content.startswith(OLE_MAGIC):
        return _ole_description(content)
    try:
        decode(content[:65536])
    except ParseError:
        return "binary data"
    return "a text file"


def mismatch(content: bytes, kind: Kind) -> ParseError:
    """The error for a file that is not what its type says."""
    if not content:
        return ParseError("the file is empty")
    return ParseError(f"the file is {describe(content)}, not {kind.description}; "
                      "check that its name or type matches its content")


def is_zip(content: bytes) -> bool:
    return content.startswith(_ZIP_MAGIC)


def open_zip(content: bytes, kind: Kind) -> zipfile.ZipFile:
    """The archive of a zip format after its checks (see the module's docstring): ParseError
    when it would unpack too far, is encrypted, is damaged or holds another format."""
    if not content.startswith(_ZIP_MAGIC):
        check_ole(content, kind)
        raise mismatch(content, kind)
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
        infos = archive.infolist()
    except MemoryError:  # the sandbox's to report
        raise
    except Exception as error:  # BadZipFile, and whatever a crafted directory makes zipfile raise
        raise ParseError(f"the file is damaged: it is not a readable {kind.noun}",
                         detail=f"{type(error).__name__}: {error}") from None
    if len(infos) > MAX_ENTRIES:
        raise ParseError(f"the file holds more than {MAX_ENTRIES:,} parts, more than any real "
                         f"{kind.noun} needs, so it was not unpacked")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise ParseError(PASSWORD_PROTECTED)
        if info.file_size > _RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ParseError(f"the file unpacks to more than {MAX_RATIO} times its size (its part "
                             f"{info.filename!r}), as zip bombs do, so it was not unpacked")
        total += info.file_size
    if total > MAX_UNPACKED_BYTES:
        raise ParseError(f"the file unpacks to more than {MAX_UNPACKED_BYTES // 1_000_000} MB, "
                         "more than we read, so it was not unpacked")
    found = _zip_kind(archive)
    if found is not kind and not (found is None and _looks_like(archive, kind)):
        what = found.description if found else "a zip archive"
        raise ParseError(f"the file is {what}, not {kind.description}; "
                         "check that its name or type matches its content")
    if kind.mimetype.startswith("application/vnd.oasis") and _odf_encrypted(archive):
        raise ParseError(PASSWORD_PROTECTED)
    return archive


def check_ole(content: bytes, kind: Kind) -> None:
    """For an OLE compound file that should be a zip format: ParseError saying it is
    password-protected (Office encrypts OOXML files into an OLE file with an EncryptionInfo
    stream) or that it is a legacy binary file. Nothing for other content."""
    if not content.startswith(OLE_MAGIC):
        return
    if _ole_encrypted(content):
        raise ParseError(PASSWORD_PROTECTED)
    raise mismatch(content, kind)


def _ole_streams(content: bytes) -> set[str] | None:
    try:
        with olefile.OleFileIO(content) as ole:
            return {"/".join(path) for path in ole.listdir(streams=True, storages=True)}
    except MemoryError:  # the sandbox's to report
        raise
    except Exception:  # a damaged compound file
        return None


def _ole_encrypted(content: bytes) -> bool:
    streams = _ole_streams(content)
    return bool(streams and ("EncryptionInfo" in streams or "EncryptedPackage" in streams))


def _ole_description(content: bytes) -> str:
    streams = _ole_streams(content)
    if streams is None:
        return "a damaged Office 97-2003 file"
    if "EncryptionInfo" in streams or "EncryptedPackage" in streams:
        return PROTECTED_OFFICE_FILE
    for stream, description in _OLE_KINDS:
        if stream in streams:
            return description
    return "an Office 97-2003 file"


def _zip_kind(archive: zipfile.ZipFile) -> Kind | None:
    try:
        mimetype = archive.read("mimetype")[:100].decode("ascii", "replace").strip()
    except (KeyError, zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
        mimetype = ""
    names = archive.namelist()
    for kind in _ZIP_KINDS:
        if kind.mimetype and mimetype.startswith(kind.mimetype):
            return kind
        if kind.folder and "[Content_Types].xml" in names and any(n.startswith(kind.folder) for n in names):
            return kind
    return None


def _looks_like(archive: zipfile.ZipFile, kind: Kind) -> bool:
    """An OpenDocument file or e-book without its `mimetype` part, which some writers omit."""
    names = archive.namelist()
    if kind is EPUB:
        return "META-INF/container.xml" in names
    return kind.mimetype.startswith("application/vnd.oasis") and "content.xml" in names


def _zip_description(content: bytes) -> str:
    try:
        kind = _zip_kind(zipfile.ZipFile(io.BytesIO(content)))
    except MemoryError:  # the sandbox's to report
        raise
    except Exception:
        return "a damaged zip archive"
    return kind.description if kind else "a zip archive"


def _odf_encrypted(archive: zipfile.ZipFile) -> bool:
    """OpenDocument encrypts the parts of a password-protected file and says so in its manifest."""
    try:
        info = archive.getinfo("META-INF/manifest.xml")
    except KeyError:
        return False
    manifest = parse_xml(archive.read(info))
    return bool(manifest.xpath("//*[local-name()='encryption-data']"))


def parse_xml(content: bytes) -> etree._Element:
    """XML read as data only: no entity is expanded, no DTD or network resource is loaded."""
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False)
    return etree.fromstring(content, parser=parser)


@contextmanager
def reading(noun: str) -> Iterator[None]:
    """Turns what a library raises on a damaged file into a ParseError in our words, keeping
    the library's message for the log (ParseError.detail)."""
    try:
        yield
    except (ParseError, MemoryError):  # running out of memory is the sandbox's to report
        raise
    except DefusedXmlException as error:
        raise ParseError(f"the {noun} declares XML entities or a DTD, which uploads may not use",
                         detail=f"{type(error).__name__}: {error}") from None
    except RecursionError:
        raise ParseError(f"the {noun} nests too deeply to be read") from None
    except Exception as error:  # a damaged file makes a library raise nearly anything
        if _caused_by_entities(error):  # openpyxl wraps what defusedxml raised
            raise ParseError(f"the {noun} declares XML entities or a DTD, which uploads may not use",
                             detail=f"{type(error).__name__}: {error}") from None
        raise ParseError(f"the {noun} is damaged, so it could not be read",
                         detail=f"{type(error).__name__}: {error}") from None


def _caused_by_entities(error: BaseException) -> bool:
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, DefusedXmlException):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False
