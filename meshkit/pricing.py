"""What a model call cost, from a price table that the operator configures
(models move too fast for a built-in one)."""

from __future__ import annotations

from collections.abc import Mapping

# USD per million prompt and completion tokens, by model name.
Prices = Mapping[str, tuple[float, float]]


def cost_usd(prices: Prices, model: str, prompt_tokens: int, completion_tokens: int) -> float:
    prompt_price, completion_price = prices.get(model, (0.0, 0.0))
    return (prompt_tokens * prompt_price + completion_tokens * completion_price) / 1e6
