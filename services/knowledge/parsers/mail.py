"""E-mail: .eml (the email package, policy.default) and Outlook .msg (extract-msg).

The subject is the title; From, To, Cc, Subject and Date (ISO 8601) are the document's
metadata ("from", "to", "cc", "subject", "date") and its first section, so that a search for
who wrote when finds the message. The body follows: the HTML body through the HTML parser
when there is one, else the plain text as paragraphs.

Attachments of a supported type are parsed as their own format would be (the package's
resolve_content_type and parse, OCR within the upload's ParseLimits, each attachment's own)
into sections of the same document, with location
"attachment <file name>" followed by the attachment's own page or location ("attachment
offer.pdf, page 2", "attachment plan.xlsx, sheet Budget"). An attached e-mail is read the same
way with its attachments, down to MAX_DEPTH (2) levels of attachment below the upload;
an attachment nested deeper (an attachment of an e-mail attached to an e-mail attached to
the upload), attachments of unsupported types and unreadable ones are skipped with a warning.
Inline parts (images a body shows) are not attachments. At most MAX_ATTACHMENTS are read per
message.

extract-msg is licensed GPL-3.0, unlike this service (Apache-2.0), and is imported only when a
.msg arrives: a deployment that must not ship GPL code uninstalls it, and .msg files then fail
with a sentence saying why.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email
import logging
import quopri
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email import policy
from email.message import EmailMessage

from services.knowledge.parsers.common import decode, paragraphs
from services.knowledge.parsers.containers import (
    MSG,
    OLE_MAGIC,
    PASSWORD_PROTECTED,
    PROTECTED_OFFICE_FILE,
    Kind,
    describe,
    mismatch,
    reading,
)
from services.knowledge.parsers.document import ParsedDocument, ParseError, ParseLimits, Section, UnsupportedType
from services.knowledge.parsers.html import parse_html

EML = Kind("an e-mail message (.eml)", "e-mail message")
EML_TYPE, MSG_TYPE = "message/rfc822", "application/vnd.ms-outlook"
MAX_DEPTH = 2
MAX_ATTACHMENTS = 50
_HEADERS = ("from", "to", "cc", "date", "subject")
# Headers that every e-mail has one of; a text file without any is not an e-mail.
_MAIL_HEADERS = ("from", "to", "subject", "date", "message-id", "received", "mime-version")

# extract-msg logs every property it cannot decode at WARNING; a damaged message is ours to report.
logging.getLogger("extract_msg").setLevel(logging.ERROR)


@dataclass
class _Attachment:
    name: str
    content_type: str  # as declared
    content: bytes = b""
    # An attached e-mail the container already opened (message/rfc822, an embedded .msg).
    message: Callable[[], _Message] | None = None


@dataclass
class _Message:
    headers: dict[str, str]
    html: bytes | None
    text: str | None
    attachments: list[_Attachment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_eml(content: bytes, limits: ParseLimits = ParseLimits()) -> ParsedDocument:
    if not content.strip():
        raise ParseError("the file is empty")
    if describe(content) != "a text file":
        raise mismatch(content, EML)
    with reading(EML.noun):
        message = email.message_from_bytes(content, policy=policy.default)
        if not any(message.get(header) for header in _MAIL_HEADERS):
            raise ParseError("the file is not an e-mail message: it has none of the headers one has "
                             "(From, To, Subject, Date)")
        return _document(_from_eml(message), limits)


def _open_msg(content: bytes):
    try:
        import extract_msg
    except ImportError:
        raise ParseError("Outlook .msg files are not read by this deployment (its optional extract-msg "
                         "package is not installed); save the message as .eml instead") from None
    return extract_msg.openMsg(content)


def _attachment_types():
    from extract_msg.enums import AttachmentType

    return AttachmentType


def parse_msg(content: bytes, limits: ParseLimits = ParseLimits()) -> ParsedDocument:
    if not content.startswith(OLE_MAGIC):
        raise mismatch(content, MSG)
    what = describe(content)
    if what == PROTECTED_OFFICE_FILE:
        raise ParseError(PASSWORD_PROTECTED)
    if what != MSG.description:
        raise mismatch(content, MSG)
    with reading(MSG.noun):
        message = _open_msg(content)
        try:
            return _document(_from_msg(message), limits)
        finally:
            message.close()


def _document(message: _Message, limits: ParseLimits) -> ParsedDocument:
    warnings: list[str] = []
    sections = _sections(message, 0, warnings, limits)
    metadata = {key: value for key, value in message.headers.items() if value}
    return ParsedDocument(message.headers.get("subject", ""), sections, warnings, metadata)


def _sections(message: _Message, depth: int, warnings: list[str], limits: ParseLimits) -> list[Section]:
    """The sections of a message at `depth` levels of attachment below the upload; each
    attachment is parsed within `limits`."""
    warnings.extend(message.warnings)
    labels = {"from": "From", "to": "To", "cc": "Cc", "date": "Date", "subject": "Subject"}
    header = "\n".join(f"{labels[key]}: {value}" for key, value in message.headers.items() if value)
    sections = [Section(header)] if header else []
    if message.html:
        sections.extend(parse_html(message.html).sections)
    elif message.text:
        sections.extend(Section(paragraph) for paragraph in paragraphs(message.text.replace("\r\n", "\n")))
    attachments = message.attachments
    if len(attachments) > MAX_ATTACHMENTS:
        warnings.append(f"only the first {MAX_ATTACHMENTS} of {len(attachments)} attachments were read")
        attachments = attachments[:MAX_ATTACHMENTS]
    for attachment in attachments:
        sections.extend(_attachment(attachment, depth + 1, warnings, limits))
    return sections


def _attachment(attachment: _Attachment, depth: int, warnings: list[str], limits: ParseLimits) -> list[Section]:
    # Imported here: the package imports this module.
    from services.knowledge.parsers import parse, resolve_content_type

    name = attachment.name
    try:
        content_type = attachment.content_type if attachment.message else \
            resolve_content_type(name, attachment.content_type)
    except UnsupportedType:
        warnings.append(f"attachment {name} was skipped: its type is not one we read")
        return []
    if depth > MAX_DEPTH:
        warnings.append(f"attachment {name} was skipped: attachments nested more than {MAX_DEPTH} levels "
                        "deep are not read")
        return []
    inner: list[str] = []
    try:
        if attachment.message:
            sections = _sections(attachment.message(), depth, inner, limits)
        elif content_type in (EML_TYPE, MSG_TYPE):
            sections = _attached_message(attachment.content, content_type, depth, inner, limits)
        else:
            document = parse(attachment.content, content_type, limits)
            sections, inner = document.sections, list(document.warnings)
    except ParseError as error:
        warnings.append(f"attachment {name} was skipped: {error}")
        return []
    warnings.extend(f"attachment {name}: {warning}" for warning in inner)
    return [_within(name, section) for section in sections]


def _attached_message(content: bytes, content_type: str, depth: int, warnings: list[str],
                      limits: ParseLimits) -> list[Section]:
    """The sections of an e-mail attached as a file (an .eml or .msg attachment); a .msg stays
    open while they are read, since its own attached messages are read from it."""
    if content_type == MSG_TYPE:
        if not content.startswith(OLE_MAGIC):
            raise mismatch(content, MSG)
        with reading(MSG.noun):
            message = _open_msg(content)
            try:
                return _sections(_from_msg(message), depth, warnings, limits)
            finally:
                message.close()
    with reading(EML.noun):
        return _sections(_from_eml(email.message_from_bytes(content, policy=policy.default)), depth, warnings,
                         limits)


def _within(name: str, section: Section) -> Section:
    where = [f"attachment {name}"]
    if section.page:
        where.append(f"page {section.page}")
    if section.location:
        where.append(section.location)
    return replace(section, page=0, location=", ".join(where))


def _iso(moment: datetime.datetime | None) -> str:
    return moment.isoformat() if moment else ""


# -- .eml -----------------------------------------------------------------------------------


def _from_eml(message: EmailMessage) -> _Message:
    headers = {key: _header(message, key) for key in _HEADERS}
    try:
        date = message["date"]
        headers["date"] = _iso(getattr(date, "datetime", None))
    except (TypeError, ValueError, IndexError):  # a Date header the email package cannot read
        headers["date"] = ""
    warnings: list[str] = []
    html = text = None
    body = message.get_body(preferencelist=("html", "plain"))
    try:
        content = _text(body) if body is not None else ""
    except ParseError:  # a body of bytes that no character set makes text of
        content = ""
        warnings.append("the body of the message is not text and was not read")
    if content:
        if body.get_content_subtype() == "html":
            html = content.encode("utf-8")
        else:
            text = content
    attachments = []
    for part in _leaves(message):
        if part is body:
            continue
        attachment = _eml_attachment(part, len(attachments) + 1)
        if attachment:
            attachments.append(attachment)
    return _Message(headers, html, text, attachments, warnings)


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message[name]
    except (TypeError, ValueError, IndexError):
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _text(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError):  # an unknown or wrong charset
        content = None
    if isinstance(content, str):
        return content
    payload = part.get_payload(decode=True) or b""
    return decode(payload, part.get_content_charset() or "")


def _leaves(part: EmailMessage):
    """The parts of a message that are not multipart containers, in order; an attached
    message (message/rfc822) is a leaf, not entered."""
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        for sub in part.iter_parts():
            yield from _leaves(sub)
    else:
        yield part


def _eml_attachment(part: EmailMessage, number: int) -> _Attachment | None:
    disposition = part.get_content_disposition()
    filename = part.get_filename()
    content_type = part.get_content_type()
    if content_type == EML_TYPE:
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else inner
        encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
        if encoding in ("base64", "quoted-printable") or not isinstance(inner, EmailMessage):
            # Encoded, which RFC 2046 forbids but some clients do: the parser took the encoded
            # text for a message without headers. Decoded here, it is read as an .eml file.
            encoded = inner.get_payload() if isinstance(inner, EmailMessage) else inner
            return _Attachment(filename or f"message {number}.eml", content_type,
                               _decoded(encoded if isinstance(encoded, str) else "", encoding))
        subject = _header(inner, "subject")
        name = filename or f"{subject or 'message'}.eml"
        return _Attachment(name, content_type, message=lambda: _from_eml(inner))
    # Inline parts without a file name (the alternative bodies, images the HTML shows) are
    # part of the body, not attachments.
    if disposition != "attachment" and (not filename or part.get("content-id")):
        return None
    return _Attachment(filename or f"attachment {number}", content_type, part.get_payload(decode=True) or b"")


def _decoded(text: str, encoding: str) -> bytes:
    raw = text.encode("ascii", "replace")
    if encoding == "base64":
        try:
            return base64.b64decode(raw)
        except binascii.Error:
            return b""
    return quopri.decodestring(raw) if encoding == "quoted-printable" else raw


# -- .msg -----------------------------------------------------------------------------------


def _from_msg(message) -> _Message:
    headers = {
        "from": _clean(getattr(message, "sender", "")),
        "to": _clean(getattr(message, "to", "")),
        "cc": _clean(getattr(message, "cc", "")),
        "date": _iso(getattr(message, "date", None)),
        "subject": _clean(getattr(message, "subject", "")),
    }
    html, text = _property(message, "htmlBody"), _property(message, "body")
    attachments = []
    warnings: list[str] = []
    for number, attachment in enumerate(getattr(message, "attachments", ()), start=1):
        if getattr(attachment, "hidden", False):  # an image the HTML body shows
            continue
        name = _clean(getattr(attachment, "longFilename", None) or getattr(attachment, "shortFilename", None)
                      or getattr(attachment, "name", None)) or f"attachment {number}"
        kind = getattr(attachment, "type", None)
        if kind == _attachment_types().MSG:
            embedded = attachment.data
            name = name if "." in name else f"{_clean(getattr(embedded, 'subject', '')) or name}.msg"
            attachments.append(_Attachment(name, MSG_TYPE, message=lambda embedded=embedded: _from_msg(embedded)))
        elif kind == _attachment_types().DATA and isinstance(attachment.data, bytes):
            attachments.append(_Attachment(name, _clean(getattr(attachment, "mimetype", "")), attachment.data))
        else:
            warnings.append(f"attachment {name} was skipped: its kind of attachment is not one we read")
    return _Message(headers, html if isinstance(html, bytes) and html.strip() else None,
                    text if isinstance(text, str) else None, attachments, warnings)


def _property(message, name: str):
    """A body of a .msg, None when extract-msg cannot make it out (a damaged RTF body, an
    unknown encoding): the other body may still be there."""
    try:
        return getattr(message, name, None)
    except MemoryError:  # the sandbox's to report
        raise
    except Exception:
        return None


def _clean(value: object) -> str:
    return " ".join(str(value).split()) if value else ""

