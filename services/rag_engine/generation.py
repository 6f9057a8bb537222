"""Answer generators behind one interface: generator_extractive.py composes
answers from the passages themselves (the offline default),
generator_openai.py asks an OpenAI-compatible chat-completions server."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from meshkit.errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from services.rag_engine.settings import RagEngineSettings

_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk as the generator sees it; an answer cites it as [number]."""

    number: int
    text: str
    title: str = ""


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    question: str
    passages: Sequence[Passage]
    # Earlier turns of the conversation, oldest first.
    history: Sequence[Turn] = ()
    # Empty for the generator's configured model(s).
    model: str = ""
    temperature: float = 0.0
    # Most tokens to write; 0 for the generator's default.
    max_tokens: int = 0


@dataclass
class Usage:
    """What a finished generation cost; the last event of every stream."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The model that answered (after any fallback), or the generator's name.
    model: str = ""
    extra: dict[str, str] = field(default_factory=dict)


# Of the turn before a follow-up, what is read with it.
MAX_EARLIER_CHARS = 500


def with_context(question: str, history: Sequence[Turn]) -> str:
    """A follow-up ("and by how much?") names its subject only in the turn
    before it: the question read together with the last user turn."""
    earlier = next((t.content for t in reversed(history) if t.role == "user"), "")[-MAX_EARLIER_CHARS:]
    return f"{earlier}\n{question}" if earlier else question


# A stream yields answer text in pieces (str), then exactly one Usage.
GenerationEvent = str | Usage


class GenerationRefused(FailedPrecondition):
    """The generator refused the request (bad model name, prompt too long):
    retrying will not help."""


@dataclass(frozen=True)
class GenerationLimits:
    """What a client may ask of the model: only models on the allow-list, and
    at most `max_tokens` tokens of answer."""

    allowed_models: tuple[str, ...] = ()
    max_tokens: int = 2048

    def check_model(self, model: str) -> None:
        if not model or model in self.allowed_models:
            return
        if not self.allowed_models:
            raise InvalidArgument("this server chooses its model itself; leave it empty", field="generation.model")
        raise InvalidArgument(f"{model[:100]!r} is not offered here; the models are: {', '.join(self.allowed_models)}",
                              field="generation.model")

    def clamp(self, max_tokens: int) -> tuple[int, bool]:
        """The tokens to ask for, and whether the request asked for more."""
        return (self.max_tokens, True) if max_tokens > self.max_tokens else (max_tokens, False)


def estimate_tokens(text: str) -> int:
    """Roughly what a subword tokenizer makes of the text, for budgets and for
    servers that report no usage: a word is about 1.3 tokens, a CJK character one."""
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil(len(_CJK.sub(" ", text).split()) * 1.3)


class Generator(Protocol):
    name: str

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """The answer in pieces as it is written, then its Usage. Raises
        meshkit.errors.Unavailable when the model cannot be reached after
        retries, GenerationRefused when it refuses."""

    async def close(self) -> None: ...


def load_generator(settings: RagEngineSettings) -> Generator:
    if settings.generator == "openai":
        models = settings.generation_chain
        if not settings.generation_url or not models:
            raise ValueError("SAGEMESH_GENERATOR=openai needs SAGEMESH_GENERATION_URL and SAGEMESH_GENERATION_MODELS")
        from services.rag_engine.generator_openai import OpenAIChatGenerator

        return OpenAIChatGenerator(
            settings.generation_url, models, api_key=settings.generation_api_key,
            timeout=settings.generation_timeout_seconds, max_retries=settings.generation_max_retries,
            default_max_tokens=settings.generation_max_tokens,
        )
    if settings.generator == "local":
        from services.rag_engine.generator_llama import LlamaCppGenerator

        try:
            return LlamaCppGenerator(settings.generation_model_path, threads=settings.inference_threads,
                                     default_max_tokens=settings.generation_max_tokens)
        except ImportError as error:
            raise ValueError("SAGEMESH_GENERATOR=local needs the local-llm extra: pip install '.[local-llm]'") \
                from error
    from services.rag_engine.generator_extractive import ExtractiveGenerator

    return ExtractiveGenerator()
