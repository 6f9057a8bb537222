"""Which files an upload takes."""

from __future__ import annotations

import hashlib

from sagemesh_cli.files import SUPPORTED_EXTENSIONS, collect, sha256_of
from services.knowledge.parsers import SUPPORTED


def test_the_cli_takes_exactly_the_types_the_knowledge_service_reads():
    assert SUPPORTED_EXTENSIONS == {extension for extensions in SUPPORTED.values() for extension in extensions}


def test_folders_are_walked_leaving_out_hidden_files_and_folders_and_setting_aside_what_cannot_go(tmp_path):
    (tmp_path / "docs" / "travel").mkdir(parents=True)
    (tmp_path / "docs" / ".git").mkdir()
    (tmp_path / "docs" / "expenses.md").write_text("# Expenses")
    (tmp_path / "docs" / "travel" / "zurich.TXT").write_text("Zurich")
    (tmp_path / "docs" / ".draft.md").write_text("hidden")
    (tmp_path / "docs" / ".git" / "notes.md").write_text("hidden folder")
    (tmp_path / "docs" / "scan.docx").write_bytes(b"PK")
    (tmp_path / "docs" / "empty.txt").write_text("")
    (tmp_path / ".named.md").write_text("hidden, but named on the command line")

    taken, left_out = collect([tmp_path / "docs", tmp_path / ".named.md", tmp_path / "docs" / "expenses.md"])

    assert [file.path.relative_to(tmp_path).as_posix() for file in taken] == [
        "docs/expenses.md", "docs/travel/zurich.TXT", ".named.md"]  # the repeated file once
    assert {(item.shown.removeprefix(str(tmp_path) + "/"), item.reason) for item in left_out} == {
        ("docs/empty.txt", "empty"), ("docs/scan.docx", "not a supported type")}
    assert taken[0].size == len("# Expenses")
    assert sha256_of(taken[0].path) == hashlib.sha256(b"# Expenses").hexdigest()
