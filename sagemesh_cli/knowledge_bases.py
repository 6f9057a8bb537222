"""Knowledge bases by name or id, as every `--kb` takes them.

The API takes ids only, so names are looked up in the caller's list. A name
may look like an id (both are lowercase letters, digits and hyphens), hence
the check for a reference that is one base's name and another's id.
"""

from __future__ import annotations

from sagemesh_cli.errors import CliError, ExitCode
from sagemesh_cli.transports.base import Transport, every_page


async def all_knowledge_bases(transport: Transport) -> list[dict]:
    return await every_page(transport.list_knowledge_bases, "knowledgeBases")


async def resolve(transport: Transport, references: list[str]) -> list[dict]:
    """The knowledge bases the references (names or ids) name, in their order."""
    if not references:
        return []
    bases = await all_knowledge_bases(transport)
    return [_one(bases, reference) for reference in references]


def _one(bases: list[dict], reference: str) -> dict:
    matches = [kb for kb in bases if reference in (kb["id"], kb["name"])]
    if not matches:
        raise CliError(f"no knowledge base named {reference!r} (see `sagemesh kb list`)", ExitCode.NOT_FOUND)
    if len(matches) > 1:
        by_name = next(kb for kb in matches if kb["name"] == reference)
        by_id = next(kb for kb in matches if kb["id"] == reference)
        raise CliError(f"{reference!r} is the name of one knowledge base and the id of another: say "
                       f"{by_name['id']} for the first or {by_id['name']} for the second", ExitCode.USAGE)
    return matches[0]
