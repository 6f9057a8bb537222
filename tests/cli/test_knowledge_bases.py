"""--kb by name or id."""

from __future__ import annotations

import pytest

from sagemesh_cli import knowledge_bases
from sagemesh_cli.errors import CliError, ExitCode

ID = "0b4d3305-6748-445a-b597-e2cb68c781fd"


class StandIn:
    def __init__(self, bases: list[dict]) -> None:
        self.bases = bases

    async def list_knowledge_bases(self, page_token: str) -> dict:
        # One base per page, to follow next_page_token.
        at = int(page_token or 0)
        more = at + 1 < len(self.bases)
        return {"knowledgeBases": self.bases[at:at + 1], "nextPageToken": str(at + 1) if more else ""}


async def test_a_base_is_found_by_name_or_id_on_any_page():
    transport = StandIn([{"id": "1", "name": "handbook"}, {"id": ID, "name": "reports"}])
    assert [kb["name"] for kb in await knowledge_bases.resolve(transport, ["reports", "1", ID])] == [
        "reports", "handbook", "reports"]


async def test_an_unknown_or_ambiguous_reference_is_a_clear_error():
    transport = StandIn([{"id": "1", "name": ID}, {"id": ID, "name": "reports"}])
    with pytest.raises(CliError) as ambiguous:
        await knowledge_bases.resolve(transport, [ID])
    assert ambiguous.value.exit_code == ExitCode.USAGE
    assert ambiguous.value.message == (f"{ID!r} is the name of one knowledge base and the id of another: "
                                       f"say 1 for the first or reports for the second")
    with pytest.raises(CliError) as unknown:
        await knowledge_bases.resolve(transport, ["nope"])
    assert unknown.value.exit_code == ExitCode.NOT_FOUND
