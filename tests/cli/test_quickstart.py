"""The README's command-line quick-start, exactly as written there, against the
mesh as `make run` starts it: the password typed at the prompts of a terminal."""

from __future__ import annotations

import shlex
from pathlib import Path

from tests.cli.conftest import PASSWORD, Cli

README = Path(__file__).resolve().parents[2] / "README.md"

QUICK_START = [
    "sagemesh register --email ann@example.com",
    "sagemesh login --email ann@example.com",
    "sagemesh kb create handbook",
    "sagemesh upload handbook/ --kb handbook --wait",
    'sagemesh ask "How much are meals reimbursed per day?" --kb handbook',
]


def readme_commands() -> list[str]:
    """The commands of the README's command-line quick-start block, comments left out."""
    after = README.read_text(encoding="utf-8").split("The same with the [command line]", 1)[1]
    block = after.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].rstrip() for line in block.splitlines() if line.strip()]


def test_the_readme_shows_the_commands_tested_here():
    assert readme_commands() == QUICK_START


def test_the_quick_start_works_end_to_end(mesh, tmp_path):
    cli = Cli(tmp_path, {"SAGEMESH_URL": mesh.url})  # `make run`'s gateway would be the default
    (tmp_path / "handbook" / "travel").mkdir(parents=True)
    (tmp_path / "handbook" / "expenses.md").write_text(
        "# Expenses\n\n## Meals\n\nMeals on business trips are reimbursed up to 45 euros a day.\n")
    (tmp_path / "handbook" / "travel" / "zurich.md").write_text(
        "# Travel in Zurich\n\n## Hotels\n\nThe nightly hotel budget in Zurich is 240 francs.\n")
    register, login, create, upload, ask = (shlex.split(command)[1:] for command in QUICK_START)

    registered = cli.in_terminal(*register, answers=[PASSWORD, PASSWORD])
    assert registered.code == 0 and "Registered ann@example.com" in registered.stdout, registered
    logged_in = cli.in_terminal(*login, answers=[PASSWORD])
    assert logged_in.code == 0 and "as ann@example.com" in logged_in.stdout, logged_in
    assert cli(*create).code == 0

    uploaded = cli(*upload)
    assert uploaded.code == 0, uploaded
    assert {"indexed  handbook/expenses.md", "indexed  handbook/travel/zurich.md"} <= set(uploaded.stdout.splitlines())
    assert uploaded.stdout.splitlines()[-1] == "2 uploaded, 0 skipped, 0 failed (knowledge base handbook)."

    asked = cli(*ask)
    assert asked.code == 0, asked
    answer, title, *table = asked.stdout.splitlines()
    assert answer == "Meals on business trips are reimbursed up to 45 euros a day. [1]"
    assert title == "Sources"
    assert [cell.strip() for cell in table[3].split("│")[1:4]] == ["[1]", "Expenses", "expenses.md"]
