"""What a parser returns, and the two ways parsing fails."""

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


class UnsupportedType(Exception):
    """Neither the declared content type nor the filename names a format we parse."""


class ParseError(Exception):
    """The file cannot be read; the message is shown to the user and says what is wrong in
    words of ours. `detail`, for the log only, is what the library said, if anything."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail
