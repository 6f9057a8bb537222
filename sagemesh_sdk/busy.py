"""Waiting out a busy mesh instead of failing: a call refused with RESOURCE_EXHAUSTED (over REST,
429 with Retry-After: a rate limit, a server shedding load) is made again after the wait the
server asked for, or else after an exponential backoff, with jitter so that many clients (or one
client's many concurrent calls) do not come back at the same instant.

One BusyGate per client: when the server says it is busy, every call of that client holds back
until the wait is over, rather than each finding out for itself with a refused request of its
own, which would only spend the budget the wait is for.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Busy:
    """What a refusal said: the mesh is busy, and (when it said) for how many seconds."""

    retry_after: float | None = None


@dataclass(frozen=True)
class BusyRetry:
    # Calls made, the first included, before the refusal is the caller's to handle.
    attempts: int = 12
    # Backoff without a Retry-After: `base_seconds` doubling per attempt, up to `max_seconds`.
    base_seconds: float = 0.5
    max_seconds: float = 30.0
    # A Retry-After longer than this is not waited for: the caller hears of the refusal.
    longest_retry_after: float = 120.0

    def delay(self, attempt: int, busy: Busy) -> float | None:
        """Seconds to wait before attempt `attempt + 1`; None: give up."""
        if attempt + 1 >= self.attempts:
            return None
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** attempt)
        if busy.retry_after is None:
            return random.uniform(ceiling / 2, ceiling)
        if busy.retry_after > self.longest_retry_after:
            return None
        # The server's word is the least; the jitter spreads those told the same.
        return busy.retry_after + random.uniform(0, min(ceiling, 1 + busy.retry_after / 2))


class BusyGate:
    def __init__(self, policy: BusyRetry = BusyRetry(), clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._closed_until = 0.0

    async def open(self) -> None:
        """Returns when no wait the server asked for is still running."""
        while (remaining := self._closed_until - self.clock()) > 0:
            await asyncio.sleep(remaining)

    def close_for(self, seconds: float) -> None:
        self._closed_until = max(self._closed_until, self.clock() + seconds)

    async def call(self, make_call: Callable[[], Awaitable[T]], busy_of: Callable[[Exception], Busy | None]) -> T:
        """`make_call()` until it is not refused as busy (`busy_of` tells a busy refusal from
        any other failure, which is raised at once), waiting between attempts as the policy
        says; the last refusal is raised."""
        attempt = 0
        while True:
            await self.open()
            try:
                return await make_call()
            except Exception as error:
                busy = busy_of(error)
                delay = None if busy is None else self.policy.delay(attempt, busy)
                if delay is None:
                    raise
            self.close_for(delay)
            attempt += 1
