"""What a parser returns, and the two ways parsing fails."""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class ParsedDocument:
    # The first H1 of Markdown, the <title> (else first H1) of HTML, the PDF's metadata title;
    # "" if none.
    title: str
    sections: list[Section]


class UnsupportedType(Exception):
    """Neither the declared content type nor the filename names a format we parse."""


class ParseError(Exception):
    """The file cannot be read; the message is shown to the user and says what is wrong in
    words of ours. `detail`, for the log only, is what the library said, if anything."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail
