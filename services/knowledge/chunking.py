"""Parsed documents -> chunks for retrieval, each within a token budget.

Chunks are what the rag_engine embeds (all-MiniLM-L6-v2 reads 256 tokens of a
passage and drops the rest) and what an answer cites, so they follow the
document's own blocks: consecutive sections under one heading path are packed
together while they fit the budget, a section is split only when it alone is
over it, and no chunk spans two heading paths or two pages, so that a citation
names the heading and page its text is under.

A section over the budget is cut at sentence ends (. ! ? before a space,
。！？… anywhere, line breaks); a sentence longer than a chunk between words,
preferring clause ends (, ; : ，；：、) and spaces near the budget's limit; a
word longer than a chunk between its tokens. Consecutive pieces of a section
overlap by up to `overlap_tokens`, whole trailing sentences where they fit,
so that what a cut separates is still read together once.

Each section is tokenized once, all of a document's in one batch; cutting
then works on token offsets alone, so the cost grows linearly with the text.
The same document and settings always give the same chunks.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tokenizers import Tokenizer

from services.knowledge.parsers import ParsedDocument, Section

# The embedding model's tokenizer, as `make models` writes it.
DEFAULT_TOKENIZER = Path("models/all-minilm-l6-v2/tokenizer.json")
# Fewer tokens than this hold too little of a sentence to be found by meaning.
MIN_MAX_TOKENS = 16
SECTION_SEPARATOR = "\n\n"

# How good a cut between two tokens is, worst first.
_INSIDE_WORD, _BETWEEN_WORDS, _AT_SPACE, _CLAUSE_END, _SENTENCE_END = range(5)
_CLOSERS = "\"'”’)\\]」』）"
# ASCII marks end a sentence only before a space (or Chinese text): 3.14,
# example.com and a.b stay whole. Full-width marks need no space after them.
_SENTENCE_ENDS = re.compile(rf"[.!?][{_CLOSERS}]*(?=\s|[\u3400-\u9fff])|[。！？…]+[{_CLOSERS}]*|\n")
_CLAUSE_ENDS = re.compile(rf"[,;:][{_CLOSERS}]*(?=\s)|[，；：、]")


class Tokens(Protocol):
    """One text's tokens, as a `tokenizers.Encoding` has them."""

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """Each token's span in the text, in characters (code points)."""

    @property
    def word_ids(self) -> list[int | None]:
        """Each token's word: the pieces of one word share it."""

    def __len__(self) -> int: ...


class TokenCounter(Protocol):
    """Counts the embedding model's tokens of a text, its special tokens left out.

    Chunking adds counts up instead of counting every candidate chunk again, so
    text cut between two words must count as much as its parts together. That
    holds for WordPiece (BERT) tokenizers, which split words at whitespace and
    punctuation and make every CJK character a word; inside a word it need not
    hold, and chunking counts such pieces again.
    """

    def count(self, text: str) -> int: ...

    def tokenize(self, texts: Sequence[str]) -> Sequence[Tokens]: ...


def tokenizer_file(path: Path) -> Path:
    """`path`, checked to be there: a missing tokenizer stops the service at start."""
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer at {path}; build the embedding model with `make models`")
    return path


class TokenizerCounter:
    """A TokenCounter over a HuggingFace tokenizer.json, by default the embedding model's."""

    def __init__(self, path: Path = DEFAULT_TOKENIZER) -> None:
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file(path)))
        # The file carries the model's input shape (MiniLM's: cut and padded to
        # 128 tokens), which would hide how long a text really is.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def tokenize(self, texts: Sequence[str]) -> list[Tokens]:
        return self._tokenizer.encode_batch(list(texts), add_special_tokens=False)


@dataclass(frozen=True)
class ChunkingSettings:
    # Tokens of text per chunk; the embedder adds its special tokens and the
    # document's title to these, so leave the model some room.
    max_tokens: int = 200
    # Tokens a cut section's piece repeats from the end of the piece before.
    overlap_tokens: int = 30

    def __post_init__(self) -> None:
        if self.max_tokens < MIN_MAX_TOKENS:
            raise ValueError(f"max_tokens must be at least {MIN_MAX_TOKENS}, not {self.max_tokens}")
        # Under half, so that every piece moves on by more than it repeats.
        if not 0 <= self.overlap_tokens < self.max_tokens / 2:
            raise ValueError(
                f"overlap_tokens must be at least 0 and under half of max_tokens ({self.max_tokens}), "
                f"not {self.overlap_tokens}"
            )


@dataclass(frozen=True)
class ChunkText:
    """One chunk, as the rag_engine indexes it."""

    text: str
    # The heading path and page of the chunk's sections.
    headings: tuple[str, ...]
    page: int
    # 0-based order in the document.
    position: int
    token_count: int
    # Where a citation of it points: "page 3", "slide 2", "sheet Budget" (Section.cited_as).
    location: str = ""


def chunk_document(document: ParsedDocument, settings: ChunkingSettings, counter: TokenCounter) -> list[ChunkText]:
    """The document's chunks, in order; sections of nothing but whitespace are left out."""
    return [
        ChunkText(text, section.headings, section.page, position, tokens, section.cited_as)
        for position, (section, text, tokens) in enumerate(_chunks(document, settings, counter))
    ]


