"""The agent's domain metrics, in the process's Prometheus registry: runs by
outcome, steps by type, tool calls by tool and outcome, and each tool's
circuit breaker state."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from meshkit.metrics import LATENCY_BUCKETS
from services.agent.tools.breaker import CLOSED, HALF_OPEN, OPEN

if TYPE_CHECKING:
    from services.agent.agents import Run
    from services.agent.tools.registry import ToolRegistry

RUNS = Counter("sagemesh_agent_runs_total", "Agent runs by mode and how they ended.", ["mode", "status"])
STEPS = Counter("sagemesh_agent_steps_total", "Steps in agent runs' traces, by type.", ["type"])
TOOL_CALLS = Counter("sagemesh_agent_tool_calls_total",
                     "Tool calls by tool and outcome (ok, or why not: invalid_input, circuit_open, timeout, ...).",
                     ["tool", "outcome"])
TOOL_CALL_SECONDS = Histogram("sagemesh_agent_tool_call_seconds", "Time a tool call took, by tool.", ["tool"],
                              buckets=LATENCY_BUCKETS)
BREAKER_STATES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


def record_run(run: Run) -> None:
    RUNS.labels(run.mode.value, run.status.value).inc()
    for step in run.trace:
        STEPS.labels(step.type.value).inc()


class BreakerStates(Collector):
    """Each tool's breaker state as it is when scraped: it turns half-open by
    the passing of time, with no event to record."""

    def __init__(self) -> None:
        self._registries: weakref.WeakSet[ToolRegistry] = weakref.WeakSet()

    def watch(self, registry: ToolRegistry) -> None:
        self._registries.add(registry)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("sagemesh_agent_tool_breaker_state",
                                   "Each tool's circuit breaker: 0 closed, 1 half-open, 2 open.", labels=["tool"])
        for registry in list(self._registries):
            for tool, state in registry.tools():
                family.add_metric([tool.name], BREAKER_STATES[state])
        yield family


BREAKERS = BreakerStates()
REGISTRY.register(BREAKERS)
