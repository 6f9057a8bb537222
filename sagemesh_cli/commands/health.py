"""health: every service's status and version."""

from __future__ import annotations

import click

from sagemesh_cli.context import Session, json_option, run
from sagemesh_cli.errors import ExitCode


@click.command()
@json_option
def health(json_mode: bool) -> None:
    """Show each service's health and version (exit code 6 unless all are serving)."""

    async def work(session: Session) -> ExitCode:
        report = await session.transport.health()
        services = report["services"]
        if session.out.json_mode:
            session.out.data(report)
        else:
            session.out.table(["service", "status", "version"],
                              ([name, state["status"], state.get("version") or "-"]
                               for name, state in services.items()),
                              title=f"Health of {session.transport.describe}")
        serving = all(state["status"] == "SERVING" for state in services.values())
        return ExitCode.OK if serving else ExitCode.UNAVAILABLE

    run(json_mode, work)
