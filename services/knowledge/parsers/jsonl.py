"""JSON Lines: one section per record, an object with a "text" string and an optional
"title" string, which becomes the section's heading. Other keys are ignored."""

from __future__ import annotations

import json

from services.knowledge.parsers.common import decode
from services.knowledge.parsers.document import ParsedDocument, ParseError, Section


def parse_jsonl(content: bytes) -> ParsedDocument:
    sections = []
    for number, line in enumerate(decode(content).split("\n"), start=1):
        if line.strip():
            text, title = _record(line, number)
            if text:
                sections.append(Section(text, (title,) if title else ()))
    if not sections:
        raise ParseError('the JSON Lines file has no records with a "text"')
    return ParsedDocument("", sections)


def _record(line: str, number: int) -> tuple[str, str]:
    """The stripped text and title of the record on line `number`."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ParseError(f"line {number} is not valid JSON (column {error.colno})", detail=error.msg) from None
    except RecursionError:
        raise ParseError(f"line {number} is not valid JSON: it nests too deeply") from None
    if not isinstance(record, dict):
        raise ParseError(f'line {number} is not a JSON object with a "text" string')
    text, title = record.get("text"), record.get("title")
    if not isinstance(text, str):
        raise ParseError(f'line {number} has no "text" string')
    if title is not None and not isinstance(title, str):
        raise ParseError(f'line {number}: "title" must be a string')
    # Escaped newlines inside JSON strings escaped the file-level normalisation.
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    return text, " ".join((title or "").split())
