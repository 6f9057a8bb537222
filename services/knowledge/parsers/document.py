"""What a parser returns, the limits it is given, and the two ways parsing fails."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Section:
    """One block of a document's text — a paragraph, list, table, code block or a JSON Lines
    record — which the chunker keeps whole when it can."""

    text: str
    # The heading path above the block, outermost first (Markdown and HTML headings; for a
    # JSON Lines record, its title when it has one).
    headings: tuple[str, ...] = ()
    # 1-based PDF page; 0 where the format has no pages.
    page: int = 0
    # Where a reader finds the block when the format has no pages, as a citation names it:
    # "slide 3", "sheet Budget", "attachment offer.docx". "" where the page says it all.
    location: str = ""
    # Recognised by OCR: the recogniser's mean confidence in [0, 1]; None for text read as text.
    confidence: float | None = None

    @property
    def cited_as(self) -> str:
        """Where a citation of the block points: its location, else its page, else nowhere."""
        return self.location or (f"page {self.page}" if self.page else "")


@dataclass(frozen=True)
class ParsedDocument:
    # The first H1 of Markdown, the <title> (else first H1) of HTML, the PDF's metadata title;
    # "" if none.
    title: str
    sections: list[Section]
    # What a person should know about how the file was read ("page 4 was recognised with low
    # confidence"), shown in the document's status; the document is indexed all the same.
    warnings: list[str] = field(default_factory=list)
    # Facts about the file that are not its text (an e-mail's From, To, Subject and Date),
    # stored as the document's metadata, filterable like any metadata.
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParseLimits:
    """What a deployment bounds in parsing one document, besides the sandbox's memory and time.
    The defaults are the knowledge service's (KnowledgeSettings takes them from here; the
    variables SAGEMESH_OCR_MAX_PAGES and SAGEMESH_OCR_BUDGET_SECONDS set them)."""

    # Pages recognised by OCR in one document (a PDF's pages without text, a TIFF's pages), and
    # the time after which no further page is begun; the rest are skipped, with a warning that
    # says which. A page takes 1 to 6 s (a page of 10-point text, 58 lines, 6.3 s on a 2-core
    # machine), and parsing is stopped after SAGEMESH_INGEST_TIMEOUT_SECONDS (120 by default) and
    # the document failed: better its first pages, with the warning. A deployment that reads long
    # scans raises the three together, the budget some way under the timeout (the page begun last
    # must finish, and the text pages be read).
    ocr_max_pages: int = 30
    ocr_budget_seconds: float = 75.0


class UnsupportedType(Exception):
    """Neither the declared content type nor the filename names a format we parse."""


class ParseError(Exception):
    """The file cannot be read; the message is shown to the user and says what is wrong in
    words of ours. `detail`, for the log only, is what the library said, if anything."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail
