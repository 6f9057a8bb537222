"""Every command against the whole mesh, over REST through the gateway and over
gRPC to the services: what people read, and what --json gives scripts."""

from __future__ import annotations

import re

import stat
import tomllib

from tests.cli.conftest import PASSWORD, Cli

EXPENSES = "# Expenses\n\n## Meals\n\nMeals on business trips are reimbursed up to 45 euros a day.\n"
ZURICH = "# Zurich\n\n## Hotels\n\nThe nightly hotel budget in Zurich is 240 francs.\n"


def a_folder(cli: Cli):
    """Nested, with a copy, a hidden file and folder, an unsupported type and an empty file."""
    docs = cli.home / "docs"
    (docs / "travel").mkdir(parents=True)
    (docs / ".git").mkdir()
    (docs / "expenses.md").write_text(EXPENSES)
    (docs / "travel" / "zurich.md").write_text(ZURICH)
    (docs / "travel" / "zurich_2.md").write_text(ZURICH)
    (docs / ".draft.md").write_text("A draft nobody should see.")
    (docs / ".git" / "notes.md").write_text("Not a document either.")
    (docs / "scan.key").write_bytes(b"PK\x03\x04")
    (docs / "empty.txt").write_text("")
    return docs


def test_log_in_create_a_base_upload_a_folder_ask_and_run_the_agent(cli):
    email = f"{cli.transport}-user@example.com"

    # Register and log in; the login is kept in the config file, for its owner only.
    registered = cli("register", "--email", email, "--display-name", "Ann", "--password-stdin", "--json",
                     input=PASSWORD)
    assert registered.code == 0 and registered.json()["email"] == email
    logged_in = cli("login", "--email", email, "--password-stdin", "--json", input=PASSWORD + "\n")
    assert logged_in.code == 0 and logged_in.json()["user"]["email"] == email
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert tomllib.loads(cli.config.read_text())["login"]["refresh_token"]
    assert cli("whoami", "--json").json()["displayName"] == "Ann"

    # Knowledge bases.
    kb = f"handbook-{cli.transport}"
    created = cli("kb", "create", kb, "--json").json()
    assert created["name"] == kb and created["id"]
    assert cli("kb", "create", kb).failed_with(5, "already exists")
    listed = cli("kb", "list")
    assert listed.code == 0 and kb in listed.stdout and created["id"] in listed.stdout
    assert [base["id"] for base in cli("kb", "list", "--json").json() if base["name"] == kb] == [created["id"]]

    # A folder, waiting until it is indexed.
    a_folder(cli)
    uploaded = cli("upload", "docs", "--kb", kb, "--wait")
    assert uploaded.code == 0, uploaded
    lines = uploaded.stdout.splitlines()
    for path in ("docs/expenses.md", "docs/travel/zurich.md"):
        assert f"uploaded {path}" in lines and f"indexed  {path}" in lines
    assert "skipped  docs/travel/zurich_2.md  same content as docs/travel/zurich.md" in lines
    assert "skipped  docs/scan.key  not a supported type" in lines
    assert "skipped  docs/empty.txt  empty: there is nothing to index" in lines
    assert "draft" not in uploaded.stdout and ".git" not in uploaded.stdout
    assert lines[-1] == f"2 uploaded, 3 skipped, 0 failed (knowledge base {kb})."

    # Again, by id this time: everything is in the base already.
    again = cli("upload", "docs", "--kb", created["id"], "--json", "--concurrency", "2")
    assert again.code == 0
    *files, summary = again.json_lines()
    assert summary == {"summary": {"uploaded": 0, "skipped": 5, "failed": 0}}
    by_file = {line["file"]: line for line in files}
    assert {by_file[path]["reason"] for path in ("docs/expenses.md", "docs/travel/zurich.md",
                                                 "docs/travel/zurich_2.md")} == {"already in the base"}
    expenses = by_file["docs/expenses.md"]["documentId"]
    assert by_file["docs/expenses.md"]["status"] == "DOCUMENT_STATUS_INDEXED"

    # A document's status.
    status = cli("status", expenses)
    assert status.code == 0 and status.stdout.startswith("expenses.md  indexed  1 chunks")
    assert cli("status", expenses, "--json").json()["sha256"] == by_file["docs/expenses.md"]["sha256"]
    assert cli("status", expenses, "--watch", "--json").json_lines()[-1]["status"] == "DOCUMENT_STATUS_INDEXED"

    # A question: the answer, then its sources.
    asked = cli("ask", "How much are meals reimbursed per day?", "--kb", kb)
    assert asked.code == 0
    answer, *table = asked.stdout.splitlines()
    assert "45 euros" in answer and "[1]" in answer
    assert table[0] == "Sources"
    first_row = table[4]  # after the title, the top border, the header and its rule
    assert all(text in first_row for text in ("[1]", "Expenses", "expenses.md", "45 euros")), first_row
    *deltas, completed = cli("ask", "How much are meals reimbursed per day?", "--kb", kb, "--json").json_lines()
    assert "".join(delta["answerDelta"] for delta in deltas) == completed["completed"]["answer"]
    assert completed["completed"]["sources"][0]["documentId"] == expenses
    # The table holds the sources the answer cites; --json has every one, flagged.
    sources = completed["completed"]["sources"]
    assert sources[0]["cited"] and len(sources) > 1 and not all(s.get("cited") for s in sources)
    rows = [line for line in table if re.search(r"\[\d+\]", line)]
    assert len(rows) == sum(1 for s in sources if s.get("cited")), asked.stdout
    assert "the answer does not cite" in asked.stdout

    # In a conversation, whose follow-ups lean on the turns before.
    first = cli("ask", "How much are meals reimbursed per day?", "--kb", kb, "--conversation", "new", "--json")
    conversation = first.json_lines()[0]["conversation"]["id"]
    follow_up = cli("ask", "And the hotel budget in Zurich?", "--conversation", conversation)
    assert follow_up.code == 0 and "240 francs" in follow_up.stdout and "zurich.md" in follow_up.stdout
    assert f"continue with --conversation {conversation}" in follow_up.stdout

    # The agent: its plan and steps as they happen, then the answer.
    run = cli("agent", "What is 15% of 80?")
    assert run.code == 0
    assert run.stdout.splitlines()[:2] == ["Plan:", "  1. compute 15% of 80  [calculator]"]
    assert '→ calculator {"expression": "15% of 80"}' in run.stdout and "Answer: 15% of 80 = 12" in run.stdout
    events = cli("agent", "What is 15% of 80?", "--kb", kb, "--json").json_lines()
    assert "plan" in events[0] and any("step" in event for event in events)
    assert events[-1]["completed"]["status"] == "RUN_STATUS_COMPLETED"
    assert cli("agent", "Write a haiku about the office").failed_with(1, "the run failed", "language model")

    # Deleting a base asks first; with no terminal to ask on, it wants --yes.
    assert cli("kb", "delete", kb).failed_with(2, "--yes")
    assert cli("kb", "delete", kb, "--yes").code == 0
    assert kb not in [base["name"] for base in cli("kb", "list", "--json").json()]
    assert cli("ask", "Anything?", "--kb", kb).failed_with(3, kb)

    # Logging out ends the session.
    assert cli("logout").stdout == "Logged out.\n"
    assert cli("kb", "list").failed_with(4, "not logged in")


def test_health_names_every_service_and_its_version(cli):
    report = cli("health", "--json")
    assert report.code == 0
    services = report.json()["services"]
    expected = {"identity", "conversation", "knowledge", "rag_engine", "agent"}
    # Through the gateway, the gateway itself too.
    assert set(services) == (expected | {"gateway"} if cli.transport == "rest" else expected)
    assert all(state["status"] == "SERVING" and state["version"] for state in services.values()), services
    table = cli("health")
    assert table.code == 0 and all(f"│ {name}" in table.stdout for name in expected)
