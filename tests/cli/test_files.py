"""Which files an upload takes."""

from __future__ import annotations

import hashlib

from sagemesh_cli.files import collect, sha256_of

# What the knowledge service lists (ListSupportedTypes), in part.
EXTENSIONS = frozenset({".md", ".txt", ".pdf"})


def test_folders_are_walked_leaving_out_hidden_files_and_folders_and_setting_aside_what_cannot_go(tmp_path):
    (tmp_path / "docs" / "travel").mkdir(parents=True)
    (tmp_path / "docs" / ".git").mkdir()
    (tmp_path / "docs" / "expenses.md").write_text("# Expenses")
    (tmp_path / "docs" / "travel" / "zurich.TXT").write_text("Zurich")
    (tmp_path / "docs" / ".draft.md").write_text("hidden")
    (tmp_path / "docs" / ".git" / "notes.md").write_text("hidden folder")
    (tmp_path / "docs" / "scan.xyz").write_bytes(b"PK")
    (tmp_path / "docs" / "empty.txt").write_text("")
    (tmp_path / ".named.md").write_text("hidden, but named on the command line")

    taken, left_out = collect([tmp_path / "docs", tmp_path / ".named.md", tmp_path / "docs" / "expenses.md"],
                              EXTENSIONS)

    assert [file.path.relative_to(tmp_path).as_posix() for file in taken] == [
        "docs/expenses.md", "docs/travel/zurich.TXT", ".named.md"]  # the repeated file once
    assert {(item.shown.removeprefix(str(tmp_path) + "/"), item.reason) for item in left_out} == {
        ("docs/empty.txt", "empty: there is nothing to index"), ("docs/scan.xyz", "not a supported type")}
    assert taken[0].size == len("# Expenses")
    assert sha256_of(taken[0].path) == hashlib.sha256(b"# Expenses").hexdigest()
