"""Sessions ended before their access tokens expire, as every service knows them.

Access tokens are verified where they arrive (meshkit.auth), so without more a token of a
session that logged out, or whose refresh token was reused, keeps working on every service
until it expires. Identity lists the revoked sessions whose tokens may still be unexpired
(ListRevokedSessions); each service keeps that list in memory, follows it every
`revocation_poll_seconds`, and its TokenVerifier refuses those sessions' tokens, cached or not.

Pulling from identity works alike on a laptop and in a cluster, needs no Redis, and keeps
identity's database the one truth; a poll is one indexed query. While identity cannot be
reached the list known so far stays in force (nobody can log out then either), and the
failure is logged once, not at every poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# Each poll asks again for what was revoked this long before the newest revocation it knows:
# a revocation is stamped before its transaction commits, so one stamped a moment earlier can
# become visible after one stamped later. Seen twice, it is simply known twice.
REORDERING_WINDOW_SECONDS = 30.0


@dataclass(frozen=True)
class Revocation:
    session_id: str
    # Seconds since the epoch.
    revoked_at: float
    # When the last access token issued before the revocation expires: forgotten after.
    tokens_expire_at: float


class RevocationSource(Protocol):
    async def revoked_since(self, since: float | None) -> tuple[Sequence[Revocation], bool]:
        """Revocations at or after `since` (every one whose tokens may be unexpired when None),
        oldest first, and whether more follow the last one."""


class RevokedSessions:
    """The revoked sessions whose access tokens may still be unexpired."""

    def __init__(self, timer: Callable[[], float] = time.time) -> None:
        self._expiry: dict[str, float] = {}
        self._timer = timer
        # The newest revocation seen: the next poll asks from shortly before it.
        self.newest: float | None = None

    def __contains__(self, session_id: object) -> bool:
        expiry = self._expiry.get(session_id)  # type: ignore[arg-type]
        return expiry is not None and expiry > self._timer()

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, revocation: Revocation) -> None:
        if revocation.tokens_expire_at <= self._timer():
            return
        self._expiry[revocation.session_id] = revocation.tokens_expire_at
        if self.newest is None or revocation.revoked_at > self.newest:
            self.newest = revocation.revoked_at

    def forget_expired(self) -> None:
        now = self._timer()
        for session_id in [s for s, expiry in self._expiry.items() if expiry <= now]:
            del self._expiry[session_id]

    async def catch_up(self, source: RevocationSource) -> None:
        """Learns what `source` revoked since the last call, page by page."""
        since = None if self.newest is None else self.newest - REORDERING_WINDOW_SECONDS
        while True:
            page, more = await source.revoked_since(since)
            for revocation in page:
                self.add(revocation)
            if not more or not page or page[-1].revoked_at == since:
                break
            since = page[-1].revoked_at
        self.forget_expired()


async def follow(revoked: RevokedSessions, source: RevocationSource, interval: float) -> None:
    """Keeps `revoked` current until cancelled."""
    failing = False
    while True:
        try:
            await revoked.catch_up(source)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if not failing:
                log.warning("cannot learn revoked sessions from identity (%s); the %d known stay in force",
                            error, len(revoked))
            failing = True
        else:
            if failing:
                log.info("revoked sessions followed again")
            failing = False
        await asyncio.sleep(interval)
