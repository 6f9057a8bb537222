"""Text -> BM25 terms, the same way for documents and queries.

English (and other Latin-script text): lower-cased words, English stop words
dropped, Snowball-stemmed. Chinese, Japanese kanji and other CJK runs: jieba's
search-mode segmentation, which also emits the shorter words inside long ones
so that a query for 大学 finds 北京大学.
"""

from __future__ import annotations

import re
import threading

import jieba
import Stemmer

_RUNS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[^\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Lucene's English stop words, the set BM25 baselines usually drop.
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)
# The commonest Chinese function words: they match nearly every passage.
CJK_STOP_WORDS = frozenset("的 了 是 在 和 与 及 或 也 都 就 而 之 其 这 那 个".split())
_stemmer = Stemmer.Stemmer("english")
_jieba_ready = threading.Lock()
_jieba_loaded = False


def _ensure_jieba() -> None:
    global _jieba_loaded
    with _jieba_ready:
        if not _jieba_loaded:
            jieba.setLogLevel(60)  # its dictionary-loading chatter is not ours to log
            jieba.initialize()
            _jieba_loaded = True


def terms(text: str) -> list[str]:
    out: list[str] = []
    words: list[str] = []
    for run in _RUNS.findall(text.lower()):
        if _CJK.match(run):
            _ensure_jieba()
            out.extend(t for t in jieba.cut_for_search(run) if t.strip() and t not in CJK_STOP_WORDS)
        elif run not in STOP_WORDS:
            words.append(run)
    out.extend(_stemmer.stemWords(words))
    return out
