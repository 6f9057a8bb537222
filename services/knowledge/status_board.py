"""Wakes whoever watches a document when its status changes.

Changes this process makes are announced at once; watchers also look again
every few seconds, which catches changes made by other replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class StatusBoard:
    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Event]] = {}

    def changed(self, document_id: str) -> None:
        for event in self._watchers.get(document_id, ()):
            event.set()

    @contextmanager
    def watching(self, document_id: str) -> Iterator[asyncio.Event]:
        """An event set on each change of the document. Clear it before
        reading the status, so no change between read and wait is missed."""
        event = asyncio.Event()
        self._watchers.setdefault(document_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers[document_id]
            watchers.discard(event)
            if not watchers:
                del self._watchers[document_id]
