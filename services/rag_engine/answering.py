"""Grounded answers: retrieval, a context within a token budget, generation,
and citations that point only at sources the answer returns."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from meshkit.pricing import cost_usd
from meshkit.timing import ms_since
from services.rag_engine.domain import RankedChunk, Scope, Timings
from services.rag_engine.engine import RagEngine
from services.rag_engine.filters import Filter
from meshkit.errors import InvalidArgument
from services.rag_engine.generation import (
    GenerationLimits,
    GenerationRequest,
    Generator,
    Passage,
    Turn,
    Usage,
    estimate_tokens,
    with_context,
)
from services.rag_engine.generator_extractive import not_found_message
from services.rag_engine.metrics import record_answer, record_cache_lookup

if TYPE_CHECKING:
    from services.rag_engine.answer_cache import AnswerCache

# In featuresUsed when the request asked for more tokens than the server allows.
MAX_TOKENS_CLAMPED = "max_tokens:clamped"

# A passage cut to fit the budget keeps at least this much, else it is dropped.
MIN_PASSAGE_TOKENS = 40
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")

tracer = trace.get_tracer("sagemesh.rag_engine")


@dataclass(frozen=True)
class AnsweringConfig:
    # Chunks an answer draws on unless the request says otherwise.
    default_top_k: int = 5
    # Tokens of passages in the prompt; the least relevant go first when over.
    context_tokens: int = 1500
    # Tokens of earlier turns passed along, newest kept.
    history_tokens: int = 500
    # USD per million (prompt, completion) tokens, by model.
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    # The models a request may name and the most tokens it may ask for.
    limits: GenerationLimits = GenerationLimits()


@dataclass(frozen=True)
class QueryOptions:
    top_k: int = 0
    filters: Sequence[Filter] = ()
    weights: tuple[float, float] = (1.0, 1.0)
    use_rerank: bool = False
    history: Sequence[Turn] = ()
    model: str = ""
    temperature: float = 0.0
    max_tokens: int = 0


@dataclass(frozen=True)
class AnswerMetrics:
    retrieval_ms: float
    rerank_ms: float
    generation_ms: float
    total_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    generator: str
    retrieval: Timings
    cache_hit: bool = False


@dataclass(frozen=True)
class Source:
    """A chunk the answer drew on; the answer cites it as [number]."""

    number: int
    ranked: RankedChunk
    # The text the generator read: the chunk's, or its first sentences when cut to fit.
    text: str


@dataclass(frozen=True)
class Answer:
    text: str
    sources: list[Source]
    metrics: AnswerMetrics
    features: list[str]


_CITATION = re.compile(r"\[(\d{1,4})\]")


class CitationFilter:
    """Drops citation markers [n] that point past the sources, also when a
    marker arrives split across streamed pieces."""

    _OPEN_MARKER = re.compile(r"\[\d{0,4}$")

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self._held = ""

    def feed(self, piece: str) -> str:
        text = self._held + piece
        opening = self._OPEN_MARKER.search(text)
        self._held = opening.group() if opening else ""
        return self._clean(text[: opening.start()] if opening else text)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._clean(text)

    def _clean(self, text: str) -> str:
        return _CITATION.sub(lambda m: m.group() if 1 <= int(m.group(1)) <= self.sources else "", text)


def cited_numbers(text: str) -> set[int]:
    """The source numbers an answer's [n] markers name."""
    return {int(number) for number in _CITATION.findall(text)}


def _fit(text: str, budget: int) -> str:
    """The text's leading sentences (else words) within about `budget` tokens."""
    kept, used = [], 0
    for sentence in (s for s in _SENTENCE_END.split(text) if s):
        cost = estimate_tokens(sentence)
        if used + cost > budget:
            break
        kept.append(sentence)
        used += cost
    if kept:
        return " ".join(kept)
    words = text.split()
    return " ".join(words[: max(1, int(budget / 1.3))]) + " …"


def build_context(results: Sequence[RankedChunk], budget: int) -> list[Source]:
    """The results in rank order while they fit the budget; the first that does
    not is cut to its leading sentences if enough room is left, and the rest,
    the least relevant, are dropped."""
    sources: list[Source] = []
    used = 0
    for ranked in results:
        text = ranked.chunk.text.strip()
        cost = estimate_tokens(text)
        if used + cost > budget:
            if budget - used >= MIN_PASSAGE_TOKENS:
                sources.append(Source(len(sources) + 1, ranked, _fit(text, budget - used)))
            break
        sources.append(Source(len(sources) + 1, ranked, text))
        used += cost
    return sources


def recent_history(history: Sequence[Turn], budget: int) -> list[Turn]:
    kept: list[Turn] = []
    used = 0
    for turn in reversed(history):
        used += estimate_tokens(turn.content)
        if used > budget:
            break
        kept.append(turn)
    return kept[::-1]


