"""Where results go: text and tables for people (Rich), or JSON for scripts.

With --json, stdout carries nothing but JSON: one document per command, or one
per line (JSON lines) for what streams, and no colours or progress bars. Text
mode leaves colour to Rich, which turns it off when stdout is not a terminal or
NO_COLOR is set. Errors always go to stderr, as one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table


# A column of ids: never shortened, since ids are there to be copied.
def id_column(header: str) -> Column:
    return Column(header, no_wrap=True, min_width=36)


class Output:
    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        # soft_wrap: lines are left to the terminal to wrap, so that ids and paths stay whole.
        self.console = Console(highlight=False, soft_wrap=True)
        self.stderr = Console(stderr=True, highlight=False)

    def data(self, value: object) -> None:
        """One JSON document (a line of its own, so that streams are JSON lines)."""
        print(json.dumps(value, ensure_ascii=False), flush=True)

    def say(self, text: str, style: str | None = None) -> None:
        """A line for people; nothing in JSON mode. `text` is printed as it is, never as markup."""
        if not self.json_mode:
            self.console.print(escape(text), style=style)

    def write(self, text: str) -> None:
        """Text as it arrives (a streamed answer): no newline, no markup, shown at once."""
        self.console.file.write(text)
        self.console.file.flush()

    def table(self, columns: Iterable[str | Column], rows: Iterable[Iterable[object]],
              title: str | None = None) -> None:
        table = Table(*columns, title=title, title_justify="left")
        for row in rows:
            table.add_row(*(escape(str(cell)) for cell in row))
        self.console.print(table)
