"""What goes wrong is one line on stderr and an exit code that says what kind
of wrong, never a traceback (the Cli runner checks that for every command);
and the stored login renews itself until its session ends."""

from __future__ import annotations

import shutil
import tomllib

from scripts.mesh_process import free_port
from tests.cli.conftest import PASSWORD, Cli, sign_up, transport_env


def test_a_wrong_password_is_an_authentication_error(cli):
    sign_up(cli, f"wrong-{cli.transport}@example.com")
    origin = "HTTP 401" if cli.transport == "rest" else "UNAUTHENTICATED"
    assert cli("login", "--email", f"wrong-{cli.transport}@example.com", "--password-stdin",
               input="not the password").failed_with(4, origin)
    assert cli("login", "--email", "x@example.com").failed_with(2, "--password-stdin")  # no terminal to ask on


def test_not_found_usage_and_conflict_errors(cli):
    sign_up(cli, f"errors-{cli.transport}@example.com")
    assert cli("upload", str(cli.home), "--kb", "no-such-base").failed_with(3, "no-such-base", "kb list")
    assert cli("status", "7ffb00b3-e0a9-49a4-9262-afc25733bfd5").failed_with(3, "not found")
    assert cli("kb", "create", "Not A Name").failed_with(2, "lowercase")
    assert cli("upload", "missing.md", "--kb", "x").failed_with(2, "no such file or folder: missing.md")
    assert cli("upload", "--kb", "x").failed_with(2, "Missing argument", "sagemesh upload --help")
    assert cli("frobnicate").failed_with(2, "No such command")
    assert cli("agent", "1 + 1", "--mode", "sideways").failed_with(2, "sideways")


def test_an_unreachable_server_says_where_it_looked(mesh, tmp_path):
    port = free_port()
    over_rest = Cli(tmp_path, {"SAGEMESH_URL": f"http://127.0.0.1:{port}"})
    assert over_rest("--token", "x", "kb", "list").failed_with(
        6, f"cannot reach the gateway at http://127.0.0.1:{port}: is `make run` running?")
    over_grpc = Cli(tmp_path, {"SAGEMESH_GRPC": f"127.0.0.1:{port}"})
    assert over_grpc("--token", "x", "kb", "list").failed_with(
        6, f"cannot reach the knowledge service at 127.0.0.1:{port}", "UNAVAILABLE")
    assert over_rest("--grpc", "identity=", "health").failed_with(2, "SERVICE=HOST:PORT")
    assert over_rest("--grpc", "search=127.0.0.1:1", "health").failed_with(2, "unknown services")


def test_not_logged_in_and_a_refused_token(cli):
    assert cli("kb", "list").failed_with(4, "not logged in: run `sagemesh login`")
    assert cli("--token", "not-a-token", "kb", "list").failed_with(4)
    sign_up(cli, f"token-{cli.transport}@example.com")
    token = tomllib.loads(cli.config.read_text())["login"]["access_token"]
    anywhere = Cli(cli.home / "elsewhere", {**transport_env_of(cli), "SAGEMESH_TOKEN": token})
    assert anywhere("whoami", "--json").json()["email"] == f"token-{cli.transport}@example.com"


def transport_env_of(cli: Cli) -> dict[str, str]:
    return {key: value for key, value in cli.env.items() if key in ("SAGEMESH_URL", "SAGEMESH_GRPC")}


def test_an_expired_access_token_is_renewed_and_saved_until_the_session_ends(cli):
    sign_up(cli, f"renew-{cli.transport}@example.com")

    def expire_access_token() -> str:
        text = cli.config.read_text()
        stored = tomllib.loads(text)["login"]
        cli.config.write_text(text.replace(f"expires_at = {stored['expires_at']}", "expires_at = 0.0"))
        return stored["refresh_token"]

    spent = expire_access_token()
    assert cli("whoami").code == 0
    renewed = tomllib.loads(cli.config.read_text())["login"]
    assert renewed["refresh_token"] != spent and renewed["expires_at"] > 0

    # The session ends elsewhere (a logout with a copy of the login): the next renewal cannot happen.
    shutil.copy(cli.config, cli.home / "copy.toml")
    assert cli("logout", env={"SAGEMESH_CONFIG": str(cli.home / "copy.toml")}).code == 0
    expire_access_token()
    assert cli("kb", "list").failed_with(4, "your session has ended: run `sagemesh login` again")
    assert "login" not in tomllib.loads(cli.config.read_text())
    assert cli("login", "--password-stdin", input=PASSWORD).failed_with(2, "--email")  # forgotten with it


def test_login_remembers_the_server_it_was_given(mesh, tmp_path):
    cli = Cli(tmp_path, {})
    sign_up_at = ["--url", mesh.url]
    assert cli(*sign_up_at, "register", "--email", "kept@example.com", "--password-stdin", input=PASSWORD).code == 0
    assert cli(*sign_up_at, "login", "--email", "kept@example.com", "--password-stdin", input=PASSWORD).code == 0
    assert tomllib.loads(cli.config.read_text())["url"] == mesh.url
    assert cli("whoami").stdout.endswith(f"at the gateway at {mesh.url}\n")
    grpc = transport_env(mesh, "grpc")["SAGEMESH_GRPC"]
    assert "over gRPC" in cli("--grpc", grpc, "whoami").stdout  # a flag wins over the file
