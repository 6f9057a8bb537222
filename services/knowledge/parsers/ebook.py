"""E-books: EPUB 2 and 3 (.epub).

An EPUB is a zip of XHTML chapters listed, in reading order, by the spine of its package
document (the .opf file that META-INF/container.xml points at). Each chapter is read by the
HTML parser (html.py); its sections keep their heading paths under the chapter's title, which
is the chapter's entry in the table of contents (EPUB 3's nav document, else EPUB 2's NCX),
else its <title>. The book's title is the package's dc:title.

Read with zipfile (after the container checks) and lxml without entities rather than with
EbookLib: EbookLib is licensed AGPL-3.0, which this Apache-2.0 service cannot take on, and
all it would add here is the few lines that find the spine; the chapters' text is the HTML
parser's work either way. A chapter encrypted by DRM cannot be read: the file is refused.
"""

from __future__ import annotations

import posixpath
import zipfile
from dataclasses import replace
from urllib.parse import unquote, urldefrag

from lxml import etree

from services.knowledge.parsers.containers import EPUB, open_zip, parse_xml, reading
from services.knowledge.parsers.document import ParsedDocument, ParseError, Section
from services.knowledge.parsers.html import parse_html

_HTML_TYPES = frozenset({"application/xhtml+xml", "text/html", "application/x-dtbook+xml"})
# Font obfuscation, which every EPUB may use, is not DRM.
_FONT_OBFUSCATION = frozenset({"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"})


def parse_epub(content: bytes) -> ParsedDocument:
    archive = open_zip(content, EPUB)
    with reading(EPUB.noun):
        return _Book(archive).read()


class _Book:
    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.names = set(archive.namelist())
        self.warnings: list[str] = []

    def read(self) -> ParsedDocument:
        package_path = self._package_path()
        package = parse_xml(self._read(package_path))
        base = posixpath.dirname(package_path)
        manifest = {}  # id -> (path in the archive, media type, properties)
        for item in package.xpath("//*[local-name()='manifest']/*[local-name()='item']"):
            href = item.get("href")
            if item.get("id") and href:
                manifest[item.get("id")] = (_join(base, href), item.get("media-type", ""), item.get("properties", ""))
        spine = package.xpath("//*[local-name()='spine']")
        if not spine:
            raise ParseError("the e-book is damaged: it has no reading order (spine)")
        chapters = [manifest[ref.get("idref")] for ref in spine[0].xpath("*[local-name()='itemref']")
                    if ref.get("idref") in manifest]
        self._refuse_drm(path for path, _, _ in chapters)
        labels = self._toc(manifest, spine[0].get("toc"))
        sections: list[Section] = []
        for path, media_type, properties in chapters:
            # The nav document, when in the spine, is the table of contents: headings again.
            if media_type not in _HTML_TYPES or "nav" in properties.split():
                continue
            if path not in self.names:
                self.warnings.append(f"the chapter {path} is missing from the e-book")
                continue
            chapter = parse_html(self.archive.read(path))
            title = labels.get(path) or chapter.title or next(
                (section.headings[0] for section in chapter.sections if section.headings), "")
            sections.extend(_under(title, section) for section in chapter.sections)
        titles = package.xpath("//*[local-name()='metadata']/*[local-name()='title']")
        title = " ".join((titles[0].text or "").split()) if titles else ""
        return ParsedDocument(title, sections, self.warnings)

    def _read(self, path: str) -> bytes:
        try:
            return self.archive.read(path)
        except KeyError:
            raise ParseError(f"the e-book is damaged: its part {path} is missing") from None

    def _package_path(self) -> str:
        container = parse_xml(self._read("META-INF/container.xml"))
        rootfiles = container.xpath("//*[local-name()='rootfile']")
        for rootfile in rootfiles:
            if rootfile.get("media-type") == "application/oebps-package+xml" and rootfile.get("full-path"):
                return rootfile.get("full-path")
        if rootfiles and rootfiles[0].get("full-path"):
            return rootfiles[0].get("full-path")
        raise ParseError("the e-book is damaged: it does not say where its package document is")

    def _refuse_drm(self, chapters) -> None:
        if "META-INF/encryption.xml" not in self.names:
            return
        encryption = parse_xml(self.archive.read("META-INF/encryption.xml"))
        encrypted = set()
        for data in encryption.xpath("//*[local-name()='EncryptedData']"):
            methods = data.xpath("*[local-name()='EncryptionMethod']/@Algorithm")
            if methods and methods[0] in _FONT_OBFUSCATION:
                continue
            encrypted.update(_join("", uri) for uri in data.xpath(".//*[local-name()='CipherReference']/@URI"))
        if encrypted & set(chapters):
            raise ParseError("the e-book is protected by DRM (its chapters are encrypted), so its text "
                             "cannot be read; upload a copy without DRM")

    def _toc(self, manifest: dict[str, tuple[str, str, str]], ncx_id: str | None) -> dict[str, str]:
        """Chapter path -> its title in the table of contents (the first entry naming it)."""
        entries: list[tuple[str, str]] = []  # (chapter path, label)
        nav = next((path for path, _, properties in manifest.values() if "nav" in properties.split()), None)
        ncx = manifest.get(ncx_id or "") or next(
            (entry for entry in manifest.values() if entry[1] == "application/x-dtbncx+xml"), None)
        try:
            if nav and nav in self.names:
                tree = parse_xml(self.archive.read(nav))
                tocs = tree.xpath("//*[local-name()='nav'][@*[local-name()='type']='toc']") or \
                    tree.xpath("//*[local-name()='nav']")
                for link in tocs[0].xpath(".//*[local-name()='a'][@href]") if tocs else ():
                    entries.append((_join(posixpath.dirname(nav), link.get("href")),
                                    " ".join("".join(link.itertext()).split())))
            elif ncx and ncx[0] in self.names:
                tree = parse_xml(self.archive.read(ncx[0]))
                for point in tree.xpath("//*[local-name()='navPoint']"):
                    label = " ".join("".join(point.xpath("*[local-name()='navLabel']//text()")).split())
                    sources = point.xpath("*[local-name()='content']/@src")
                    if sources:
                        entries.append((_join(posixpath.dirname(ncx[0]), sources[0]), label))
        except etree.XMLSyntaxError:  # a table of contents that is not well-formed: titles from the chapters
            return {}
        labels: dict[str, str] = {}
        for path, label in entries:
            if label:
                labels.setdefault(path, label)
        return labels


def _join(base: str, href: str) -> str:
    """An href of the package (relative to `base`, URL-quoted, maybe with a #fragment) as a
    name in the archive."""
    path = unquote(urldefrag(href)[0])
    return posixpath.normpath(posixpath.join(base, path)).lstrip("/")


def _under(title: str, section: Section) -> Section:
    title = " ".join(title.split())
    if not title or section.headings[:1] == (title,):
        return section
    return replace(section, headings=(title, *section.headings))
