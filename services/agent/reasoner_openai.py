"""The agent's reasoning model: an OpenAI-compatible chat-completions server
with native tool calling (vLLM, Ollama, llama.cpp's server, OpenAI), tried
along a chain of models."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry import trace

from meshkit.errors import FailedPrecondition, Unavailable
from meshkit.model_http import post_json
from meshkit.pricing import Prices, cost_usd
from services.agent.tools import Tool


log = logging.getLogger(__name__)
tracer = trace.get_tracer("sagemesh.agent")


class ReasonerRefused(FailedPrecondition):
    pass


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    # As the model wrote it: it may not be valid JSON.
    arguments: str


@dataclass(frozen=True)
class Turn:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    cost_usd: float = 0.0

    def as_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in self.tool_calls]
        return message


def tool_specs(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.input_schema}} for t in tools]


class ChatReasoner:
    def __init__(self, base_url: str, models: Sequence[str], api_key: str = "", timeout: float = 60.0,
                 prices: Prices | None = None) -> None:
        if not models:
            raise ValueError("the reasoner needs at least one model")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.models = list(models)
        self.prices = prices or {}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0), headers=headers)

    async def next(self, messages: list[dict[str, Any]], tools: Sequence[Tool] = ()) -> Turn:
        """The model's next turn: tool calls to make, or its answer. With no
        tools it can only answer in words."""
        with tracer.start_as_current_span("agent.reason", attributes={"tools": len(tools)}) as span:
            turn = await self._next(messages, tools)
            span.set_attributes({"model": turn.model, "prompt_tokens": turn.prompt_tokens,
                                 "completion_tokens": turn.completion_tokens, "tool_calls": len(turn.tool_calls)})
            return turn

    async def _next(self, messages: list[dict[str, Any]], tools: Sequence[Tool]) -> Turn:
        unavailable: Unavailable | None = None
        for model in self.models:
            payload: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0}
            if tools:  # some servers refuse an empty list
                payload["tools"] = tool_specs(tools)
            try:
                body = await post_json(self.client, self.url, payload, "reasoning model", ReasonerRefused)
            except Unavailable as error:
                unavailable = error  # the next model in the chain may answer
                continue
            return _turn(body, model, self.prices)
        raise unavailable or Unavailable("the reasoning model is unavailable")

    async def close(self) -> None:
        await self.client.aclose()


def _turn(body: dict[str, Any], model: str, prices: Prices) -> Turn:
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        # The body goes to the log only: it may hold what the model server should not show users.
        log.warning("the reasoning model %s answered without a message: %.500r", model, body)
        raise ReasonerRefused("the reasoning model answered without a message") from None
    calls = [ToolCall(c.get("id", f"call-{i}"), c["function"]["name"], c["function"].get("arguments") or "{}")
             for i, c in enumerate(message.get("tool_calls") or [])]
    usage = body.get("usage") or {}
    prompt_tokens, completion_tokens = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return Turn(message.get("content") or "", calls, prompt_tokens, completion_tokens, model,
                cost_usd(prices, model, prompt_tokens, completion_tokens))
