"""The offline default generator: answers with the retrieved passages' own
sentences, the ones that best support the question, each cited.

It writes nothing the passages do not say, needs no model and no network,
and answers in milliseconds. A sentence is scored by the question terms it
contains, weighted by how rare each is among the passages' sentences (BM25's
saturation and length normalisation), a little less for passages ranked
lower. When even the best sentence holds too little of the question, the
answer says the documents do not answer it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from services.rag_engine.analysis import terms
from services.rag_engine.generation import (
    GenerationEvent,
    GenerationRequest,
    Passage,
    Usage,
    estimate_tokens,
    with_context,
)

# Sentence ends: . ! ? before whitespace; Chinese marks anywhere; line breaks.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?<=[。！？])|\n+")
_CJK = re.compile(r"[\u3400-\u9fff]")
_WORDS = re.compile(r"\S+\s*")
# Words that shape a question but say nothing of its subject.
_QUESTION_TERMS = frozenset(terms(
    "what which who whom whose when where why how do does did can could should would much many "
    "i you we me my our your please tell about"
))
K1, B = 1.2, 0.75
# The best sentence must hold this share of the question's term weight.
MIN_COVERAGE = 0.3
MAX_SENTENCES = 3
MAX_ANSWER_WORDS = 120
# Two sentences sharing this share of their terms say the same thing.
NEAR_DUPLICATE = 0.8
NOT_FOUND = "The documents I searched do not answer this question."
NOT_FOUND_ZH = "我检索到的文档中没有这个问题的答案。"


@dataclass(frozen=True)
class _Sentence:
    passage: Passage
    position: int
    text: str
    terms: Counter


def _sentences(passage: Passage) -> list[_Sentence]:
    parts = (p.strip() for p in _SENTENCE_END.split(passage.text))
    return [_Sentence(passage, i, part, Counter(terms(part))) for i, part in enumerate(p for p in parts if p)]


def not_found_message(question: str) -> str:
    return NOT_FOUND_ZH if _CJK.search(question) else NOT_FOUND


def compose(question: str, passages: Sequence[Passage]) -> str:
    """The answer: the best-supported sentences in document order, each
    followed by its passage's citation, or the not-found message."""
    wanted = {t for t in terms(question) if t not in _QUESTION_TERMS} or set(terms(question))
    sentences = [s for p in passages for s in _sentences(p) if s.terms]
    if not wanted or not sentences:
        return not_found_message(question)
    document_frequency = Counter(t for s in sentences for t in set(s.terms) if t in wanted)
    idf = {t: math.log(1 + (len(sentences) - df + 0.5) / (df + 0.5)) for t, df in document_frequency.items()}
    question_weight = sum(idf.get(t, math.log(1 + len(sentences) + 0.5)) for t in wanted)
    average_length = sum(sum(s.terms.values()) for s in sentences) / len(sentences)

    def score(sentence: _Sentence) -> float:
        length = sum(sentence.terms.values())
        bm25 = sum(idf[t] * sentence.terms[t] * (K1 + 1)
                   / (sentence.terms[t] + K1 * (1 - B + B * length / average_length))
                   for t in wanted if t in sentence.terms)
        return bm25 / (1 + 0.1 * (sentence.passage.number - 1))

    def coverage(sentence: _Sentence) -> float:
        return sum(idf[t] for t in wanted if t in sentence.terms) / question_weight

    ranked = sorted(sentences, key=lambda s: (-score(s), s.passage.number, s.position))
    if coverage(ranked[0]) < MIN_COVERAGE:
        return not_found_message(question)
    chosen: list[_Sentence] = []
    words = 0
    for sentence in ranked:
        if len(chosen) == MAX_SENTENCES or score(sentence) <= 0:
            break
        if any(_overlap(sentence, other) >= NEAR_DUPLICATE for other in chosen):
            continue
        length = len(sentence.text.split())
        if chosen and words + length > MAX_ANSWER_WORDS:
            continue
        chosen.append(sentence)
        words += length
    chosen.sort(key=lambda s: (s.passage.number, s.position))
    return " ".join(f"{s.text} [{s.passage.number}]" for s in chosen)


def _overlap(a: _Sentence, b: _Sentence) -> float:
    shared = set(a.terms) & set(b.terms)
    return len(shared) / max(1, min(len(a.terms), len(b.terms)))


class ExtractiveGenerator:
    name = "extractive"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        answer = compose(request.question, request.passages)
        if answer == not_found_message(request.question) and request.history:
            # A follow-up ("by how much?") may name its subject only in the turn before.
            answer = compose(with_context(request.question, request.history), request.passages)
        # Word by word, as a model would write it, so clients meet one kind of stream.
        for piece in _WORDS.findall(answer) if not _CJK.search(answer) else [answer]:
            yield piece
        read = request.question + "".join(p.text for p in request.passages)
        yield Usage(prompt_tokens=estimate_tokens(read), completion_tokens=estimate_tokens(answer),
                    model=self.name)

    async def close(self) -> None:
        return None
