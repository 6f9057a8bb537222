"""ask "question": the answer as it streams, then the sources it cites.

A one-off question goes to the rag_engine's StreamQuery. With --conversation
it is a message in a conversation (StreamMessage), which keeps the turns, so
that a follow-up can lean on them ("and in Zurich?").
"""

from __future__ import annotations

import click

from sagemesh_cli import knowledge_bases
from sagemesh_cli.context import Session, json_option, run

SNIPPET_CHARS = 90

kb_option = click.option("--kb", "kb", multiple=True, metavar="NAME|ID",
                         help="A knowledge base to search; repeat for several (default: all of yours).")


@click.command()
@click.argument("question")
@kb_option
@click.option("--conversation", metavar="ID|new",
              help="Ask in a conversation, which remembers the earlier turns; `new` starts one.")
@json_option
def ask(question: str, kb: tuple[str, ...], conversation: str | None, json_mode: bool) -> None:
    """Ask a question: the answer streams, then the sources it cites."""

    async def work(session: Session) -> None:
        kb_ids = [base["id"] for base in await knowledge_bases.resolve(session.transport, list(kb))]
        if conversation == "new":
            created = await session.transport.create_conversation(kb_ids, title=question[:80])
            conversation_id = created["id"]
            if session.out.json_mode:
                session.out.data({"conversation": created})
        else:
            conversation_id = conversation
        if conversation_id:
            events = session.transport.stream_message(conversation_id, question, kb_ids)
        else:
            events = session.transport.stream_query(question, kb_ids)

        answer: dict = {}
        async for event in events:
            if session.out.json_mode:
                session.out.data(event)
            elif "answerDelta" in event:
                session.out.write(event["answerDelta"])
            # The final message: a conversation's stored answer, or the rag_engine's response.
            answer = event.get("message") or event.get("completed") or answer
        if session.out.json_mode:
            return
        session.out.write("\n")
        if answer.get("sources"):
            await _show_sources(session, answer["sources"])
        if conversation_id:
            session.out.say(f"conversation {conversation_id}: continue with --conversation {conversation_id}",
                            style="dim")

    run(json_mode, work)


async def _show_sources(session: Session, sources: list[dict]) -> None:
    """The sources the answer cites, by their [n]; all of them when it cites none."""
    numbered = list(enumerate(sources, start=1))
    shown = [(number, source) for number, source in numbered if source.get("cited")] or numbered
    rows = []
    for number, source in shown:
        snippet = " ".join(source.get("content", "").split())
        if len(snippet) > SNIPPET_CHARS:
            snippet = snippet[:SNIPPET_CHARS - 1] + "…"
        # Sources name their file and where in it; one indexed before they did shows its id.
        rows.append([f"[{number}]", source.get("title") or "", source.get("filename") or source["documentId"],
                     source.get("location") or "", snippet])
    session.out.table(["", "title", "document", "where", "snippet"], rows, title="Sources")
    if uncited := len(sources) - len(shown):
        session.out.say(f"{uncited} more source{'s' if uncited > 1 else ''} the answer does not cite "
                        "(--json lists every one)", style="dim")
