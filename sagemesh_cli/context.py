"""What every command runs with: the options before the command, the server
they point at, the stored login, a transport and the output.

Precedence is flags, then the environment (click reads SAGEMESH_URL,
SAGEMESH_GRPC, SAGEMESH_TOKEN, SAGEMESH_CONFIG for the flags), then the config
file, then the default gateway URL. Between REST and gRPC, the choice made at
the highest of those levels wins: `--url X` beats SAGEMESH_GRPC in the
environment, and either beats the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import click

from sagemesh_cli.config import DEFAULT_URL, ConfigFile, default_path
from sagemesh_cli.credentials import Credentials
from sagemesh_cli.errors import CliError, ExitCode
from sagemesh_cli.output import Output
from sagemesh_cli.transports import Target, open_transport
from sagemesh_cli.transports.base import Transport

# Every command takes it (after the command's name, where people put it).
json_option = click.option("--json", "json_mode", is_flag=True,
                           help="Print JSON for scripts (JSON lines for what streams); no colours or progress.")

_LEVEL = {click.core.ParameterSource.COMMANDLINE: 0, click.core.ParameterSource.ENVIRONMENT: 1}
_FILE_LEVEL, _DEFAULT_LEVEL = 2, 3


@dataclass(frozen=True)
class Options:
    """The options given before the command (`sagemesh --url … kb list`)."""

    url: str | None
    grpc: str | None
    token: str | None
    config_path: Path | None
    # How each of url and grpc was given: 0 a flag, 1 the environment, 3 not at all.
    url_level: int
    grpc_level: int

    @classmethod
    def from_context(cls, ctx: click.Context, url: str | None, grpc: str | None, token: str | None,
                     config_path: Path | None) -> Options:
        def level(name: str, value: str | None) -> int:
            return _LEVEL.get(ctx.get_parameter_source(name), _DEFAULT_LEVEL) if value else _DEFAULT_LEVEL

        return cls(url, grpc, token, config_path, level("url", url), level("grpc", grpc))

    def target(self, config: ConfigFile) -> tuple[Target, bool]:
        """The server to talk to, and whether it was named by a flag (which login then remembers)."""
        # In the file, a gRPC address wins over the URL: it is only ever there on purpose.
        from_file = Target("grpc", config.grpc) if config.grpc else Target("rest", config.url or "")
        candidates = [(self.url_level, Target("rest", self.url or "")),
                      (self.grpc_level, Target("grpc", self.grpc or "")),
                      (_FILE_LEVEL, from_file),
                      (_DEFAULT_LEVEL, Target("rest", DEFAULT_URL))]
        given = [(level, target) for level, target in candidates if target.address]
        level, chosen = min(given, key=lambda candidate: candidate[0])
        if [other for other, _ in given].count(level) > 1:
            where = "flags" if level == 0 else "environment variables"
            raise CliError(f"both a gateway URL and a gRPC address are given as {where}: give one",
                           ExitCode.USAGE)
        return chosen, level == 0


@dataclass
class Session:
    out: Output
    config: ConfigFile
    credentials: Credentials
    transport: Transport
    # Whether the server was named by a flag on this command line.
    target_named: bool
    target: Target


def run(json_mode: bool, work: Callable[[Session], Awaitable[ExitCode | None]]) -> None:
    """Runs a command's coroutine with a session; exits with the code it returns."""
    given: Options = click.get_current_context().find_root().obj
    out = Output(json_mode)
    config = ConfigFile.load(given.config_path or default_path())
    credentials = Credentials(config, given.token)
    target, named = given.target(config)

    async def main() -> ExitCode | None:
        async with open_transport(target, credentials) as transport:
            return await work(Session(out, config, credentials, transport, named, target))

    code = asyncio.run(main())
    if code:
        raise click.exceptions.Exit(int(code))