def _chunks(document: ParsedDocument, settings: ChunkingSettings,
            counter: TokenCounter) -> Iterator[tuple[Section, str, int]]:
    """(first section, text, token count) of each chunk, in order."""
    sections = [(section, section.text.strip()) for section in document.sections]
    sections = [(section, text) for section, text in sections if text]
    packed: list[tuple[Section, str]] = []
    packed_tokens = 0
    for (section, text), tokens in zip(sections, counter.tokenize([text for _, text in sections])):
        count = len(tokens)
        if not count:
            continue  # nothing the model reads: control characters, say
        first = packed[0][0] if packed else None
        if first and (section.headings != first.headings or section.cited_as != first.cited_as
                      or packed_tokens + count > settings.max_tokens):
            # Tokens do not run across whitespace, so the joined text counts as its parts do.
            yield packed[0][0], SECTION_SEPARATOR.join(t for _, t in packed), packed_tokens
            packed, packed_tokens = [], 0
        if count > settings.max_tokens:
            for piece, piece_tokens in _LongSection(text, tokens, settings, counter).pieces():
                yield section, piece, piece_tokens
        else:
            packed.append((section, text))
            packed_tokens += count
    if packed:
        yield packed[0][0], SECTION_SEPARATOR.join(t for _, t in packed), packed_tokens


class _LongSection:
    """A section over the budget, cut into pieces by token index: boundary i
    lies before token i, 0 and len(tokens) at the ends."""

    def __init__(self, text: str, tokens: Tokens, settings: ChunkingSettings, counter: TokenCounter) -> None:
        self.text = text
        self.budget = settings.max_tokens
        self.overlap = settings.overlap_tokens
        self.counter = counter
        self.starts = [start for start, _ in tokens.offsets]
        self.words = tokens.word_ids
        self.size = len(self.starts)
        self.sentences = sorted(self._boundaries(_SENTENCE_ENDS))
        self.sentence_set = set(self.sentences)
        self.clauses = self._boundaries(_CLAUSE_ENDS)

    def pieces(self) -> Iterator[tuple[str, int]]:
        start = 0
        while True:
            end = self._end(start) if self.size - start > self.budget else self.size
            text, count, end = self._piece(start, end)
            yield text, count
            if end == self.size:
                return
            start = self._overlap_start(start, end)

    def _boundaries(self, pattern: re.Pattern[str]) -> set[int]:
        # A mark's boundary is before the first token after it.
        found = (bisect_left(self.starts, match.end()) for match in pattern.finditer(self.text))
        return {i for i in found if 0 < i < self.size}

    def _rank(self, i: int) -> int:
        if i in self.sentence_set:
            return _SENTENCE_END
        if i in self.clauses:
            return _CLAUSE_END
        if self.words[i] == self.words[i - 1]:
            return _INSIDE_WORD
        return _AT_SPACE if self.text[self.starts[i] - 1].isspace() else _BETWEEN_WORDS

    def _sentence_after(self, i: int) -> int:
        j = bisect_right(self.sentences, i)
        return self.sentences[j] if j < len(self.sentences) else self.size

    def _end(self, start: int) -> int:
        limit = start + self.budget
        # Pieces cut inside a sentence end past this, so that each one gets
        # further than the one before (the overlap is under half a budget).
        half = start + self.budget // 2
        j = bisect_right(self.sentences, limit) - 1
        if j >= 0 and self.sentences[j] > start:
            end = self.sentences[j]
            # A sentence that fits a chunk of its own is never cut; one that
            # does not is begun here if this piece would be under half full.
            if end > half or self._sentence_after(end) - end <= self.budget:
                return end
        near = max(half + 1, limit - max(1, self.budget // 8) + 1)
        end = max(range(near, limit + 1), key=lambda i: (self._rank(i), i))
        if self._rank(end) > _INSIDE_WORD:
            return end
        # A long word reaches past the limit: leave it whole to the next piece
        # if it began in this one's second half.
        return next((i for i in range(near - 1, half, -1) if self._rank(i) > _INSIDE_WORD), limit)

    def _overlap_start(self, start: int, end: int) -> int:
        cap = self.overlap
        following = self._sentence_after(end) - end
        if end in self.sentence_set and following <= self.budget:
            # Rather less overlap than cut the next sentence, which fits a chunk.
            cap = min(cap, self.budget - following)
        first = max(end - cap, start + 1)
        if cap <= 0 or first >= end:
            return end
        # The best boundary among overlaps of at least half the cap, the longest
        # of equals; else the longest shorter overlap that starts a word. When
        # one word covers all of it, the overlap begins inside that word only
        # if the piece already ends inside it, and is left out otherwise.
        enough = max(first, end - (cap + 1) // 2)
        best = max(range(first, enough + 1), key=lambda i: (self._rank(i), -i))
        if self._rank(best) > _INSIDE_WORD:
            return best
        fallback = first if self._inside_word(end) else end
        return next((i for i in range(enough + 1, end) if self._rank(i) > _INSIDE_WORD), fallback)

    def _piece(self, start: int, end: int) -> tuple[str, int, int]:
        """The piece's text, its token count and its end, moved back if the
        count would be over the budget."""
        count = end - start
        if self._inside_word(start) or self._inside_word(end):
            # Part of a word can tokenize differently on its own: count it.
            count = self.counter.count(self._text(start, end))
            while count > self.budget and end > start + 1:
                end = max(start + 1, end - (count - self.budget))
                count = self.counter.count(self._text(start, end))
        return self._text(start, end), count, end

    def _inside_word(self, i: int) -> bool:
        return 0 < i < self.size and self.words[i] == self.words[i - 1]

    def _text(self, start: int, end: int) -> str:
        # Cuts fall before a token, so the whitespace between pieces goes to the
        # piece before, to be stripped there.
        first = self.starts[start] if start else 0
        last = self.starts[end] if end < self.size else len(self.text)
        return self.text[first:last].strip()
