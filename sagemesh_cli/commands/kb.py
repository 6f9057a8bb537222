"""kb create | list | delete."""

from __future__ import annotations

import sys

import click

from sagemesh_cli import knowledge_bases
from sagemesh_cli.context import Session, json_option, run
from sagemesh_cli.errors import CliError, ExitCode
from sagemesh_cli.output import id_column


@click.group()
def kb() -> None:
    """Create, list and delete knowledge bases."""


@kb.command()
@click.argument("name")
@click.option("--description", default="", help="What the base holds.")
@json_option
def create(name: str, description: str, json_mode: bool) -> None:
    """Create a knowledge base.

    NAME: 1 to 63 lowercase letters, digits, - and _; unique in your tenant.
    """

    async def work(session: Session) -> None:
        base = await session.transport.create_knowledge_base(name, description)
        if session.out.json_mode:
            session.out.data(base)
        else:
            session.out.say(f"Created knowledge base {base['name']} ({base['id']}).")

    run(json_mode, work)


@kb.command("list")
@json_option
def list_(json_mode: bool) -> None:
    """List your tenant's knowledge bases."""

    async def work(session: Session) -> None:
        bases = await knowledge_bases.all_knowledge_bases(session.transport)
        if session.out.json_mode:
            session.out.data(bases)
        elif not bases:
            session.out.say("No knowledge bases yet: sagemesh kb create NAME")
        else:
            session.out.table(["name", id_column("id"), "documents", "created"],
                              ([base["name"], base["id"], base.get("documentCount", 0),
                                base.get("createdAt", "")[:10]] for base in bases))

    run(json_mode, work)


@kb.command()
@click.argument("reference", metavar="NAME|ID")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def delete(reference: str, yes: bool, json_mode: bool) -> None:
    """Delete a knowledge base with its documents."""

    async def work(session: Session) -> None:
        (base,) = await knowledge_bases.resolve(session.transport, [reference])
        if not yes:
            _confirm(f"Delete knowledge base {base['name']} and its {base.get('documentCount', 0)} document(s)?")
        await session.transport.delete_knowledge_base(base["id"])
        if session.out.json_mode:
            session.out.data({"deleted": base["id"], "name": base["name"]})
        else:
            session.out.say(f"Deleted knowledge base {base['name']} ({base['id']}).")

    run(json_mode, work)


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise CliError("not deleting without confirmation: pass --yes", ExitCode.USAGE)
    if not click.confirm(question, default=False):
        raise CliError("not deleted", ExitCode.FAILED)
