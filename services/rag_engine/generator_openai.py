"""Answers from an OpenAI-compatible chat-completions server (OpenAI, Azure
OpenAI, vLLM, Ollama, LiteLLM...), streamed as the model writes them.

Each model is retried with backoff while it is unreachable, overloaded or
failing, then the next configured model takes over. A retry only ever
happens before the caller has seen text: a stream that breaks mid-answer is
Unavailable, never restarted into a second, duplicated answer.

What the server said when it failed (which may hold keys, URLs or the
prompt) goes to the log, with the request's trace id; the caller gets our
own sentence."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import httpx

from meshkit.errors import Unavailable
from services.rag_engine.generation import (
    GenerationEvent,
    GenerationRefused,
    GenerationRequest,
    Usage,
    estimate_tokens,
)

log = logging.getLogger(__name__)

SYSTEM_PROMPT = """\
You answer questions using only the numbered passages in the user's message.
- Base every statement on the passages, never on your own knowledge.
- Cite the passage that supports a statement inline as [n], right after the statement, \
e.g. "The fee is 5% [2]." Cite several passages as [1][3].
- Use only the numbers of the passages given; never cite a number that is not among them.
- If the passages do not contain the answer, say plainly that they do not; do not guess.
- Answer in the language of the question, whatever the language of the passages."""



def chat_messages(request: GenerationRequest) -> list[dict[str, str]]:
    """The rules, the conversation so far, then the numbered passages and the question."""
    # Turns come from the client: anything but an assistant turn is sent as the
    # user's, so history can never pose as the system prompt.
    history = [{"role": "assistant" if turn.role == "assistant" else "user", "content": turn.content}
               for turn in request.history]
    blocks = [f"[{p.number}] {p.title}".rstrip() + f"\n{p.text}" for p in request.passages]
    passages = "\n\n".join(blocks) if blocks else "(no passages were found)"
    question = f"Passages:\n\n{passages}\n\nQuestion: {request.question}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, *history, {"role": "user", "content": question}]


class _AttemptFailed(Exception):
    """One attempt failed in a way a retry may mend: unreachable, 429, 5xx,
    or a stream that broke before any text."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _ModelFailed(Exception):
    """This model cannot answer: its retries are used up, or the server does
    not know it (`missing`, a 404)."""

    def __init__(self, reason: str, *, missing: bool) -> None:
        super().__init__(reason)
        self.missing = missing


class OpenAIChatGenerator:
    name = "openai"

    def __init__(
        self, base_url: str, models: Sequence[str], api_key: str = "", timeout: float = 60,
        max_retries: int = 3, backoff_initial: float = 0.5, backoff_max: float = 8.0,
        default_max_tokens: int = 512,
    ) -> None:
        """`base_url` is the API root, e.g. http://vllm:8000/v1; `models` are
        tried in order when a request names none."""
        if not base_url or not models:
            raise ValueError("the openai generator needs a base URL and at least one model")
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.models = list(models)
        self.max_retries = max_retries
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.default_max_tokens = default_max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Read is the longest wait between two pieces of the stream, not for the whole answer.
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout, connect=5.0))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        messages = chat_messages(request)
        failures: list[_ModelFailed] = []
        for model in [request.model] if request.model else self.models:
            try:
                async with aclosing(self._from_model(model, request, messages)) as events:
                    async for event in events:
                        yield event
                return
            except _ModelFailed as failure:
                log.warning("generation model %s at %s cannot answer: %s", model, self.url, failure)
                failures.append(failure)
        if all(failure.missing for failure in failures):
            raise GenerationRefused("the model server does not serve the generation model")
        raise Unavailable("the generation model is unavailable")

    async def _from_model(self, model: str, request: GenerationRequest,
                          messages: list[dict[str, str]]) -> AsyncIterator[GenerationEvent]:
        payload = {
            "model": model, "messages": messages, "stream": True, "stream_options": {"include_usage": True},
            "temperature": request.temperature, "max_tokens": request.max_tokens or self.default_max_tokens,
        }
        prompt = "\n".join(message["content"] for message in messages)
        for attempt in range(self.max_retries + 1):
            try:
                async with aclosing(self._attempt(model, payload, prompt)) as events:
                    async for event in events:
                        yield event
                return
            except _AttemptFailed as failure:
                log.warning("generation model %s at %s failed (attempt %d of %d): %s",
                            model, self.url, attempt + 1, self.max_retries + 1, failure)
                if attempt < self.max_retries:
                    await asyncio.sleep(self._delay(attempt, failure.retry_after))
        raise _ModelFailed(f"{model} stayed unavailable", missing=False)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        # Full jitter: clients that failed together do not all come back together.
        return random.uniform(0, min(self.backoff_max, self.backoff_initial * 2 ** attempt))

    async def _attempt(self, model: str, payload: dict[str, Any], prompt: str) -> AsyncIterator[GenerationEvent]:
        written: list[str] = []
        try:
            async with self._client.stream("POST", self.url, json=payload) as response:
                await _check_status(response, model)
                reported = None
                async for chunk in _chunks(response):
                    reported = chunk.get("usage") or reported
                    piece = _piece(chunk)
                    if piece:
                        written.append(piece)
                        yield piece
        except httpx.TransportError as error:  # includes timeouts and connections dropped mid-stream
            _no_retry_after_text(written, error)
            raise _AttemptFailed(f"unreachable: {error!r}") from error
        except _AttemptFailed as error:
            _no_retry_after_text(written, error)
            raise
        yield _usage(reported, model, prompt, "".join(written))

    async def close(self) -> None:
        await self._client.aclose()


