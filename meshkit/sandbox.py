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
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import resource
import signal
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

T = TypeVar("T")


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


def _limit_memory(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))


def _call_with_cpu_limit(cpu_seconds: float, function: Callable[..., T], args: tuple[Any, ...]) -> T:
    # RLIMIT_CPU counts the whole life of the worker: the soft limit is moved to what it has used so
    # far plus this call's allowance. The hard limit stays as it is, or it could never be raised
    # again for the next call.
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(spent + cpu_seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    return function(*args)


def _death(exitcode: int | None, limits: SandboxLimits) -> str:
    if exitcode == -signal.SIGXCPU:
        return f"it used more than {limits.cpu_seconds:g} s of CPU time"
    if exitcode in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT):
        # Out of memory shows as an abort or a kill more often than as MemoryError: allocators and
        # C extensions do not all check.
        return f"its worker died (signal {-exitcode}), most likely past its {limits.memory_bytes // 2**20} MiB"
    return f"its worker died (exit code {exitcode})"


class Sandbox:
    def __init__(self, name: str, limits: SandboxLimits, workers: int = 1) -> None:
        self.name = name
        self.limits = limits
        self._pool = ProcessPool(max_workers=workers, initializer=_limit_memory,
                                 initargs=(limits.memory_bytes,), context=multiprocessing.get_context("spawn"))
        self._closed = False

    async def run(self, function: Callable[..., T], /, *args: Any, timeout: float) -> T:
        """`function(*args)` in a worker. `function` is a module-level function, and its arguments, result
        and exceptions are picklable. Raises SandboxTimeout or SandboxCrashed, or what `function` raised."""
        future = self._pool.schedule(_call_with_cpu_limit, args=(self.limits.cpu_seconds, function, args),
                                     timeout=timeout)
        # Cancelling the awaiting task cancels the pebble future, which kills a running worker.
        try:
            return await asyncio.wrap_future(future)
        except FutureTimeout:
            raise SandboxTimeout(f"{self.name}: stopped after {timeout:g} s") from None
        except ProcessExpired as error:
            raise SandboxCrashed(f"{self.name}: stopped, {_death(error.exitcode, self.limits)}") from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.stop()
            self._pool.join(timeout=5)
