"""Renewing the stored login: once however many calls wait, and never with a
refresh token another process has spent already."""

from __future__ import annotations

import asyncio
import time

import pytest

from sagemesh_cli.config import ConfigFile, Login
from sagemesh_cli.credentials import Credentials
from sagemesh_cli.errors import ApiError, CliError, ExitCode


class StandInIdentity:
    def __init__(self) -> None:
        self.renewals = 0

    async def refresh(self, refresh_token: str) -> dict:
        self.renewals += 1
        await asyncio.sleep(0.02)  # long enough for the other calls to pile up
        n = self.renewals
        return {"accessToken": f"a{n}", "refreshToken": f"r{n}", "expiresIn": 900}


def stored(tmp_path, expires_at: float) -> ConfigFile:
    config = ConfigFile(tmp_path / "config.toml", login=Login("ann@example.com", "a0", "r0", expires_at))
    config.save()
    return config


async def test_many_calls_refused_at_once_renew_once_and_the_pair_is_saved(tmp_path):
    identity = StandInIdentity()
    credentials = Credentials(stored(tmp_path, time.time() + 900))
    sent: list[str] = []

    async def call(token: str) -> str:
        sent.append(token)
        if token == "a0":
            raise ApiError("access token expired", "UNAUTHENTICATED", "HTTP 401")
        return token

    assert await asyncio.gather(*(credentials.authorized(identity.refresh, call) for _ in range(5))) == ["a1"] * 5
    assert identity.renewals == 1
    assert ConfigFile.load(tmp_path / "config.toml").login.refresh_token == "r1"


async def test_an_expired_token_is_renewed_before_the_call(tmp_path):
    identity = StandInIdentity()
    credentials = Credentials(stored(tmp_path, time.time() + 10))  # within the margin

    assert await credentials.token(identity.refresh) == "a1"


async def test_a_pair_another_process_renewed_is_adopted_not_renewed_again(tmp_path):
    identity = StandInIdentity()
    credentials = Credentials(stored(tmp_path, 0))
    other = ConfigFile.load(tmp_path / "config.toml")
    other.login = Login("ann@example.com", "a-other", "r-other", time.time() + 900)
    other.save()

    assert await credentials.token(identity.refresh) == "a-other"
    assert identity.renewals == 0


async def test_a_refused_refresh_ends_the_stored_session(tmp_path):
    async def refused(refresh_token: str) -> dict:
        raise ApiError("refresh token already used; session revoked", "UNAUTHENTICATED", "HTTP 401")

    credentials = Credentials(stored(tmp_path, 0))
    with pytest.raises(CliError) as raised:
        await credentials.token(refused)
    assert raised.value.exit_code == ExitCode.AUTH and "session has ended" in raised.value.message
    assert ConfigFile.load(tmp_path / "config.toml").login is None
