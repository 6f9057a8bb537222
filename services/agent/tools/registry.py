"""The tools an agent may use, and the one way to call them: input checked
against the tool's JSON Schema, the call under the tool's timeout and behind
its circuit breaker, a computing tool in the sandbox's worker processes, every
failure told apart by kind for the trace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from jsonschema import Draft202012Validator
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from jsonschema.exceptions import best_match

from meshkit.sandbox import Sandbox, SandboxCrashed, SandboxTimeout
from services.agent.tools import Tool, ToolContext, ToolError
from services.agent.metrics import TOOL_CALL_SECONDS, TOOL_CALLS
from services.agent.tools.breaker import CircuitBreaker

tracer = trace.get_tracer("sagemesh.agent")


class ToolCallError(Exception):
    """Why a call did not return: kind is not_found, disabled, invalid_input,
    circuit_open, timeout, refused (the tool could not do what was asked),
    stopped (the sandbox killed it: its CPU time or memory) or failed (the
    tool broke)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool], breaker: Callable[[], CircuitBreaker] = CircuitBreaker,
                 sandbox: Sandbox | None = None) -> None:
        self._sandbox = sandbox
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            if tool.sandboxed and sandbox is None:
                raise ValueError(f"the tool {tool.name!r} runs sandboxed, and this registry has no sandbox")
            Draft202012Validator.check_schema(tool.input_schema)
            self._tools[tool.name] = tool
            self._validators[tool.name] = Draft202012Validator(tool.input_schema)
            self._breakers[tool.name] = breaker()

    def tools(self) -> list[tuple[Tool, str]]:
        """Every tool with its breaker's state, by name."""
        return [(tool, self._breakers[name].state) for name, tool in sorted(self._tools.items())]

    def enabled(self) -> list[Tool]:
        return [tool for tool, _ in self.tools() if tool.enabled]

    def _checked(self, name: str, arguments: Any) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            raise ToolCallError("not_found", f"there is no tool named {name!r}; tools: {', '.join(self._tools)}")
        if not tool.enabled:
            raise ToolCallError("disabled", f"the tool {name!r} is turned off on this server")
        error = best_match(self._validators[name].iter_errors(arguments))
        if error is not None:
            where = "input" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            raise ToolCallError("invalid_input", f"{where}: {error.message}")
        return tool

    async def call(self, name: str, arguments: Any, context: ToolContext = ToolContext()) -> Any:
        started = time.perf_counter()
        outcome = "cancelled"
        with tracer.start_as_current_span(f"agent.tool.{name}", attributes={"tool": name}) as span:
            try:
                result = await self._call(name, arguments, context)
                outcome = "ok"
                return result
            except ToolCallError as error:
                outcome = error.kind
                span.set_status(Status(StatusCode.ERROR, f"{error.kind}: {error.message}"))
                raise
            finally:
                span.set_attribute("outcome", outcome)
                # A name the model made up is not a label worth keeping.
                label = name if name in self._tools else "unknown"
                TOOL_CALLS.labels(label, outcome).inc()
                TOOL_CALL_SECONDS.labels(label).observe(time.perf_counter() - started)

    async def _call(self, name: str, arguments: Any, context: ToolContext) -> Any:
        tool = self._checked(name, arguments)
        breaker = self._breakers[name]
        if not breaker.allow():
            raise ToolCallError("circuit_open", f"the tool {name!r} failed {breaker.failures} times in a row; "
                                                f"next try in {breaker.seconds_until_trial():.0f} s")
        try:
            # The timeout covers a sandboxed call's wait for a free worker too; cancelling it there
            # kills the worker.
            async with asyncio.timeout(tool.timeout_seconds):
                if tool.sandboxed:
                    result = await self._sandbox.run(tool.compute, arguments, timeout=tool.timeout_seconds)
                else:
                    result = await tool.run(arguments, context)
        except ToolError as error:
            breaker.succeeded()  # it answered: the request was what it could not do
            raise ToolCallError("refused", str(error)) from None
        except (TimeoutError, SandboxTimeout):
            self._count_against(tool, breaker)
            raise ToolCallError("timeout", f"the tool {name!r} took longer than {tool.timeout_seconds:g} s"
                                + ("; its worker was killed" if tool.sandboxed else "")) from None
        except SandboxCrashed as error:
            self._count_against(tool, breaker)
            # The sandbox says why: "<its name>: stopped, it used more than 1 s of CPU time".
            raise ToolCallError("stopped", f"the tool {name!r} was "
                                           f"{str(error).removeprefix(f'{self._sandbox.name}: ')}") from None
        except MemoryError as error:
            if not tool.sandboxed:
                breaker.failed()
                raise ToolCallError("failed", f"the tool {name!r} failed: out of memory") from error
            self._count_against(tool, breaker)
            raise ToolCallError("stopped", f"the tool {name!r} was stopped, it needed more than its "
                                           f"{self._sandbox.limits.memory_bytes // 2**20} MiB of memory") from None
        except Exception as error:
            breaker.failed()
            raise ToolCallError("failed", f"the tool {name!r} failed: {error}") from error
        breaker.succeeded()
        return result

    @staticmethod
    def _count_against(tool: Tool, breaker: CircuitBreaker) -> None:
        """A timeout counts against the tool's breaker, unless the tool is sandboxed: then the cost
        was the input's (its worker was killed, the next call gets a fresh one), and counting it
        would let one caller turn the tool off for everyone."""
        if tool.sandboxed:
            breaker.succeeded()
        else:
            breaker.failed()
