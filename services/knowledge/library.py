"""Knowledge's domain logic: knowledge bases, uploads, and the documents'
lives after upload. The ingestion itself runs in ingestion.py."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from meshkit import paging
from meshkit.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from services.knowledge.blobs import BlobStore, TooLarge
from services.knowledge.chunking import ChunkingSettings
from meshkit.paging import Page
from services.knowledge.domain import (
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE,
    METADATA_KEY,
    Document,
    DocumentStatus,
    KnowledgeBase,
    Uploaded,
)
from services.knowledge.indexer import ChunkIndexer, IndexUnavailable
from services.knowledge.parsers import UnsupportedType, resolve_content_type
from services.knowledge.status_board import StatusBoard
from services.knowledge.store import DuplicateName, KnowledgeBaseGone, KnowledgeStore, NewDocument

SHA256 = re.compile(r"^[0-9a-f]{64}$")
KB_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
# Metadata keys become filterable fields in the rag_engine: the same rule as its filters.
MAX_FILENAME = 255
MAX_DISPLAY_NAME = 200
MAX_DESCRIPTION = 2000
INDEX_DOWN = "the index cannot be reached, so nothing was deleted; try again shortly"


@dataclass(frozen=True)
class LibraryConfig:
    max_upload_bytes: int
    default_chunking: ChunkingSettings
    # How often a watcher looks again when no change was announced here.
    watch_poll_seconds: float = 2.0


@dataclass(frozen=True)
class Upload:
    kb_id: str
    filename: str
    content_type: str = ""
    metadata: dict[str, str] | None = None


def _bounded(value: str, limit: int, field: str) -> str:
    value = value.strip()
    if len(value) > limit:
        raise InvalidArgument(f"at most {limit} characters", field=field)
    return value


def _filename(name: str) -> str:
    # Browsers and tools may send a path; only its last part names the file.
    name = PureWindowsPath(PurePosixPath(name.strip()).name).name.strip()
    if not name:
        raise InvalidArgument("is required", field="metadata.filename")
    return _bounded(name, MAX_FILENAME, "metadata.filename")


def _metadata(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidArgument(f"at most {MAX_METADATA_KEYS} keys", field="metadata.metadata")
    for key, value in metadata.items():
        if not METADATA_KEY.match(key):
            raise InvalidArgument(f"key {key!r} must be 1-64 letters, digits, _ . - (not starting with a digit)",
                                  field="metadata.metadata")
        if len(value) > MAX_METADATA_VALUE:
            raise InvalidArgument(f"value of {key!r} is over {MAX_METADATA_VALUE} characters",
                                  field="metadata.metadata")
    return dict(metadata)


def _created(item: Document | KnowledgeBase) -> tuple:
    return item.created_at, item.id


class Library:
    def __init__(self, store: KnowledgeStore, blobs: BlobStore, indexer: ChunkIndexer, board: StatusBoard,
                 config: LibraryConfig, queued: Callable[[], None]) -> None:
        self.store = store
        self.blobs = blobs
        self.indexer = indexer
        self.board = board
        self.config = config
        # Tells the ingestion worker that a document is waiting.
        self.queued = queued

    # Knowledge bases.

    async def create_knowledge_base(self, tenant_id: str, name: str, display_name: str = "",
                                    description: str = "", chunk_max_tokens: int = 0,
                                    chunk_overlap_tokens: int = 0) -> KnowledgeBase:
        name = name.strip()
        if not KB_NAME.match(name):
            raise InvalidArgument("use 1 to 63 lowercase letters, digits, hyphens and underscores, starting and "
                                  "ending with a letter or digit", field="knowledge_base.name")
        defaults = self.config.default_chunking
        try:
            chunking = ChunkingSettings(chunk_max_tokens or defaults.max_tokens,
                                        chunk_overlap_tokens or defaults.overlap_tokens)
        except ValueError as error:
            raise InvalidArgument(str(error), field="knowledge_base.chunking") from None
        try:
            return await self.store.create_knowledge_base(
                tenant_id, name, _bounded(display_name, MAX_DISPLAY_NAME, "knowledge_base.display_name") or name,
                _bounded(description, MAX_DESCRIPTION, "knowledge_base.description"),
                chunking.max_tokens, chunking.overlap_tokens,
            )
        except DuplicateName:
            raise AlreadyExists(f"a knowledge base named {name!r} already exists") from None

    async def knowledge_base(self, tenant_id: str, kb_id: str) -> KnowledgeBase:
        found = await self.store.knowledge_base(tenant_id, kb_id) if kb_id else None
        if found is None:
            raise NotFound(f"knowledge base {kb_id!r} not found")
        return found

    async def list_knowledge_bases(self, tenant_id: str, page_size: int, page_token: str,
                                   name: str = "") -> Page[KnowledgeBase]:
        size = paging.page_size(page_size)
        items = await self.store.list_knowledge_bases(tenant_id, size + 1, paging.decode_token(page_token),
                                                      name.strip())
        return paging.page_of(items, size, _created)

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> None:
        await self.knowledge_base(tenant_id, kb_id)
        # The index first: chunks whose documents are gone would still be found.
        try:
            await self.indexer.delete_knowledge_base(tenant_id, kb_id)
        except IndexUnavailable:
            raise Unavailable(INDEX_DOWN) from None
        blob_keys = await self.store.delete_knowledge_base(tenant_id, kb_id)
        for key in blob_keys or ():
            await self.blobs.delete(key)

    # Documents.

    async def upload(self, tenant_id: str, upload: Upload, content: AsyncIterator[bytes]) -> Uploaded:
        """Keeps the file and queues it for ingestion. The same content uploaded again is the
        document already in the base; if that one failed, it is ingested again (the cause may
        have been fixed since: a parser, a limit, a backend that was down)."""
        filename = _filename(upload.filename)
        try:
            content_type = resolve_content_type(filename, upload.content_type)
        except UnsupportedType as error:
            raise InvalidArgument(str(error), field="metadata.content_type") from None
        metadata = _metadata(upload.metadata or {})
        await self.knowledge_base(tenant_id, upload.kb_id)
        try:
            staged = await self.blobs.stage(content, self.config.max_upload_bytes)
        except TooLarge as error:
            raise InvalidArgument(str(error), field="data") from None
        if staged.size_bytes == 0:
            await self.blobs.discard(staged)
            raise InvalidArgument("the file is empty", field="data")
        # Same content, same key: a duplicate's blob is the one already kept.
        blob_key = f"{tenant_id}/{upload.kb_id}/{staged.sha256}"
        await self.blobs.keep(staged, blob_key)
        try:
            document, duplicate = await self.store.add_document(NewDocument(
                tenant_id, upload.kb_id, filename, content_type, staged.size_bytes, staged.sha256, blob_key,
                metadata, upload_traceparent=_traceparent(),
            ))
        except KnowledgeBaseGone:
            await self.blobs.delete(blob_key)
            raise NotFound(f"knowledge base {upload.kb_id!r} was deleted during the upload") from None
        if not duplicate:
            self.queued()
            return Uploaded(document)
        if document.status == DocumentStatus.FAILED:
            restarted = await self.reparse(tenant_id, document.id)
            return Uploaded(restarted, duplicate=True, retried=True)
        return Uploaded(document, duplicate=True)

    async def document(self, tenant_id: str, document_id: str) -> Document:
        found = await self.store.document(tenant_id, document_id) if document_id else None
        if found is None:
            raise NotFound(f"document {document_id!r} not found")
        return found

    async def list_documents(self, tenant_id: str, kb_id: str, page_size: int, page_token: str,
                             sha256: str = "") -> Page[Document]:
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token)
        sha256 = sha256.strip().lower()
        if sha256 and not SHA256.match(sha256):
            raise InvalidArgument("must be 64 hexadecimal digits", field="sha256")
        await self.knowledge_base(tenant_id, kb_id)
        documents = await self.store.list_documents(tenant_id, kb_id, size + 1, after, sha256)
        return paging.page_of(documents, size, _created)

    async def delete_document(self, tenant_id: str, document_id: str) -> None:
        document = await self.document(tenant_id, document_id)
        try:
            await self.indexer.delete_document(tenant_id, document.kb_id, document_id)
        except IndexUnavailable:
            raise Unavailable(INDEX_DOWN) from None
        blob_key = await self.store.delete_document(tenant_id, document_id)
        if blob_key is not None:
            await self.blobs.delete(blob_key)
        self.board.changed(document_id)

    async def reparse(self, tenant_id: str, document_id: str) -> Document:
        restarted = await self.store.restart_document(tenant_id, document_id) if document_id else None
        if restarted is None:
            raise NotFound(f"document {document_id!r} not found")
        self.board.changed(document_id)
        self.queued()
        return restarted

    async def watch(self, tenant_id: str, document_id: str) -> AsyncIterator[Document]:
        """The document now, then again on every change, until it is indexed
        or failed."""
        seen = None
        with self.board.watching(document_id) as changed:
            while True:
                changed.clear()
                document = await self.store.document(tenant_id, document_id) if document_id else None
                if document is None:
                    raise NotFound(f"document {document_id!r} {'was deleted' if seen else 'not found'}")
                state = (document.status, document.generation, document.error, document.updated_at)
                if state != seen:
                    seen = state
                    yield document
                if document.status.finished:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), self.config.watch_poll_seconds)


def _traceparent() -> str:
    """The current trace context, kept with the document so that its indexing,
    which runs later in the worker, links back to the upload."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")
