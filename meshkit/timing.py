"""Elapsed time as the mesh reports it: milliseconds from a perf_counter start."""

from __future__ import annotations

import time


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
