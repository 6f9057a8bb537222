"""meshkit.revocations: what a service knows of ended sessions, and how it keeps up."""

from __future__ import annotations

import asyncio
import time

from meshkit.revocations import REORDERING_WINDOW_SECONDS, Revocation, RevokedSessions, follow


class ListedRevocations:
    """A RevocationSource over a list, in pages of `page` as identity's RPC answers."""

    def __init__(self, revocations: list[Revocation], page: int = 2) -> None:
        self.revocations = revocations
        self.page = page
        self.asked: list[float | None] = []
        self.failing = False

    async def revoked_since(self, since):
        self.asked.append(since)
        if self.failing:
            raise ConnectionError("identity is down")
        found = sorted((r for r in self.revocations if since is None or r.revoked_at >= since),
                       key=lambda r: r.revoked_at)[:self.page]
        return found, len(found) == self.page


def revocation(session_id: str, revoked_at: float, ttl: float = 900) -> Revocation:
    return Revocation(session_id, revoked_at, revoked_at + ttl)


async def test_catching_up_reads_every_page_then_asks_from_just_before_the_newest():
    now = time.time()
    source = ListedRevocations([revocation(f"s{i}", now - 100 + i) for i in range(5)])
    revoked = RevokedSessions()
    await revoked.catch_up(source)
    assert all(f"s{i}" in revoked for i in range(5)) and "s9" not in revoked
    # Each page starts at the last one's newest (stamps may repeat), so pages overlap by one.
    assert source.asked == [None, now - 99, now - 98, now - 97, now - 96]

    # One committed late, stamped before the newest known: still found by the next poll.
    source.revocations.append(revocation("late", now - 96 - REORDERING_WINDOW_SECONDS / 2))
    source.asked.clear()
    await revoked.catch_up(source)
    assert "late" in revoked
    assert source.asked[0] == now - 96 - REORDERING_WINDOW_SECONDS


async def test_a_session_is_forgotten_once_its_tokens_have_expired():
    clock = [1000.0]
    revoked = RevokedSessions(timer=lambda: clock[0])
    revoked.add(revocation("ended", 990, ttl=60))
    revoked.add(revocation("long-expired", 10, ttl=60))
    assert "ended" in revoked and "long-expired" not in revoked and len(revoked) == 1
    clock[0] = 1051
    assert "ended" not in revoked
    revoked.forget_expired()
    assert len(revoked) == 0


async def test_following_survives_an_unreachable_identity_and_keeps_what_it_knew(caplog):
    source = ListedRevocations([revocation("known", time.time())])
    revoked = RevokedSessions()
    task = asyncio.create_task(follow(revoked, source, interval=0.01))
    try:
        while "known" not in revoked:
            await asyncio.sleep(0.01)
        source.failing = True
        polls = len(source.asked)
        while len(source.asked) < polls + 5:
            await asyncio.sleep(0.01)
        assert "known" in revoked
        assert sum("cannot learn revoked sessions" in r.message for r in caplog.records) == 1
        source.failing = False
        source.revocations.append(revocation("new", time.time()))
        while "new" not in revoked:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
