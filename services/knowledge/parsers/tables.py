"""Tables as Markdown, shared by the office formats: a table of any length becomes blocks of
about BLOCK_CHARS characters, each a Markdown table that starts with the header row, so that
every block (a section, which the chunker keeps whole when it can) reads on its own.

A cell's text is one line (its whitespace collapsed) with its pipes escaped; empty rows and
empty columns are dropped; a table of one cell (a box around text) is that text.

A document's tables hold at most MAX_ROWS non-empty rows and MAX_CELLS cells in all: past
either the document is refused (ParseError), not indexed in part, since a truncated table
would answer "how many" and "which" questions wrongly without anyone noticing. Hidden sheets
and empty rows do not count.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.knowledge.parsers.document import ParseError

MAX_ROWS = 100_000
MAX_CELLS = 2_000_000

# About what the chunker's default budget of 200 tokens holds of table text (digits and
# pipes cost more tokens per character than prose).
BLOCK_CHARS = 500


def cell_text(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def markdown_blocks(rows: Sequence[Sequence[str]], block_chars: int = BLOCK_CHARS) -> list[str]:
    """`rows`, the first the header, as Markdown tables of at most about `block_chars`
    characters (at least one row besides the header each), the header repeated atop each."""
    cleaned = [[cell_text(cell) for cell in row] for row in rows]
    cleaned = [row for row in cleaned if any(row)]
    if not cleaned:
        return []
    # Only the columns with text in some row: spacer columns, merged cells' and a stray far
    # cell's padding say nothing.
    used = sorted({index for row in cleaned for index, cell in enumerate(row) if cell})
    if len(cleaned) * len(used) > MAX_CELLS:
        raise ParseError(f"a table of the document is {len(cleaned):,} rows by {len(used):,} columns, "
                         f"more than the {MAX_CELLS:,} cells one document may hold here")
    if len(used) == 1 and len(cleaned) == 1:
        return [cleaned[0][used[0]]]
    lines = [_line([row[index] if index < len(row) else "" for index in used]) for row in cleaned]
    width = len(used)
    header = lines[0] + "\n" + _line(["---"] * width)
    if len(lines) == 1:
        return [header]
    blocks = []
    current: list[str] = []
    size = len(header)
    for line in lines[1:]:
        if current and size + len(line) + 1 > block_chars:
            blocks.append("\n".join([header, *current]))
            current, size = [], len(header)
        current.append(line)
        size += len(line) + 1
    blocks.append("\n".join([header, *current]))
    return blocks


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


class RowBudget:
    """Counts a document's table rows and cells; ParseError past MAX_ROWS or MAX_CELLS."""

    def __init__(self, noun: str) -> None:
        self.noun = noun
        self.rows = 0
        self.cells = 0

    def take(self, cells: int) -> None:
        self.rows += 1
        self.cells += cells
        if self.rows > MAX_ROWS:
            raise ParseError(f"the {self.noun} has more than {MAX_ROWS:,} rows of table data, more "
                             "than one document may hold here; split it into smaller files")
        if self.cells > MAX_CELLS:
            raise ParseError(f"the {self.noun} has more than {MAX_CELLS:,} table cells, more than "
                             "one document may hold here; split it into smaller files")
