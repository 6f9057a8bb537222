"""status DOCUMENT_ID: where a document is in ingestion."""

from __future__ import annotations

import click

from sagemesh_cli.context import Session, json_option, run
from sagemesh_cli.errors import ExitCode
from sagemesh_cli.uploads import FAILED, follow_status


@click.command()
@click.argument("document_id")
@click.option("--watch", is_flag=True, help="Follow it until it is indexed or failed.")
@json_option
def status(document_id: str, watch: bool, json_mode: bool) -> None:
    """Show a document's ingestion status (exit code 1 when its ingestion failed).

    DOCUMENT_ID: as `sagemesh upload --json` prints it.
    """

    async def work(session: Session) -> ExitCode:
        document = await session.transport.document(document_id)
        if not watch:
            if session.out.json_mode:
                session.out.data(document)
            else:
                _show(session, document["filename"], document)
            return ExitCode.FAILED if document["status"] == FAILED else ExitCode.OK
        last = document
        async for last in follow_status(session.transport, document_id):
            if session.out.json_mode:
                session.out.data(last)
            else:
                _show(session, document["filename"], last)
        return ExitCode.FAILED if last["status"] == FAILED else ExitCode.OK

    run(json_mode, work)


def _show(session: Session, filename: str, status: dict) -> None:
    """One line: file, status, counts and stage timings (a Document or a GetDocumentStatusResponse)."""
    state = status["status"].removeprefix("DOCUMENT_STATUS_").lower()
    line = f"{filename}  {state}"
    if status.get("chunkCount"):
        line += f"  {status['chunkCount']} chunks, {status.get('vectorCount', 0)} vectors"
    timings = status.get("timings") or {}
    if timings.get("totalMs"):
        line += "  (" + ", ".join(f"{stage} {timings.get(f'{stage}Ms', 0):.0f} ms"
                                  for stage in ("parse", "chunk", "index")) + ")"
    if status.get("error"):
        line += f"  {status['error']}"
    session.out.say(line, style="red" if status["status"] == FAILED else None)
