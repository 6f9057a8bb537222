"""meshkit.sandbox: limits that hold in real worker processes, and an event loop that stays free."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from meshkit.sandbox import RETIRE_AT, Sandbox, SandboxCrashed, SandboxLimits, SandboxTimeout

LIMITS = SandboxLimits(memory_bytes=256 * 2**20, cpu_seconds=1.0)


def add(a: int, b: int) -> int:
    return a + b


def refuse(message: str) -> None:
    raise ValueError(message)


def spin(seconds: float) -> int:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass
    return os.getpid()


def allocate(mib: int) -> int:
    return len(bytearray(mib * 2**20))


_kept: list[bytearray] = []


def keep(mib: int) -> int:
    """Allocates `mib` MiB and keeps it, as a library's caches and a fragmented heap do."""
    _kept.append(bytearray(mib * 2**20))
    return os.getpid()


def sleep_then_write(seconds: float, path: str) -> None:
    time.sleep(seconds)
    with open(path, "w") as file:
        file.write("ran to the end")


@pytest.fixture
async def sandbox():
    box = Sandbox("test", LIMITS, workers=1)
    yield box
    box.close()


async def test_returns_the_result_and_raises_what_the_function_raised(sandbox):
    assert await sandbox.run(add, 2, 3, timeout=30) == 5
    with pytest.raises(ValueError, match="no such thing"):
        await sandbox.run(refuse, "no such thing", timeout=30)


async def test_a_call_past_its_timeout_is_stopped_and_the_next_one_gets_a_new_worker(sandbox):
    first = await sandbox.run(spin, 0, timeout=30)  # a warm worker: the timeout measures the call alone
    started = time.monotonic()
    with pytest.raises(SandboxTimeout, match="stopped after 0.5 s"):
        await sandbox.run(spin, 5, timeout=0.5)
    assert time.monotonic() - started < 4
    assert await sandbox.run(spin, 0, timeout=30) != first


async def test_cpu_time_past_the_limit_kills_the_worker(sandbox):
    with pytest.raises(SandboxCrashed, match="more than 1 s of CPU time"):
        await sandbox.run(spin, 30, timeout=30)
    assert await sandbox.run(add, 1, 1, timeout=30) == 2


async def test_the_cpu_allowance_is_per_call_not_per_worker(sandbox):
    # Three calls of 0.6 s each use 1.8 s of one worker's CPU, past a single call's 1 s.
    pids = {await sandbox.run(spin, 0.6, timeout=30) for _ in range(3)}
    assert len(pids) == 1


async def test_memory_past_the_limit_is_a_memory_error_in_the_worker_not_the_server(sandbox):
    worker = await sandbox.run(spin, 0, timeout=30)
    with pytest.raises(MemoryError):
        await sandbox.run(allocate, 1024, timeout=30)
    assert await sandbox.run(allocate, 16, timeout=30) == 16 * 2**20
    # A worker that ran out of memory may have none left for the next call's arguments: it was replaced.
    assert await sandbox.run(spin, 0, timeout=30) != worker


async def test_a_worker_that_holds_most_of_its_memory_after_a_call_is_replaced_before_the_next(sandbox):
    limit_mib = LIMITS.memory_bytes // 2**20
    lean = await sandbox.run(keep, 8, timeout=30)
    assert await sandbox.run(keep, 8, timeout=30) == lean  # well under the limit: the same worker
    grown = await sandbox.run(keep, int(RETIRE_AT * limit_mib), timeout=30)
    assert grown == lean
    # Its next call, which would not fit beside what it holds, runs in a fresh worker.
    assert await sandbox.run(allocate, limit_mib // 2, timeout=30) == limit_mib // 2 * 2**20
    assert await sandbox.run(spin, 0, timeout=30) != grown


async def test_a_worker_that_dies_between_calls_does_not_break_the_sandbox(sandbox):
    # pebble declares its pool broken when a worker dies with no call running (the kernel's OOM
    # killer, a MemoryError while it reads its next call): the sandbox replaces the pool.
    for _ in range(2):
        worker = await sandbox.run(spin, 0, timeout=30)
        os.kill(worker, signal.SIGKILL)
        await asyncio.sleep(0.5)
        assert await sandbox.run(add, 2, 3, timeout=30) == 5
        assert await sandbox.run(spin, 0, timeout=30) != worker


async def test_a_call_waiting_when_the_pool_breaks_is_made_on_the_new_one():
    box = Sandbox("test", LIMITS, workers=1)
    try:
        worker = await box.run(spin, 0, timeout=30)
        os.kill(worker, signal.SIGKILL)
        # Scheduled before the pool has noticed: pebble drops it with the pool, the sandbox makes it again.
        calls = await asyncio.gather(*(box.run(add, n, n, timeout=30) for n in range(4)))
        assert calls == [0, 2, 4, 6]
    finally:
        box.close()


async def test_the_event_loop_keeps_running_during_a_call(sandbox):
    await sandbox.run(add, 0, 0, timeout=30)
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await sandbox.run(spin, 0.5, timeout=30)
    ticker.cancel()
    assert ticks >= 20


async def test_cancelling_the_caller_kills_the_running_call(sandbox, tmp_path):
    await sandbox.run(add, 0, 0, timeout=30)
    marker = tmp_path / "marker"
    call = asyncio.create_task(sandbox.run(sleep_then_write, 1.0, str(marker), timeout=30))
    await asyncio.sleep(0.3)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(1.5)
    assert not marker.exists()
    assert await sandbox.run(add, 2, 2, timeout=30) == 4



def imported(module: str) -> bool:
    return module in sys.modules


async def test_preloading_starts_the_workers_with_the_modules_imported():
    box = Sandbox("test", LIMITS, workers=2)
    try:
        assert not await box.run(imported, "wave", timeout=30)
        box.close()
        box = Sandbox("test", LIMITS, workers=2, preload=("wave",))
        await box.start()
        assert all(await asyncio.gather(*(box.run(imported, "wave", timeout=30) for _ in range(4))))
    finally:
        box.close()
