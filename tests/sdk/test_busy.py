"""sagemesh_sdk.busy: how long a busy mesh is waited for, and that one client's calls wait together."""

from __future__ import annotations

import asyncio

import pytest

from sagemesh_sdk.busy import Busy, BusyGate, BusyRetry


def test_retry_after_is_the_least_wait_and_jitter_spreads_the_rest():
    policy = BusyRetry(attempts=5, base_seconds=0.5, max_seconds=8)
    waits = [policy.delay(0, Busy(retry_after=3)) for _ in range(200)]
    assert all(3 <= wait <= 3 + 0.5 for wait in waits) and len(set(waits)) > 100
    # Without the server's word: exponential, between half the ceiling and the ceiling.
    assert all(1 <= policy.delay(2, Busy()) <= 2 for _ in range(100))
    assert all(2 <= policy.delay(3, Busy()) <= 4 for _ in range(100))
    # The last attempt, or a wait longer than the policy takes, is the caller's to handle.
    assert policy.delay(4, Busy()) is None
    assert policy.delay(0, Busy(retry_after=3600)) is None


async def test_calls_of_one_client_hold_back_together_and_other_failures_pass_at_once():
    clock = [0.0]
    gate = BusyGate(BusyRetry(attempts=3), clock=lambda: clock[0])
    calls: list[str] = []

    async def refused_once() -> str:
        calls.append("refused_once")
        if calls.count("refused_once") == 1:
            raise ConnectionRefusedError("busy")
        return "done"

    def busy_of(error: Exception) -> Busy | None:
        return Busy(retry_after=0.2) if isinstance(error, ConnectionRefusedError) else None

    async def advance_clock():
        while not calls:
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        clock[0] += 10  # the wait is over

    result, _ = await asyncio.gather(gate.call(refused_once, busy_of), advance_clock())
    assert result == "done" and calls == ["refused_once", "refused_once"]

    async def broken() -> str:
        raise ValueError("not busy, broken")

    with pytest.raises(ValueError):
        await gate.call(broken, busy_of)
