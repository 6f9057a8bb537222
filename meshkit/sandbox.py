"""Work on untrusted input in worker processes with limits: CPU time, memory and wall time.

Some work cannot be bounded from inside: a parser handed a crafted file, arithmetic whose cost grows
faster than its input. On the event loop it would stall every other call of the server, and
`asyncio.timeout` cannot interrupt code that never yields. A `Sandbox` runs such a function in a
pool of worker processes (pebble's ProcessPool, which kills a worker whose call passes its timeout
and replaces it); each worker caps its own data segment (RLIMIT_DATA: the heap and every anonymous
mapping, so a runaway allocation ends in MemoryError or the worker's death, never the server's) and
each call's CPU time (RLIMIT_CPU, re-armed per call: the kernel kills the worker with SIGXCPU).

Workers are spawned, not forked: a fork of a process running gRPC's threads can deadlock in the
child. They start on the first call, so a server that never needs one pays nothing.

Workers do not live forever. Heaps fragment and libraries keep what they once allocated, so a
worker that many calls have passed through holds more memory than a fresh one, and one whose call
ran out of memory may have no room left to take the next call's arguments. A worker past
RETIRE_AT of its memory limit after a call, or whose call raised MemoryError, is retired: it exits
when its next call arrives, before running it, and the call goes to a fresh worker. And pebble
declares its whole pool broken when a worker dies between calls; the pool is then replaced, and the
calls it dropped are made again on the new one. So functions run here must be safe to run twice
(parsers and pure computations are).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

T = TypeVar("T")
log = logging.getLogger(__name__)

# The share of its memory limit past which a worker is retired after a call. A fresh parsing worker
# that has read scanned pages holds about 60% of the default 512 MiB; one that also read Office
# files and chunked grows past 80%, where the next page would not fit.
RETIRE_AT = 0.75
# A retired worker's exit status when its next call arrives (EX_TEMPFAIL): the call never ran.
_RETIRED = 75
# Times a call is made again after its worker was retired or its pool replaced: each time a fresh
# worker, so a second retry means workers die at start, which another would not change.
_REPEATS = 2
# Seconds to wait for an old pool's workers and threads to stop (pebble's own join waits forever).
_STOP_SECONDS = 10

@dataclass(frozen=True)
class SandboxLimits:
    # Bytes of heap and anonymous mappings one worker may hold, the interpreter's own included
    # (a bare Python worker holds about 20 MiB; the modules a function imports add theirs).
    memory_bytes: int
    # CPU seconds one call may use (rounded up to whole seconds: the kernel counts no finer).
    cpu_seconds: float


class SandboxError(Exception):
    """The call did not return: see the subclasses."""


class SandboxTimeout(SandboxError):
    """The call ran past its timeout; its worker was killed."""


class SandboxCrashed(SandboxError):
    """The worker died during the call: its CPU-time or memory limit, or another signal."""


def _start_worker(memory_bytes: int, modules: tuple[str, ...]) -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    for module in modules:
        importlib.import_module(module)


# In a worker: whether its next call is to go to a fresh worker instead.
_retiring = False


def _call_in_worker(limits: SandboxLimits, function: Callable[..., T], args: tuple[Any, ...]) -> T:
    global _retiring
    if _retiring:
        os._exit(_RETIRED)
    _arm_cpu_limit(limits.cpu_seconds)
    try:
        return function(*args)
    except MemoryError:
        _retiring = True
        raise
    finally:
        _retiring = _retiring or _data_segment_bytes() > RETIRE_AT * limits.memory_bytes


def _arm_cpu_limit(cpu_seconds: float) -> None:
    # RLIMIT_CPU counts the whole life of the worker: the soft limit is moved to what it has used so
    # far plus this call's allowance. The hard limit stays as it is, or it could never be raised
    # again for the next call.
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(spent + cpu_seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _data_segment_bytes() -> int:
    """What RLIMIT_DATA counts for this process (VmData), 0 where /proc does not say."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _nothing() -> None:
    pass


def _death(exitcode: int | None, limits: SandboxLimits) -> str:
    if exitcode == -signal.SIGXCPU:
        return f"it used more than {limits.cpu_seconds:g} s of CPU time"
    if exitcode in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT):
        # Out of memory shows as an abort or a kill more often than as MemoryError: allocators and
        # C extensions do not all check.
        return f"its worker died (signal {-exitcode}), most likely past its {limits.memory_bytes // 2**20} MiB"
    return f"its worker died (exit code {exitcode})"


class Sandbox:
    def __init__(self, name: str, limits: SandboxLimits, workers: int = 1, preload: tuple[str, ...] = ()) -> None:
        """`preload`: modules each worker imports as it starts, before it takes a call."""
        self.name = name
        self.limits = limits
        self.workers = workers
        self.preload = preload
        self._pool = self._new_pool()
        self._closed = False

    def _new_pool(self) -> ProcessPool:
        return ProcessPool(max_workers=self.workers, initializer=_start_worker,
                           initargs=(self.limits.memory_bytes, self.preload), context=multiprocessing.get_context("spawn"))

    async def run(self, function: Callable[..., T], /, *args: Any, timeout: float) -> T:
        """`function(*args)` in a worker. `function` is a module-level function, safe to run twice, and its
        arguments, result and exceptions are picklable. Raises SandboxTimeout or SandboxCrashed, or what
        `function` raised."""
        deadline = time.monotonic() + timeout
        for repeat in range(_REPEATS + 1):
            pool = self._pool
            try:
                future = pool.schedule(_call_in_worker, args=(self.limits, function, args),
                                       timeout=max(0.001, deadline - time.monotonic()))
            except RuntimeError:  # the pool is broken, or stopped
                self._replace(pool)
                continue
            # Cancelling the awaiting task cancels the pebble future, which kills a running worker.
            try:
                return await asyncio.wrap_future(future)
            except FutureTimeout:
                raise SandboxTimeout(f"{self.name}: stopped after {timeout:g} s") from None
            except ProcessExpired as error:
                if error.exitcode != _RETIRED:
                    raise SandboxCrashed(f"{self.name}: stopped, {_death(error.exitcode, self.limits)}") from None
            except BrokenProcessPool:
                self._replace(pool)
            log.info("%s: the call goes to a fresh worker (%d)", self.name, repeat + 1)
        raise SandboxCrashed(f"{self.name}: stopped, its workers died before they could take the call")

    async def start(self, timeout: float = 120) -> None:
        """Starts the workers now rather than on the first call: a worker's start (and its preloaded
        imports) takes a second or more on a busy machine, which a call with a short timeout must not pay."""
        await asyncio.gather(*(self.run(_nothing, timeout=timeout) for _ in range(self.workers)))

    def _replace(self, broken: ProcessPool) -> None:
        """A new pool in place of `broken`, unless another call has already replaced it."""
        if self._closed:
            raise SandboxCrashed(f"{self.name}: closed")
        if self._pool is broken:
            log.warning("%s: a worker died between calls; its pool is replaced", self.name)
            self._pool = self._new_pool()
            _stop_in_background(broken)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _stop_in_background(self._pool).join(_STOP_SECONDS)


def _stop_in_background(pool: ProcessPool) -> threading.Thread:
    """Stops `pool` and its workers in a daemon thread: pebble's join can wait forever on a pipe
    that a dying worker left half-written, and a process must not hang on its way out for it."""
    def stop() -> None:
        pool.stop()
        pool.join()

    stopping = threading.Thread(target=stop, name="sandbox-pool-stop", daemon=True)
    stopping.start()
    return stopping