def _no_retry_after_text(written: list[str], error: Exception) -> None:
    # The caller already holds part of the answer: a retry would write it a second time.
    if written:
        log.warning("generation stream broke after %d pieces: %r", len(written), error)
        raise Unavailable("the generation model stopped in the middle of its answer") from error


async def _check_status(response: httpx.Response, model: str) -> None:
    if response.status_code == 200:
        return
    await response.aread()
    status, text = response.status_code, response.text[:500]
    if status == 429 or status >= 500:
        raise _AttemptFailed(f"answered {status}: {text}", _retry_after(response))
    if status == 404:
        # An unknown model; another may be served here.
        raise _ModelFailed(f"{model} answered 404: {text}", missing=True)
    log.warning("generation model %s at %s answered %s: %s", model, response.url, status, text)
    if status in (401, 403):
        # Our key is wrong or lacks access: the server's fault, not the request's.
        raise Unavailable("the generation model is unavailable")
    # The request itself is bad (400, 413...): no other model will take it either.
    raise GenerationRefused(f"the generation model refused the request ({status})")


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds on 429/503; the HTTP-date form is not worth parsing."""
    if response.status_code not in (429, 503):
        return None
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


async def _chunks(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of a chat-completions event stream, up to [DONE]."""
    async for line in response.aiter_lines():
        # These servers put each chunk on one `data:` line; other SSE fields
        # (event:, id:, comments, keep-alives) carry nothing here.
        if not line.startswith("data:"):
            continue
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise _AttemptFailed(f"sent an unreadable event: {data[:500]}")
        # vLLM and others report a failure inside a started stream as an event of its own.
        if chunk.get("error"):
            raise _AttemptFailed(f"sent an error event: {str(chunk['error'])[:500]}")
        yield chunk
    raise _AttemptFailed("ended the stream without [DONE]")


def _piece(chunk: dict[str, Any]) -> str:
    try:
        content = chunk["choices"][0]["delta"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        # The usage chunk has no choices.
        return ""
    return content if isinstance(content, str) else ""


def _usage(reported: Any, model: str, prompt: str, answer: str) -> Usage:
    try:
        return Usage(int(reported["prompt_tokens"]), int(reported["completion_tokens"]), model)
    except (KeyError, TypeError, ValueError):
        # Many servers ignore include_usage.
        return Usage(estimate_tokens(prompt), estimate_tokens(answer), model, {"usage": "estimated"})
