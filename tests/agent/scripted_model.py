"""A stand-in chat-completions server whose turns the test scripts: the
reasoning model, for tests that must say exactly what the model does."""

from __future__ import annotations

import asyncio
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def call(name: str, arguments: str | dict, call_id: str) -> dict:
    arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def turn(content: str | None = None, calls: list[dict] | None = None) -> dict:
    message = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10}}


def plan_turn(*steps: tuple[str, str]) -> dict:
    """The model's plan: (description, tool) per step."""
    return turn(json.dumps({"steps": [{"description": d, "tool": t} for d, t in steps]}))


class ScriptedModel:
    """Answers each chat request with the next scripted turn, after `delay_seconds`; keeps the requests."""

    def __init__(self, turns: list[dict], delay_seconds: float = 0.0) -> None:
        self.turns = turns
        self.delay_seconds = delay_seconds
        self.requests: list[dict] = []

    def app(self) -> Starlette:
        async def chat(request: Request) -> JSONResponse:
            self.requests.append(await request.json())
            await asyncio.sleep(self.delay_seconds)
            return JSONResponse(self.turns.pop(0))

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
