"""Metadata filters: equality, any-of, and numeric ranges on chunk metadata.

Metadata values arrive as strings; numbers are stored as numbers so that
ranges compare numerically, and filter values are normalised the same way so
that equality matches either way ("2023" equals 2023).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from meshkit.errors import InvalidArgument

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def typed(value: str | float | int | bool):
    """A metadata value as stored: numbers as numbers, everything else as text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else str(value)
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number):
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


@dataclass(frozen=True)
class Equals:
    field: str
    value: object


@dataclass(frozen=True)
class AnyOf:
    field: str
    values: tuple


@dataclass(frozen=True)
class Range:
    field: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


Filter = Equals | AnyOf | Range


def check_field(name: str) -> str:
    if not _FIELD.match(name):
        raise InvalidArgument(f"filter field {name!r} must be a metadata key (letters, digits, _ . -)", field="filters")
    return name


def milvus_expression(filters: list[Filter], json_field: str = "metadata") -> str:
    """The Milvus boolean expression matching all filters (values JSON-quoted)."""
    clauses = []
    for condition in filters:
        target = f'{json_field}[{json.dumps(condition.field)}]'
        if isinstance(condition, Equals):
            clauses.append(f"{target} == {json.dumps(condition.value)}")
        elif isinstance(condition, AnyOf):
            # Milvus takes `in` on fields only, not on JSON paths.
            clauses.append(" or ".join(f"{target} == {json.dumps(v)}" for v in condition.values))
        else:
            for op, bound in ((">", condition.gt), (">=", condition.gte), ("<", condition.lt), ("<=", condition.lte)):
                if bound is not None:
                    clauses.append(f"{target} {op} {bound!r}")
    return " and ".join(f"({c})" for c in clauses)


def _number(value) -> float | None:
    return None if isinstance(value, (bool, str)) or value is None else float(value)


def matches(condition: Filter, metadata: Mapping[str, object]) -> bool:
    """Whether stored metadata (as `typed` stored it) passes one filter: the
    same answer Milvus gives for milvus_expression()."""
    if condition.field not in metadata:
        return False
    value = metadata[condition.field]
    if isinstance(condition, Equals):
        return value == condition.value
    if isinstance(condition, AnyOf):
        return any(value == v for v in condition.values)
    number = _number(value)
    if number is None:
        return False
    return ((condition.gt is None or number > condition.gt) and (condition.gte is None or number >= condition.gte)
            and (condition.lt is None or number < condition.lt) and (condition.lte is None or number <= condition.lte))


# A first look at 4x the hits wanted, 4x more each time too few pass.
OVERFETCH = 4


async def post_filtered(
    search: Callable[[int], Awaitable[list[tuple[str, float]]]],
    passing: Callable[[list[str]], Awaitable[set[str]]],
    wanted: int,
    most: int,
) -> list[tuple[str, float]]:
    """The best `wanted` hits that pass the filters, found by searching
    without them and checking the hits: for an index that cannot filter on
    metadata quickly itself. Exact unless fewer than `wanted` pass among the
    best `most` hits."""
    checked: dict[str, bool] = {}
    fetch = min(wanted * OVERFETCH, most)
    while True:
        hits = await search(fetch)
        unchecked = [chunk_id for chunk_id, _ in hits if chunk_id not in checked]
        if unchecked:
            passed = await passing(unchecked)
            checked.update((chunk_id, chunk_id in passed) for chunk_id in unchecked)
        kept = [hit for hit in hits if checked[hit[0]]]
        if len(kept) >= wanted or len(hits) < fetch or fetch >= most:
            return kept[:wanted]
        fetch = min(fetch * OVERFETCH, most)


def matches_all(filters: Sequence[Filter], metadata: Mapping[str, object]) -> bool:
    return all(matches(condition, metadata) for condition in filters)
