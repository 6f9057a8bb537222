"""Weighted reciprocal rank fusion (Cormack et al., 2009).

score(d) = sum over lists i of  w_i / (k + rank_i(d)),  ranks from 1,
with the weights normalised to sum to 1. A document absent from a list gets
nothing from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_K = 60


@dataclass
class Fused:
    key: str
    score: float
    # 1-based rank in each input list; 0 where absent.
    ranks: list[int] = field(default_factory=list)


def normalise(weights: Sequence[float]) -> list[float]:
    if any(w < 0 for w in weights):
        raise ValueError("fusion weights must not be negative")
    total = sum(weights)
    if total == 0:
        return [1 / len(weights)] * len(weights)
    return [w / total for w in weights]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], weights: Sequence[float] | None = None, k: int = DEFAULT_K
) -> list[Fused]:
    weights = normalise(weights or [1.0] * len(rankings))
    fused: dict[str, Fused] = {}
    for list_index, (ranking, weight) in enumerate(zip(rankings, weights)):
        for rank, key in enumerate(ranking, start=1):
            entry = fused.get(key)
            if entry is None:
                entry = fused[key] = Fused(key, 0.0, [0] * len(rankings))
            if entry.ranks[list_index]:
                continue  # a key listed twice counts at its best rank
            entry.ranks[list_index] = rank
            entry.score += weight / (k + rank)
    # Ties keep the order of first appearance, which favours earlier lists.
    return sorted(fused.values(), key=lambda f: -f.score)