def _served_from_cache(answer: Answer, found_by: str, elapsed_ms: float) -> Answer:
    """The cached answer as this request got it: nothing retrieved, generated
    or paid for."""
    metrics = dataclasses.replace(
        answer.metrics, retrieval_ms=0.0, rerank_ms=0.0, generation_ms=0.0, total_ms=elapsed_ms, prompt_tokens=0,
        completion_tokens=0, cost_usd=0.0, cache_hit=True, retrieval=Timings(),
    )
    return dataclasses.replace(answer, metrics=metrics, features=[*answer.features, found_by])


def _marked_clamped(answer: Answer) -> Answer:
    """Says that this request's max_tokens was cut to the server's limit (not
    kept in the cache: another request for the same answer may not have asked for more)."""
    return dataclasses.replace(answer, features=[*answer.features, MAX_TOKENS_CLAMPED])


class Answerer:
    def __init__(self, engine: RagEngine, generator: Generator, config: AnsweringConfig,
                 cache: AnswerCache | None = None) -> None:
        self.engine = engine
        self.generator = generator
        self.config = config
        self.cache = cache

    async def answer(self, scope: Scope, question: str, options: QueryOptions, use_cache: bool = True) -> Answer:
        async for event in self.stream(scope, question, options, use_cache):
            if isinstance(event, Answer):
                return event
        raise AssertionError("a stream always ends with its Answer")

    async def stream(self, scope: Scope, question: str, options: QueryOptions,
                     use_cache: bool = True) -> AsyncIterator[str | Answer]:
        """The answer's text in pieces, then the whole Answer."""
        started = time.perf_counter()
        question = question.strip()
        if not question:
            raise InvalidArgument("is required", field="query")
        self.config.limits.check_model(options.model)
        max_tokens, clamped = self.config.limits.clamp(options.max_tokens)
        options = dataclasses.replace(options, max_tokens=max_tokens)
        lookup = None
        if self.cache and use_cache:
            with tracer.start_as_current_span("rag.cache_lookup") as span:
                lookup = await self.cache.lookup(scope, question, options)
                span.set_attribute("hit", bool(lookup.answer))
                span.set_attribute("found_by", lookup.found_by if lookup.answer else "")
            record_cache_lookup(hit=bool(lookup.answer))
        if lookup and lookup.answer:
            yield lookup.answer.text
            served = _served_from_cache(lookup.answer, lookup.found_by, ms_since(started))
            yield _marked_clamped(served) if clamped else served
            return
        history = recent_history(options.history, self.config.history_tokens)
        results, timings = await self.engine.retrieve(
            scope, with_context(question, history), options.top_k or self.config.default_top_k,
            options.filters, options.weights, options.use_rerank,
        )
        sources = build_context(results, self.config.context_tokens)
        generation_started = time.perf_counter()
        usage = Usage(model="none")
        pieces: list[str] = []
        # Not made current: the pieces are yielded from inside it, and the
        # caller's code between two of them is not part of generating.
        span = tracer.start_span("rag.generate", attributes={"generator": self.generator.name,
                                                             "sources": len(sources)})
        try:
            if not sources:
                pieces.append(not_found_message(question))
                yield pieces[-1]
            else:
                citations = CitationFilter(len(sources))
                request = GenerationRequest(
                    question, [Passage(s.number, s.text, s.ranked.chunk.title) for s in sources], history,
                    options.model, options.temperature, options.max_tokens,
                )
                async for event in self.generator.stream(request):
                    if isinstance(event, Usage):
                        usage = event
                    elif piece := citations.feed(event):
                        pieces.append(piece)
                        yield piece
                if tail := citations.flush():
                    pieces.append(tail)
                    yield tail
        except Exception as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
            raise
        finally:
            span.set_attributes({"model": usage.model, "prompt_tokens": usage.prompt_tokens,
                                 "completion_tokens": usage.completion_tokens})
            span.end()
        generation_ms = ms_since(generation_started)
        answer = Answer(
            text="".join(pieces).strip(),
            sources=sources,
            metrics=AnswerMetrics(
                retrieval_ms=timings.total_ms - timings.rerank_ms, rerank_ms=timings.rerank_ms,
                generation_ms=generation_ms, total_ms=ms_since(started), prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=cost_usd(self.config.prices, usage.model, usage.prompt_tokens, usage.completion_tokens),
                generator=usage.model or self.generator.name, retrieval=timings,
            ),
            features=self._features(options, history, usage),
        )
        record_answer(answer.metrics)
        if lookup:
            await self.cache.keep(lookup, question, answer)
        yield _marked_clamped(answer) if clamped else answer

    def _features(self, options: QueryOptions, history: Sequence[Turn], usage: Usage) -> list[str]:
        vector, bm25 = options.weights
        features = ["hybrid" if vector and bm25 else "vector" if vector else "bm25"]
        features += [name for name, used in (("rerank", options.use_rerank), ("filters", bool(options.filters)),
                                             ("history", bool(history))) if used]
        features.append(f"generator:{self.generator.name}" if usage.model != "none" else "generator:none")
        return features
