"""The signed-in caller's tokens, and their renewal.

An access token lives minutes (identity's SAGEMESH_ACCESS_TOKEN_TTL_SECONDS);
the refresh token issued with it buys a new pair from identity's RefreshToken.
Refresh tokens rotate: each is good for one renewal, and presenting a spent
one again revokes the whole session. So one renewal runs at a time, and a call
that finds the token renewed meanwhile uses the new one instead of renewing
again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sagemesh.identity.v1 import identity_pb2

# The access token is renewed before a call when it has less than this left,
# so that it does not expire on the way or during the call.
RENEW_MARGIN_SECONDS = 30.0


@dataclass(frozen=True)
class Tokens:
    access_token: str = ""
    # Empty when the access token came alone: it is used as it is, never renewed.
    refresh_token: str = ""
    # When the access token expires (Unix time); None when not known.
    expires_at: float | None = None

    @classmethod
    def issued(cls, reply: identity_pb2.LoginResponse | identity_pb2.RefreshTokenResponse) -> Tokens:
        return cls(reply.access_token, reply.refresh_token, time.time() + reply.expires_in)

    def expires_within(self, seconds: float) -> bool:
        return self.expires_at is not None and self.expires_at - time.time() < seconds


Refresh = Callable[[identity_pb2.RefreshTokenRequest], Awaitable[identity_pb2.RefreshTokenResponse]]


class Session:
    def __init__(self, tokens: Tokens, refresh: Refresh) -> None:
        self.tokens = tokens
        self._refresh = refresh
        self._renewing = asyncio.Lock()

    @property
    def renewable(self) -> bool:
        return bool(self.tokens.refresh_token)

    async def token(self) -> str:
        """The access token to send now ("" for none): renewed first when it is about to expire."""
        tokens = self.tokens
        if self.renewable and tokens.expires_within(RENEW_MARGIN_SECONDS):
            return await self.renew(tokens.access_token)
        return tokens.access_token

    async def renew(self, stale: str) -> str:
        """An access token to use instead of `stale`: a new one from identity,
        unless another call has renewed it already. Raises identity's
        UNAUTHENTICATED when the session has ended (logged out, revoked, expired)."""
        async with self._renewing:
            if self.tokens.access_token == stale and self.renewable:
                reply = await self._refresh(identity_pb2.RefreshTokenRequest(refresh_token=self.tokens.refresh_token))
                self.tokens = Tokens.issued(reply)
            return self.tokens.access_token
