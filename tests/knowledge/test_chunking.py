"""Chunking with the embedding model's real tokenizer: packing, heading paths
and pages, sentence and word cuts with overlap, Chinese text, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.knowledge.chunking import ChunkingSettings, ChunkText, TokenizerCounter, chunk_document
from services.knowledge.parsers import ParsedDocument, Section

TOKENIZER = Path(__file__).resolve().parents[2] / "models" / "all-minilm-l6-v2" / "tokenizer.json"
# One token each in MiniLM's vocabulary.
WORDS = (
    "the of and to in is was for on with as by at from it that this are be or have an not but which they one all "
    "were there can has more their will other when time about into only some new would these first people after "
    "also two years over most such where what who many made between then them world well use"
).split()
CHINESE_SENTENCES = [
    "知识库把上传的文档切成小段，再交给检索引擎建立索引。",
    "每一段都记录它所在的标题和页码，回答问题时可以准确引用出处！",
    "中文句子之间没有空格，所以只能在句号、问号和感叹号之后切开？",
    "切分不会落在一个汉字的中间，也不会丢掉任何文字。",
    "生僻字𠀀和表情😀也必须完整保留。",
    "相邻的两段会重复一小部分内容，让被切开的上下文仍然连在一起。",
    "同一份文档每次切分的结果都完全相同，重新索引时才能替换旧的段落。",
    "速度同样重要：一千份文档需要在很短的时间内处理完毕！",
]


@pytest.fixture(scope="module")
def counter() -> TokenizerCounter:
    return TokenizerCounter(TOKENIZER)


def chunked(counter: TokenizerCounter, sections: list[Section], max_tokens: int = 200,
            overlap_tokens: int = 30) -> list[ChunkText]:
    """The document's chunks, checked for what must hold of any document's."""
    chunks = chunk_document(ParsedDocument("Title", sections), ChunkingSettings(max_tokens, overlap_tokens), counter)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text and chunk.text == chunk.text.strip()
        assert chunk.token_count == counter.count(chunk.text) <= max_tokens
    return chunks


def located(source: str, chunks: list[ChunkText]) -> list[tuple[int, int]]:
    """Each chunk's span in source, checking that the chunks are pieces of it,
    in order, that together cover it."""
    spans, search_from = [], 0
    for chunk in chunks:
        start = source.find(chunk.text, search_from)
        assert start >= 0, f"not in the source (after {search_from}): {chunk.text!r}"
        spans.append((start, start + len(chunk.text)))
        search_from = start + 1
    assert spans[0][0] == 0 and spans[-1][1] == len(source)
    for (start_before, end), (start, end_after) in zip(spans, spans[1:]):
        assert not source[end:start].strip(), f"left out: {source[end:start]!r}"
        assert start > start_before and end_after > end, "a chunk brings nothing new"
    return spans


def overlaps(source: str, chunks: list[ChunkText]) -> list[str]:
    """What each chunk shares with the one before, checking as located() does."""
    spans = located(source, chunks)
    return [source[start:end] for (_, end), (start, _) in zip(spans, spans[1:])]


def paragraph(tokens: int, seed: int) -> str:
    # tokens - 1 one-token words and a full stop.
    return " ".join(WORDS[(seed * 7 + k) % len(WORDS)] for k in range(tokens - 1)) + "."


def test_sections_are_packed_while_they_fit_and_never_split(counter):
    sizes = [40, 40, 20, 60, 100, 30, 80]
    paragraphs = [paragraph(size, seed) for seed, size in enumerate(sizes)]
    assert [counter.count(p) for p in paragraphs] == sizes
    chunks = chunked(counter, [Section(p, ("Guide",)) for p in paragraphs], max_tokens=100, overlap_tokens=10)
    groups = [[0, 1, 2], [3], [4], [5], [6]]
    assert [c.text for c in chunks] == ["\n\n".join(paragraphs[i] for i in group) for group in groups]
    assert [c.token_count for c in chunks] == [100, 60, 100, 30, 80]


def test_a_new_heading_path_or_page_starts_a_new_chunk(counter):
    chunks = chunked(counter, [
        Section("Alpha one.", ("Guide", "Intro"), page=1),
        Section("  \n ", ("Guide", "Intro"), page=1),
        Section("Alpha two.", ("Guide", "Intro"), page=1),
        Section("Alpha three.", ("Guide", "Intro"), page=2),
        Section("Beta one.", ("Guide", "Setup"), page=2),
        Section("Beta two.", ("Guide", "Setup"), page=2),
        Section("Gamma.", ("Setup",), page=2),
        Section("Alpha four.", ("Guide", "Intro"), page=3),
    ])
    assert [(c.text, c.headings, c.page) for c in chunks] == [
        ("Alpha one.\n\nAlpha two.", ("Guide", "Intro"), 1),
        ("Alpha three.", ("Guide", "Intro"), 2),
        ("Beta one.\n\nBeta two.", ("Guide", "Setup"), 2),
        ("Gamma.", ("Setup",), 2),
        ("Alpha four.", ("Guide", "Intro"), 3),
    ]
    assert [c.location for c in chunks] == ["page 1", "page 2", "page 2", "page 2", "page 3"]


def test_a_new_location_starts_a_new_chunk_and_names_where_it_is(counter):
    # Two slides with the same title, a sheet, and an e-mail's attachment: never one chunk.
    chunks = chunked(counter, [
        Section("Agenda one.", ("Agenda",), location="slide 1"),
        Section("Agenda two.", ("Agenda",), location="slide 2"),
        Section("| a |", ("Budget",), location="sheet Budget"),
        Section("Offer text.", location="attachment offer.pdf, page 1", page=1),
        Section("Body text."),
        Section("More body text."),
    ])
    assert [(c.text, c.location) for c in chunks] == [
        ("Agenda one.", "slide 1"), ("Agenda two.", "slide 2"), ("| a |", "sheet Budget"),
        ("Offer text.", "attachment offer.pdf, page 1"), ("Body text.\n\nMore body text.", "")]


def test_a_long_paragraph_is_cut_at_sentence_ends_with_whole_sentences_overlapping(counter):
    sentences = [f"Line {i} says {paragraph(8 + i % 5, i)}" for i in range(30)]
    long = " ".join(sentences)
    assert all(10 <= counter.count(s) <= 16 for s in sentences)
    chunks = chunked(counter, [Section("Before it.", ("H",)), Section(long, ("H",), page=7),
                               Section("After it.", ("H",))], max_tokens=60, overlap_tokens=20)
    assert chunks[0].text == "Before it." and chunks[-1].text == "After it."
    pieces = chunks[1:-1]
    assert len(pieces) >= 6
    assert all(p.page == 7 and p.headings == ("H",) for p in pieces)
    assert all(p.text.startswith("Line ") and p.text.endswith(".") for p in pieces)
    for shared, before, after in zip(overlaps(long, pieces), pieces, pieces[1:]):
        assert shared and before.text.endswith(shared) and after.text.startswith(shared)
        assert shared.startswith("Line ") and shared.endswith(".")
        assert counter.count(shared) <= 20


def test_a_sentence_that_fits_a_chunk_is_never_cut(counter):
    # A short sentence before a long one makes a short piece rather than cut the long one.
    sentences = [f"Line {i} says {paragraph(size - 3, i)}" for i, size in enumerate([8, 55, 9, 56, 7, 50])]
    text = " ".join(sentences)
    chunks = chunked(counter, [Section(text)], max_tokens=60, overlap_tokens=20)
    overlaps(text, chunks)
    assert all(any(s in c.text for c in chunks) for s in sentences)


def test_a_sentence_longer_than_a_chunk_is_cut_between_words(counter):
    # Every fifth word is one of 9 or 10 tokens, which must not be cut either; brackets stay with their word.
    sentence = " ".join(f"antidisestablishmentarianism{i}" if i % 5 == 0 else f"(item{i})" if i % 3 == 0
                        else f"item{i}" for i in range(400))
    chunks = chunked(counter, [Section(sentence)], max_tokens=50, overlap_tokens=10)
    assert len(chunks) > counter.count(sentence) // 50
    for shared in overlaps(sentence, chunks):
        assert shared and 0 < counter.count(shared) <= 10
    for start, end in located(sentence, chunks):
        assert (start == 0 or sentence[start - 1] == " ") and (end == len(sentence) or sentence[end] == " ")


def test_a_long_sentence_is_cut_as_late_as_a_word_allows(counter):
    words = [f"item{i}" for i in range(10, 31)] + ["antidisestablishmentarianism10"] + [
        f"item{i}" for i in range(31, 99)]
    assert [counter.count(w) for w in words[:23]] == [2] * 21 + [9, 2]
    sentence = " ".join(words)
    chunks = chunked(counter, [Section(sentence)], max_tokens=50, overlap_tokens=10)
    # The long word would cross the budget: it is left whole to the next chunk,
    # which begins with the longest overlap of whole words and is filled up.
    assert chunks[0].text == " ".join(words[:21])
    assert chunks[1].text == " ".join(words[16:37])
    assert chunks[1].token_count == 49


def test_an_overlap_never_begins_inside_a_word_longer_than_it(counter):
    # Words of 9 or 10 tokens, an overlap of 4: where a piece ends after one, it has no overlap.
    sentence = " ".join(f"antidisestablishmentarianism{i}" for i in range(100))
    chunks = chunked(counter, [Section(sentence)], max_tokens=50, overlap_tokens=4)
    for start, end in located(sentence, chunks):
        assert (start == 0 or sentence[start - 1] == " ") and (end == len(sentence) or sentence[end] == " ")


def test_a_word_longer_than_a_chunk_is_cut_between_its_tokens(counter):
    # Their pieces, tokenized on their own, count more or fewer than where they were.
    long_words = ["".join(str(i) for i in range(60))[:100],
                  "internationalizationdocumentationcharacteristically"
                  "incomprehensibilitiesantidisestablishmentarianism"]
    text = f"digits {long_words[0]} and {long_words[1]} end"
    assert all(counter.count(word) > 16 for word in long_words)
    # Budgets that put the cuts in different places.
    for max_tokens in range(16, 22):
        chunks = chunked(counter, [Section(text)], max_tokens=max_tokens, overlap_tokens=4)
        assert len(chunks) >= 5
        located(text, chunks)


def test_chinese_is_cut_after_full_stops_and_between_characters(counter):
    text = "".join(CHINESE_SENTENCES)
    assert counter.count(text) == len(text)  # a token per character: the budget is in characters here
    chunks = chunked(counter, [Section(text)], max_tokens=40, overlap_tokens=10)
    assert len(chunks) >= 5
    assert all(c.text[-1] in "。！？" for c in chunks)
    for shared in overlaps(text, chunks):
        assert counter.count(shared) <= 10
    assert any("生僻字𠀀和表情😀" in c.text for c in chunks)


def test_a_long_chinese_sentence_is_cut_after_commas(counter):
    clauses = ["".join(chr(0x4E00 + 5 * i + j) for j in range(5)) for i in range(40)]
    text = "，".join(clauses) + "。"
    chunks = chunked(counter, [Section(text)], max_tokens=50, overlap_tokens=10)
    assert len(chunks) >= 5
    assert all(c.text.endswith("，") for c in chunks[:-1])
    assert all(shared for shared in overlaps(text, chunks))


@pytest.mark.parametrize(("max_tokens", "overlap_tokens", "message"), [
    (15, 0, "max_tokens must be at least 16"),
    (200, -1, "overlap_tokens must be at least 0 and under half"),
    (200, 100, "overlap_tokens must be at least 0 and under half"),
    (16, 8, "overlap_tokens must be at least 0 and under half"),
])
def test_settings_out_of_range_are_refused(max_tokens, overlap_tokens, message):
    with pytest.raises(ValueError, match=message):
        ChunkingSettings(max_tokens, overlap_tokens)


def test_smallest_settings_are_accepted():
    assert ChunkingSettings(16, 7) == ChunkingSettings(max_tokens=16, overlap_tokens=7)


def test_chunking_is_deterministic(counter):
    document = ParsedDocument("Mixed", [
        Section(paragraph(30, 1), ("A",), 1),
        Section(" ".join(f"Line {i} says {paragraph(12, i)}" for i in range(40)), ("A",), 1),
        Section("".join(CHINESE_SENTENCES * 3), ("A", "B"), 2),
        Section(paragraph(20, 2), ("A", "B"), 3),
    ])
    settings = ChunkingSettings(64, 16)
    first = chunk_document(document, settings, counter)
    assert len(first) > 10
    assert chunk_document(document, settings, TokenizerCounter(TOKENIZER)) == first


def test_an_empty_document_has_no_chunks(counter):
    assert chunked(counter, []) == []
    assert chunked(counter, [Section(" \n\t ")]) == []
