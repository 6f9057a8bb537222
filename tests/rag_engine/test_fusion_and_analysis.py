"""Fusion, text analysis and filter expressions: small, hand-checkable cases."""

from __future__ import annotations

import pytest

from services.rag_engine.analysis import terms
from services.rag_engine.filters import AnyOf, Equals, Range, milvus_expression, post_filtered, typed
from services.rag_engine.fusion import normalise, reciprocal_rank_fusion


def test_rrf_scores_by_hand():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "d"]], k=60)
    scores = {f.key: f.score for f in fused}
    # Equal weights normalise to 0.5 each.
    assert scores["a"] == pytest.approx(0.5 / 61)
    assert scores["c"] == pytest.approx(0.5 / 63 + 0.5 / 61)
    assert scores["d"] == pytest.approx(0.5 / 62)
    assert [f.key for f in fused] == ["c", "a", "b", "d"]
    assert {f.key: f.ranks for f in fused} == {"a": [1, 0], "b": [2, 0], "c": [3, 1], "d": [0, 2]}


def test_rrf_weights_shift_the_order():
    vector, bm25 = ["v1", "both"], ["k1", "both"]
    assert reciprocal_rank_fusion([vector, bm25], [1, 0])[0].key == "v1"
    assert reciprocal_rank_fusion([vector, bm25], [0, 1])[0].key == "k1"
    # Weights are normalised: 3:1 is the same as 0.75:0.25.
    a = reciprocal_rank_fusion([vector, bm25], [3, 1])
    b = reciprocal_rank_fusion([vector, bm25], [0.75, 0.25])
    assert [(f.key, round(f.score, 12)) for f in a] == [(f.key, round(f.score, 12)) for f in b]


def test_rrf_k_controls_how_fast_rank_matters():
    # x tops one list; m is 4th in both. x wins when 0.5/(k+1) > 1/(k+4), i.e. k < 2.
    lists = [["x", "a", "b", "m"], ["y", "c", "d", "m"]]
    assert reciprocal_rank_fusion(lists, k=1)[0].key in ("x", "y")
    assert reciprocal_rank_fusion(lists, k=1000)[0].key == "m"


def test_weights_must_not_be_negative():
    with pytest.raises(ValueError):
        normalise([-1, 2])
    assert normalise([0, 0]) == [0.5, 0.5]


def test_english_is_stemmed_and_stop_words_dropped():
    assert terms("The runners were running in the races") == ["runner", "were", "run", "race"]


def test_chinese_is_segmented_with_sub_words_and_mixed_text_works():
    chinese = terms("北京大学的研究")
    assert {"北京", "大学", "北京大学", "研究"} <= set(chinese) and "的" not in chinese
    mixed = terms("GDP 增长率 rose")
    assert {"gdp", "增长率", "增长", "rose"} <= set(mixed)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [("2023", 2023), ("3.5", 3.5), ("abc", "abc"), ("", ""), ("nan", "nan"), ("1e3", 1000.0), (True, "true")],
)
def test_metadata_values_are_typed(raw, stored):
    assert typed(raw) == stored and type(typed(raw)) is type(stored)


def test_milvus_expression_quotes_values_and_keys():
    expression = milvus_expression([
        Equals("lang", 'en" or 1==1'), AnyOf("year", (2022, 2023)), Range("score", gte=1.5, lt=3.0),
    ])
    assert expression == (
        '(metadata["lang"] == "en\\" or 1==1") and (metadata["year"] == 2022 or metadata["year"] == 2023) '
        'and (metadata["score"] >= 1.5) and (metadata["score"] < 3.0)'
    )


async def test_post_filtering_widens_until_enough_hits_pass():
    ranked = [(f"c{i}", 1.0 - i / 1000) for i in range(1000)]
    fetches, checked = [], []

    async def search(fetch):
        fetches.append(fetch)
        return ranked[:fetch]

    async def passing(ids):
        checked.extend(ids)
        return {chunk_id for chunk_id in ids if int(chunk_id[1:]) % 50 == 0}  # 1 in 50 passes

    hits = await post_filtered(search, passing, wanted=5, most=10_000)
    assert [chunk_id for chunk_id, _ in hits] == ["c0", "c50", "c100", "c150", "c200"]
    assert fetches == [20, 80, 320]
    assert len(checked) == len(set(checked)) == 320  # each hit is checked once


async def test_post_filtering_stops_at_its_limit_or_when_the_index_runs_out():
    ranked = [(f"c{i}", 1.0) for i in range(30)]

    async def search(fetch):
        return ranked[:fetch]

    async def nothing_passes(ids):
        return set()

    async def odd_ones(ids):
        return {chunk_id for chunk_id in ids if int(chunk_id[1:]) % 2}

    assert await post_filtered(search, nothing_passes, wanted=10, most=10_000) == []
    assert len(await post_filtered(search, odd_ones, wanted=10, most=12)) == 6
