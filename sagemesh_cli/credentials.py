"""The access token that calls carry, and keeping it fresh.

A token given with --token or SAGEMESH_TOKEN is used as it is. Otherwise the
stored login's access token is used and, when it has expired or the server
refuses it, renewed with the refresh token (the new pair is saved at once).

Refresh tokens rotate on every use, and presenting a spent one again revokes
the whole session. So a refresh happens once however many calls are waiting on
it (a lock inside this process), and under a file lock that other `sagemesh`
processes respect: one that finds the file already holds a newer pair adopts
it instead of spending its own, spent, refresh token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from sagemesh_cli.config import ConfigFile, Login
from sagemesh_cli.errors import ApiError, CliError, ExitCode, not_logged_in

try:
    import fcntl
except ImportError:  # Windows: no lock between processes, only within one.
    fcntl = None

T = TypeVar("T")

# Exchanges a refresh token for a login response (accessToken, refreshToken, expiresIn).
RefreshCall = Callable[[str], Awaitable[dict]]


class Credentials:
    def __init__(self, config: ConfigFile, fixed_token: str | None = None) -> None:
        self.config = config
        self.fixed_token = fixed_token
        self._refreshing = asyncio.Lock()

    async def token(self, refresh: RefreshCall) -> str:
        """A token to send now; refreshes the stored one first when it has expired."""
        if self.fixed_token:
            return self.fixed_token
        login = self.config.login
        if login is None:
            raise not_logged_in()
        if login.expired():
            return await self.renew(login.access_token, refresh)
        return login.access_token

    async def authorized(self, refresh: RefreshCall, attempt: Callable[[str], Awaitable[T]]) -> T:
        """`attempt(token)`; made once more with a renewed token when the server
        refuses the first as unauthenticated (expired early, or revoked)."""
        token = await self.token(refresh)
        try:
            return await attempt(token)
        except ApiError as error:
            if error.code != "UNAUTHENTICATED" or self.fixed_token:
                raise
        return await attempt(await self.renew(token, refresh))

    async def renew(self, rejected: str, refresh: RefreshCall) -> str:
        """A token to use instead of `rejected`, which was refused or has expired.
        Raises when there is none: the session has ended."""
        async with self._refreshing:
            login = self.config.login
            if login is None:
                raise not_logged_in()
            if login.access_token != rejected:  # another call renewed it meanwhile
                return login.access_token
            # Held across the refresh call (one short RPC): another process waits for it.
            with _file_lock(self.config):
                on_disk = ConfigFile.load(self.config.path).login
                if on_disk is not None and on_disk.refresh_token != login.refresh_token:
                    self.config.login = on_disk  # another process renewed it meanwhile
                    return on_disk.access_token
                try:
                    tokens = await refresh(login.refresh_token)
                except ApiError as error:
                    if error.exit_code != ExitCode.AUTH:
                        raise
                    self.forget()
                    raise CliError("your session has ended: run `sagemesh login` again",
                                   ExitCode.AUTH, error.origin) from None
                self.config.login = Login.from_tokens(login.email, tokens)
                self.config.save()
        return self.config.login.access_token

    def remember(self, email: str, tokens: dict) -> None:
        self.config.login = Login.from_tokens(email, tokens)
        self.config.save()

    def forget(self) -> None:
        self.config.login = None
        self.config.save()


@contextlib.contextmanager
def _file_lock(config: ConfigFile) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    config.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(config.path.with_name(config.path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
