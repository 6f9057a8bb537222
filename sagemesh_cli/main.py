"""`sagemesh`: the command line, and the one place failures become an exit code.

Every failure ends here as one line on stderr and an exit code from
errors.ExitCode; never a traceback (SAGEMESH_DEBUG=1 shows it, for bug reports).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from sagemesh_cli.commands import agent, ask, auth, documents, health, kb, upload
from sagemesh_cli.config import CONFIG_ENV
from sagemesh_cli.context import Options
from sagemesh_cli.errors import EXIT_CODES_HELP, CliError, ExitCode


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="SAGEMESH_URL", show_envvar=True,
              help="The gateway's URL, for REST (default: the config file's, else http://127.0.0.1:8080).")
@click.option("--grpc", envvar="SAGEMESH_GRPC", show_envvar=True, metavar="ADDRESS",
              help="Talk gRPC to the services instead: one address for all of them; or "
                   "identity=HOST:PORT,knowledge=HOST:PORT,… per service; or `default` for "
                   "SAGEMESH_<SERVICE>_ADDR, else `make run`'s ports.")
@click.option("--token", envvar="SAGEMESH_TOKEN", show_envvar=True,
              help="An access token to use instead of the stored login.")
@click.option("--config", envvar=CONFIG_ENV, show_envvar=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The config file (default: config.toml in the user's config directory).")
@click.version_option(package_name="sagemesh", prog_name="sagemesh")
@click.pass_context
def cli(ctx: click.Context, url: str | None, grpc: str | None, token: str | None, config: Path | None) -> None:
    """Upload documents to sagemesh, ask questions with cited sources, and run agent tasks.

    Log in once (`sagemesh login`); the server and the login are kept in the config file.
    Every command takes --json for scripts.
    """
    ctx.obj = Options.from_context(ctx, url, grpc, token, config)


for command in (auth.register, auth.login, auth.logout, auth.whoami, kb.kb, upload.upload, documents.status,
                ask.ask, agent.agent, health.health):
    cli.add_command(command)


# click 8.2 raises it for a group given no command (8.1 printed the help itself).
_NO_ARGUMENTS = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main() -> None:
    sys.exit(run(sys.argv[1:]))


def run(args: list[str]) -> int:
    """The command line `args`, run; returns the exit code."""
    try:
        # standalone_mode=False: click's own errors come here instead of exiting.
        return int(cli.main(args=args, prog_name="sagemesh", standalone_mode=False) or 0)
    except CliError as error:
        return _fail(error.line(), error.exit_code)
    except _NO_ARGUMENTS as error:  # `sagemesh` or `sagemesh kb` alone: what can follow
        print(error.ctx.get_help())
        return ExitCode.OK
    except click.exceptions.Abort:  # Ctrl-C or end of input at a prompt
        return _fail("error: interrupted", ExitCode.INTERRUPTED)
    except click.UsageError as error:
        hint = f"; see `{error.ctx.command_path} --help`" if error.ctx else ""
        return _fail(f"error: {error.format_message()}{hint}", ExitCode.USAGE)
    except click.ClickException as error:
        return _fail(f"error: {error.format_message()}", error.exit_code)
    except KeyboardInterrupt:
        return _fail("error: interrupted", ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # stdout went away (`sagemesh kb list --json | head -1`): nothing to say, and nowhere to say it.
        # Pointing stdout at /dev/null spares the interpreter's own complaint when it flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.FAILED
    except Exception as error:
        if os.environ.get("SAGEMESH_DEBUG"):
            raise
        return _fail(f"error: unexpected failure: {type(error).__name__}: {error} "
                     "(SAGEMESH_DEBUG=1 shows where)", ExitCode.FAILED)


def _fail(line: str, code: int) -> int:
    print(line.replace("\n", " "), file=sys.stderr, flush=True)
    return code
