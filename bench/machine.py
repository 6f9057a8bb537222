"""The machine a bench ran on, and what else ran on it meanwhile: figures from
a shared machine are indicative only, and a report should say how shared it was."""

from __future__ import annotations

import os
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Self

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def describe() -> str:
    """E.g. 'Linux 6.1 x86_64, 2 cores (Intel Xeon ...), Python 3.12.3'."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                          if line.startswith("model name")), "")
    except OSError:
        pass
    cores = f"{os.cpu_count()} cores" + (f" ({model})" if model else "")
    return f"{platform.system()} {platform.release()} {platform.machine()}, {cores}, Python {platform.python_version()}"


@dataclass(frozen=True)
class _Process:
    parent: int
    name: str
    cpu_seconds: float


def _processes() -> dict[int, _Process]:
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                line = stat.read()
        except OSError:
            continue  # it ended meanwhile
        # "pid (name) state ppid ... utime stime ...": the name may hold spaces and parentheses.
        name = line[line.index("(") + 1:line.rindex(")")]
        fields = line[line.rindex(")") + 2:].split()
        found[int(entry.name)] = _Process(int(fields[1]), name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return found


def _busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return (sum(ticks[:8]) - idle) / CLOCK_TICKS


def _trees(roots: Iterable[int], processes: dict[int, _Process]) -> set[int]:
    """The roots and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, process in processes.items():
        children.setdefault(process.parent, []).append(pid)
    found, todo = set(), [pid for pid in roots if pid in processes]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


@dataclass(frozen=True)
class OtherUse:
    cores: float  # on average over the watch
    busiest: list[tuple[str, float]]  # other processes by name, CPU seconds, most first

    def sentence(self, total_cores: int) -> str:
        if self.cores < 0.05:
            return "No other process used the CPU noticeably meanwhile."
        names = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.busiest[:3])
        return (f"Other processes used the CPU meanwhile: on average {self.cores:.2f} of the {total_cores} cores "
                f"(most: {names}).")


class _Watch:
    """Runs `_watch` in a daemon thread from `with` to its end, which sets `_stop`."""

    def __init__(self, name: str, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        raise NotImplementedError


class OtherCpuWatch(_Watch):
    """Samples once a second, in a thread, the CPU time the machine spends outside the process
    trees `ours` names (read again at each sample: a restarted server has a new pid). A process
    of ours that dies between samples counts its last second as someone else's."""

    def __init__(self, ours: Callable[[], Iterable[int]], interval: float = 1.0) -> None:
        super().__init__("other cpu watch", interval)
        self.ours = ours
        self._others = 0.0
        self._by_name: Counter[str] = Counter()
        self._seconds = 0.0

    def use(self) -> OtherUse:
        cores = self._others / self._seconds if self._seconds else 0.0
        return OtherUse(max(cores, 0.0), self._by_name.most_common())

    def _watch(self) -> None:
        before, busy_before, then = _processes(), _busy_seconds(), time.monotonic()
        while not self._stop.wait(self.interval):
            now, busy_now, at = _processes(), _busy_seconds(), time.monotonic()
            ours = _trees(self.ours(), now)
            ours_seconds = 0.0
            for pid, process in now.items():
                spent = process.cpu_seconds - (before[pid].cpu_seconds if pid in before else 0.0)
                if pid in ours:
                    ours_seconds += spent
                else:
                    self._by_name[process.name] += spent
            self._others += max(busy_now - busy_before - ours_seconds, 0.0)
            self._seconds += at - then
            before, busy_before, then = now, busy_now, at


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    role: str  # "server", "sandbox worker", ...
    high_water_bytes: int  # its VmHWM, as last read


def _status_bytes(pid: int) -> tuple[int, int] | None:
    """VmRSS and VmHWM of a live process, in bytes; None when it has ended (or is a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except OSError:
        return None
    if "VmRSS" not in fields:
        return None
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _proportional_bytes(pid: int) -> int:
    """The process's PSS: its resident pages, each shared one divided among the processes that
    map it; 0 when it has ended."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return next((int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:")), 0)
    except OSError:
        return 0


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "server"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "child"
    if "resource_tracker" in command:
        return "resource tracker"
    return "sandbox worker" if "spawn_main" in command else "child"


class MemoryWatch(_Watch):
    """Samples, every `interval` seconds in a thread, the resident memory of a process and of all
    its descendants, and keeps the peak of their sum, twice: of their RSS (VmRSS), which counts
    the pages they share (libraries a parent and its spawned children both map) once in each, so
    somewhat more than a container holding them would; and of their PSS, which divides each
    shared page among its sharers, so that the sum counts it once. Each process's own peak
    (VmHWM, kept by the kernel) is read at every sample too, so a process that ends between
    samples still shows its last one."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        super().__init__("memory watch", interval)
        self.root = root
        self.peak_bytes = 0
        self.peak_proportional_bytes = 0
        self.processes_at_peak = 0
        # (time.monotonic(), the RSS sum) at each sample.
        self.samples: list[tuple[float, int]] = []
        self._seen: dict[int, ProcessMemory] = {}

    def peak_between(self, start: float, end: float) -> int:
        """The peak RSS sum sampled between two time.monotonic() instants."""
        return max((total for at, total in self.samples if start <= at <= end), default=0)

    def high_water_marks(self) -> list[ProcessMemory]:
        """Every process of the tree seen, the server first, then the largest."""
        return sorted(self._seen.values(), key=lambda p: (p.pid != self.root, -p.high_water_bytes))

    def _sample(self) -> None:
        total, proportional, counted = 0, 0, 0
        for pid in _trees([self.root], _processes()):
            memory = _status_bytes(pid)
            if memory is None:
                continue
            rss, high_water = memory
            total, counted = total + rss, counted + 1
            proportional += _proportional_bytes(pid)
            known = self._seen.get(pid)
            role = known.role if known else _role(pid, self.root)
            self._seen[pid] = ProcessMemory(pid, role, max(high_water, known.high_water_bytes if known else 0))
        self.samples.append((time.monotonic(), total))
        if total > self.peak_bytes:
            self.peak_bytes, self.processes_at_peak = total, counted
        self.peak_proportional_bytes = max(self.peak_proportional_bytes, proportional)

    def _watch(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval):
            self._sample()
        self._sample()
