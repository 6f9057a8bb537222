"""Many files into one knowledge base: a bounded number at once, resumable,
and, when asked, waiting until each is indexed.

Resumable by checksum, with nothing kept locally: the knowledge service
stores every document's SHA-256 and lists it (Document.sha256), so an upload
starts by listing the base and skips every file whose checksum is already
there, unless its ingestion failed: that file is sent again, and the service
ingests it again. A run that was interrupted, or failed halfway, is finished
by running it again. Of two files with the same content in one run, the first
goes. Content that arrives from elsewhere meanwhile is caught by the service,
which answers `duplicate` and keeps the existing document.

A busy mesh (429, Retry-After) is waited out by the transport, every call
holding back together (sagemesh_sdk.busy), so a large folder finishes under
the gateway's rate limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from sagemesh_cli.errors import ApiError
from sagemesh_cli.files import LocalFile, sha256_of
from sagemesh_cli.transports.base import BytesSent, Transport, every_page

INDEXED, FAILED = "DOCUMENT_STATUS_INDEXED", "DOCUMENT_STATUS_FAILED"
# Status streams held open at once while waiting for indexing: they only wait, but
# each is a request through the gateway.
MAX_WATCHES = 16
# Times a broken-off status watch is taken up again before giving up.
WATCH_RESUMES = 5


@dataclass(frozen=True)
class Outcome:
    file: str
    result: Literal["uploaded", "skipped", "failed"]
    reason: str = ""
    document_id: str = ""
    sha256: str = ""
    status: str = ""

    def as_json(self) -> dict:
        """What --json prints: the API's lowerCamelCase, empty fields left out."""
        named = {"file": self.file, "result": self.result, "reason": self.reason,
                 "documentId": self.document_id, "sha256": self.sha256, "status": self.status}
        return {key: value for key, value in named.items() if value}


class UploadView(Protocol):
    """Who hears how the upload goes (progress bars, or JSON lines)."""

    def sending(self, file: LocalFile) -> BytesSent:
        """The file starts going up; the callback hears of every piece sent."""

    def sent(self, file: LocalFile, outcome: Outcome, final: bool) -> None:
        """The file's upload is over: uploaded, skipped or failed. `final` when no wait
        for its indexing follows."""

    def indexed(self, file: LocalFile, outcome: Outcome) -> None:
        """The wait for the file's indexing is over: its last word."""


class Uploader:
    def __init__(self, transport: Transport, kb_id: str, view: UploadView, concurrency: int, wait: bool) -> None:
        self.transport = transport
        self.kb_id = kb_id
        self.view = view
        self.wait = wait
        self.sending = asyncio.Semaphore(concurrency)
        self.watching = asyncio.Semaphore(MAX_WATCHES)

    async def run(self, files: list[LocalFile]) -> list[Outcome]:
        documents = await every_page(lambda token: self.transport.list_documents(self.kb_id, token), "documents")
        in_base = {document["sha256"]: document for document in documents}
        checksums = await asyncio.gather(*(self._checksum(file) for file in files))
        # Decided in the files' order, so that of two files with the same content the first one goes.
        claimed: dict[str, str] = {}
        decided = [_decide(file, checksum, in_base, claimed) for file, checksum in zip(files, checksums)]
        return list(await asyncio.gather(*(self._one(file, checksum, outcome)
                                           for file, checksum, outcome in zip(files, checksums, decided))))

    async def _checksum(self, file: LocalFile) -> str | OSError:
        async with self.sending:
            try:
                return await asyncio.to_thread(sha256_of, file.path)
            except OSError as error:
                return error

    async def _one(self, file: LocalFile, checksum: str | OSError, decided: Outcome | None) -> Outcome:
        if decided is None:
            async with self.sending:
                outcome = await self._send(file, checksum)
        else:
            outcome = decided
        waiting = (self.wait and bool(outcome.document_id) and outcome.result != "failed"
                   and outcome.status != INDEXED)
        self.view.sent(file, outcome, final=not waiting)
        if waiting:
            async with self.watching:
                outcome = await self._indexed(outcome)
            self.view.indexed(file, outcome)
        return outcome

    async def _send(self, file: LocalFile, checksum: str) -> Outcome:
        try:
            reply = await self.transport.upload_document(self.kb_id, file.path, file.path.name,
                                                         self.view.sending(file))
        except ApiError as error:
            return Outcome(file.shown, "failed", error.line().removeprefix("error: "), sha256=checksum)
        except OSError as error:
            return Outcome(file.shown, "failed", _unreadable(error), sha256=checksum)
        if reply.get("retried"):
            return Outcome(file.shown, "uploaded", "its earlier upload had failed: ingesting it again",
                           reply["documentId"], checksum, reply.get("status", ""))
        # Duplicate: the same content arrived since the base was listed (another client's upload).
        return Outcome(file.shown, "skipped" if reply.get("duplicate") else "uploaded",
                       "already in the base" if reply.get("duplicate") else "",
                       reply["documentId"], checksum, reply.get("status", ""))

    async def _indexed(self, outcome: Outcome) -> Outcome:
        status: dict = {}
        try:
            async for status in follow_status(self.transport, outcome.document_id):
                pass
        except ApiError as error:
            return replace(outcome, result="failed", reason=f"while waiting for indexing: {error.message}")
        if status.get("status") == FAILED:
            return replace(outcome, result="failed", status=FAILED,
                           reason=f"indexing failed: {status.get('error') or 'no reason given'}")
        if status.get("status") != INDEXED:
            return replace(outcome, result="failed", reason="the status stream ended before indexing did")
        return replace(outcome, status=INDEXED)


async def follow_status(transport: Transport, document_id: str) -> AsyncIterator[dict]:
    """The document's status now and on every change until it is indexed or failed. A watch
    that breaks off (servers close connections after a while; a deadline) is taken up again:
    it starts with the status as it is then, so nothing is missed."""
    for attempt in range(WATCH_RESUMES + 1):
        try:
            async for event in transport.watch_document_status(document_id):
                yield event["status"]
            return
        except ApiError as error:
            if error.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED") or attempt == WATCH_RESUMES:
                raise
        await asyncio.sleep(1)


def _decide(file: LocalFile, checksum: str | OSError, in_base: dict[str, dict],
            claimed: dict[str, str]) -> Outcome | None:
    """The file's outcome when it is not to be sent; None when it is (and then it claims its checksum)."""
    if isinstance(checksum, OSError):
        return Outcome(file.shown, "failed", _unreadable(checksum))
    # A file whose earlier upload failed is sent again: the service ingests it again.
    if checksum in in_base and in_base[checksum].get("status") != FAILED:
        return Outcome(file.shown, "skipped", "already in the base", in_base[checksum]["id"], checksum,
                       in_base[checksum].get("status", ""))
    if checksum in claimed:
        return Outcome(file.shown, "skipped", f"same content as {claimed[checksum]}", sha256=checksum)
    claimed[checksum] = file.shown
    return None


def _unreadable(error: OSError) -> str:
    return f"cannot read it: {error.strerror or error}"
