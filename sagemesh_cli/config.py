"""The config file: the server to talk to and the stored login.

One TOML file, `config.toml` in the user's config directory (click's
get_app_dir: ~/.config/sagemesh on Linux, honouring XDG_CONFIG_HOME), or
wherever SAGEMESH_CONFIG points. `sagemesh login` writes it; a user may edit
`url` and `grpc` by hand. It holds tokens, so it is written 0600, atomically
(a refresh rotates the refresh token: a torn file would lose the session).

    url = "http://127.0.0.1:8080"      # the gateway (REST), the default transport
    grpc = "127.0.0.1:50051"           # optional: talk gRPC instead

    [login]
    email = "ann@example.com"
    access_token = "eyJ…"
    refresh_token = "…"
    expires_at = 1763910000.0          # when the access token expires (Unix time)
"""

from __future__ import annotations

import os
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import tomli_w

from sagemesh_cli.errors import CliError, ExitCode

CONFIG_ENV = "SAGEMESH_CONFIG"
DEFAULT_URL = "http://127.0.0.1:8080"

# An access token this close to its expiry is refreshed before use, so that it
# does not expire in flight (a long upload) or on a clock a little behind.
EXPIRY_MARGIN_SECONDS = 30


def default_path() -> Path:
    return Path(click.get_app_dir("sagemesh")) / "config.toml"


@dataclass
class Login:
    email: str
    access_token: str
    refresh_token: str
    expires_at: float

    @classmethod
    def from_tokens(cls, email: str, tokens: dict) -> Login:
        """From a login or refresh response (proto3 JSON: accessToken, refreshToken, expiresIn)."""
        return cls(email, tokens["accessToken"], tokens["refreshToken"],
                   time.time() + int(tokens.get("expiresIn") or 0))

    def expired(self) -> bool:
        return time.time() >= self.expires_at - EXPIRY_MARGIN_SECONDS


@dataclass
class ConfigFile:
    path: Path
    url: str | None = None
    grpc: str | None = None
    login: Login | None = None

    @classmethod
    def load(cls, path: Path) -> ConfigFile:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise CliError(f"cannot read the config file {path}: {error}", ExitCode.USAGE) from None
        try:
            login = Login(**data["login"]) if "login" in data else None
        except TypeError:
            raise CliError(f"the [login] section of {path} is not one `sagemesh login` wrote; "
                           "log in again", ExitCode.AUTH) from None
        return cls(path, data.get("url"), data.get("grpc"), login)

    def save(self) -> None:
        data: dict = {key: value for key, value in (("url", self.url), ("grpc", self.grpc)) if value}
        if self.login is not None:
            data["login"] = asdict(self.login)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp creates the file 0600, so the tokens are never readable by others, not even briefly.
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".config-", suffix=".toml")
            try:
                with os.fdopen(handle, "wb") as file:
                    tomli_w.dump(data, file)
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            raise CliError(f"cannot write the config file {self.path}: {error}") from None
