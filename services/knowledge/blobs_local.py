"""BlobStore on a local directory (the default; a volume in Kubernetes).

A file is staged in the directory's tmp/ and renamed into place after an
fsync, so a crash leaves either the whole file under its key or nothing (and
a staged file, which the next start clears away once it is a day old).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from services.knowledge.blobs import StagedBlob, TooLarge

# Older staged files belong to no upload in progress, on any replica.
STALE_STAGED_SECONDS = 24 * 3600


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging = root / "tmp"
        self.staging.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - STALE_STAGED_SECONDS
        for leftover in self.staging.iterdir():
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"blob key {key!r} leaves the store")
        return path

    async def stage(self, pieces: AsyncIterator[bytes], max_bytes: int) -> StagedBlob:
        digest, size = hashlib.sha256(), 0
        descriptor, name = tempfile.mkstemp(dir=self.staging, prefix="upload-")
        try:
            with os.fdopen(descriptor, "wb") as file:
                async for piece in pieces:
                    size += len(piece)
                    if size > max_bytes:
                        raise TooLarge(max_bytes)
                    digest.update(piece)
                    file.write(piece)
                file.flush()
                await asyncio.to_thread(os.fsync, file.fileno())
        except BaseException:
            os.unlink(name)
            raise
        return StagedBlob(size, digest.hexdigest(), name)

    async def keep(self, staged: StagedBlob, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.handle, target)
        await asyncio.to_thread(_fsync_directory, target.parent)

    async def discard(self, staged: StagedBlob) -> None:
        Path(staged.handle).unlink(missing_ok=True)

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    """Makes a rename into the directory survive a power cut."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
