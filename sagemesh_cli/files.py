"""Which files an upload takes, and their checksums.

Folders are walked recursively, leaving out hidden files and folders (.git,
.DS_Store, …). Only the types the knowledge service parses are taken (it lists
them: ListSupportedTypes); anything else is set aside with its reason, and so
are empty files, so that a folder upload does not fail on a stray file. A file
named on the command line is taken even when hidden.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from sagemesh_cli.errors import CliError, ExitCode


@dataclass(frozen=True)
class LocalFile:
    path: Path
    # As the user would name it: under the folder as given, or as given.
    shown: str
    size: int


@dataclass(frozen=True)
class SetAside:
    shown: str
    reason: str


def collect(paths: list[Path], extensions: frozenset[str]) -> tuple[list[LocalFile], list[SetAside]]:
    """The files to upload under `paths` whose extension is one of `extensions` (".pdf"), and
    those left out with the reason."""
    taken: list[LocalFile] = []
    left_out: list[SetAside] = []
    seen: set[Path] = set()
    for given in paths:
        if given.is_dir():
            found = _walk(given)
        elif given.is_file():
            found = [given]
        else:
            raise CliError(f"no such file or folder: {given}", ExitCode.USAGE)
        for path in found:
            shown = str(path)
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            if path.suffix.lower() not in extensions:
                left_out.append(SetAside(shown, "not a supported type"))
                continue
            size = path.stat().st_size
            if size == 0:
                left_out.append(SetAside(shown, "empty: there is nothing to index"))
                continue
            taken.append(LocalFile(path, shown, size))
    return taken, left_out


def _walk(folder: Path) -> list[Path]:
    files = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        files.extend(Path(root, name) for name in sorted(names) if not name.startswith("."))
    return files


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
