"""register, login, logout, whoami."""

from __future__ import annotations

import getpass
import sys

import click

from sagemesh_cli.context import Session, json_option, run
from sagemesh_cli.errors import ApiError, CliError, ExitCode

email_option = click.option("--email", help="Your email (default: the last login's; asked for when unknown).")
password_stdin_option = click.option("--password-stdin", is_flag=True,
                                     help="Read the password from stdin's first line instead of asking for it.")


@click.command()
@email_option
@click.option("--display-name", default="", help="Your name as others see it.")
@click.option("--tenant", default="", help="A new tenant's name to create, with you as its admin "
                                           "(default: join the deployment's default tenant).")
@password_stdin_option
@json_option
def register(email: str | None, display_name: str, tenant: str, password_stdin: bool, json_mode: bool) -> None:
    """Create an account (then `sagemesh login`)."""

    async def work(session: Session) -> None:
        address = _email(email, session)
        reply = await session.transport.register(address, _password(password_stdin, confirm=True),
                                                 display_name, tenant)
        user = reply.get("user", {})
        if session.out.json_mode:
            session.out.data(user)
        else:
            session.out.say(f"Registered {user.get('email', address)} in tenant {user.get('tenantName', '')}. "
                            f"Next: sagemesh login --email {address}")

    run(json_mode, work)


@click.command()
@email_option
@click.option("--tenant", default="", help="Your tenant's name (default: the deployment's default tenant).")
@password_stdin_option
@json_option
def login(email: str | None, tenant: str, password_stdin: bool, json_mode: bool) -> None:
    """Log in; the tokens are kept in the config file and renewed as they expire.

    A server named with --url or --grpc becomes the default for later commands.
    """

    async def work(session: Session) -> None:
        address = _email(email, session)
        tokens = await session.transport.login(address, _password(password_stdin), tenant)
        config = session.config
        if session.target_named:
            if session.target.kind == "rest":
                config.url, config.grpc = session.target.address, None
            else:
                config.grpc = session.target.address
        session.credentials.remember(address, tokens)
        user = tokens.get("user", {})
        if session.out.json_mode:
            session.out.data({"user": user, "server": session.transport.describe, "config": str(config.path)})
        else:
            session.out.say(f"Logged in to {session.transport.describe} as {user.get('email', address)} "
                            f"(tenant {user.get('tenantName', '')}); the login is kept in {config.path}.")

    run(json_mode, work)


@click.command()
@json_option
def logout(json_mode: bool) -> None:
    """End the stored login's session and forget its tokens."""

    async def work(session: Session) -> None:
        login = session.config.login
        if login is not None:
            try:
                await session.transport.logout(login.refresh_token)
            except ApiError as error:
                if error.exit_code != ExitCode.AUTH:  # an ended session is what was wanted
                    raise
            session.credentials.forget()
        if session.out.json_mode:
            session.out.data({"loggedOut": login is not None})
        else:
            session.out.say("Logged out." if login else "Not logged in.")

    run(json_mode, work)


@click.command()
@json_option
def whoami(json_mode: bool) -> None:
    """Who the stored login (or --token) is."""

    async def work(session: Session) -> None:
        user = await session.transport.me()
        if session.out.json_mode:
            session.out.data(user)
        else:
            session.out.say(f"{user['email']} ({user.get('displayName', '')}), {user.get('role', '')} "
                            f"in tenant {user.get('tenantName', '')}, at {session.transport.describe}")

    run(json_mode, work)


def _email(given: str | None, session: Session) -> str:
    if given:
        return given
    if session.config.login is not None:
        return session.config.login.email
    if sys.stdin.isatty():
        return click.prompt("Email").strip()
    raise CliError("no email: pass --email", ExitCode.USAGE)


def _password(from_stdin: bool, confirm: bool = False) -> str:
    """The password from stdin's first line, or asked for without echo on a terminal."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        try:
            password = getpass.getpass("Password: ")
            if confirm and getpass.getpass("Repeat the password: ") != password:
                raise CliError("the two passwords differ", ExitCode.USAGE)
        except EOFError:
            password = ""
    else:
        raise CliError("no terminal to ask for the password on: pass --password-stdin and write it to stdin",
                       ExitCode.USAGE)
    if not password:
        raise CliError("no password given", ExitCode.USAGE)
    return password
