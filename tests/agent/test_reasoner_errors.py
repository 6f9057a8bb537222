"""The reasoning model's failures reach the agent as our sentences: what the
model server said (keys, URLs, the prompt) is logged, never passed on."""

from __future__ import annotations

import logging

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from meshkit.errors import Unavailable
from services.agent.reasoner_openai import ChatReasoner, ReasonerRefused
from tests.conftest import serving_asgi

SECRET = "key sk-live-SECRET rejected by http://10.0.0.7:8000, prompt: What is our merger code name?"


def model_server(status: int, body: object) -> Starlette:
    return Starlette(routes=[Route("/v1/chat/completions", lambda request: JSONResponse(body, status_code=status),
                                   methods=["POST"])])


@pytest.mark.parametrize("status, body, refusal, message", [
    (400, {"error": {"message": SECRET}}, ReasonerRefused, "the reasoning model refused the request (400)"),
    (401, {"error": {"message": SECRET}}, Unavailable, "the reasoning model is unavailable"),
    (500, {"error": {"message": SECRET}}, Unavailable, "the reasoning model is unavailable"),
    (200, {"detail": SECRET}, ReasonerRefused, "the reasoning model answered without a message"),
])
async def test_a_model_servers_words_are_logged_not_returned(caplog, status, body, refusal, message):
    caplog.set_level(logging.WARNING)
    async with serving_asgi(model_server(status, body)) as url:
        reasoner = ChatReasoner(f"{url}/v1", ["m1"])
        try:
            with pytest.raises(refusal) as refused:
                await reasoner.next([{"role": "user", "content": "What is our merger code name?"}])
        finally:
            await reasoner.close()
    assert refused.value.message == message
    assert "SECRET" in caplog.text
