"""The local blob store: whole files or nothing, under their keys only."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from services.knowledge.blobs import TooLarge
from services.knowledge.blobs_local import STALE_STAGED_SECONDS, LocalBlobStore


async def pieces(*parts: bytes):
    for part in parts:
        yield part


async def test_a_kept_file_reads_back_with_its_size_and_checksum(tmp_path):
    store = LocalBlobStore(tmp_path)
    staged = await store.stage(pieces(b"hello ", b"world"), max_bytes=100)
    assert (staged.size_bytes, staged.sha256) == (11, hashlib.sha256(b"hello world").hexdigest())
    await store.keep(staged, "t/kb/abc")
    assert await store.read("t/kb/abc") == b"hello world"
    assert not any((tmp_path / "tmp").iterdir())
    await store.delete("t/kb/abc")
    await store.delete("t/kb/abc")  # deleting twice is fine
    assert not (tmp_path / "t" / "kb" / "abc").exists()


async def test_a_file_over_the_limit_leaves_nothing_behind(tmp_path):
    store = LocalBlobStore(tmp_path)
    with pytest.raises(TooLarge):
        await store.stage(pieces(b"x" * 60, b"x" * 60), max_bytes=100)
    assert not any((tmp_path / "tmp").iterdir())


async def test_keys_cannot_leave_the_store(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError):
        await store.read("../outside")


def test_stale_staged_files_are_cleared_at_start(tmp_path):
    LocalBlobStore(tmp_path)
    stale, fresh = tmp_path / "tmp" / "upload-old", tmp_path / "tmp" / "upload-new"
    stale.write_bytes(b"from a crash")
    fresh.write_bytes(b"in progress elsewhere")
    old = time.time() - STALE_STAGED_SECONDS - 60
    os.utime(stale, (old, old))
    LocalBlobStore(tmp_path)
    assert not stale.exists() and fresh.exists()
