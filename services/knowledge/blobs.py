"""Where uploaded files are kept. blobs_local.py keeps them in a directory;
an object store (S3, GCS) implements the same interface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is larger than the limit of {limit:,} bytes")
        self.limit = limit


@dataclass(frozen=True)
class StagedBlob:
    """An upload written in full but not yet kept: `keep` makes it durable
    under its key, `discard` drops it."""

    size_bytes: int
    sha256: str
    handle: object


class BlobStore(Protocol):
    async def stage(self, pieces: AsyncIterator[bytes], max_bytes: int) -> StagedBlob:
        """Writes the pieces aside, hashing them as they come. Raises TooLarge
        (leaving nothing behind) once more than `max_bytes` arrive."""

    async def keep(self, staged: StagedBlob, key: str) -> None:
        """Makes the staged file durable under `key`, replacing what was there."""

    async def discard(self, staged: StagedBlob) -> None: ...

    async def read(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None:
        """Deletes the blob if it exists."""
