"""Lists of ids in requests, read the same way by every service."""

from __future__ import annotations

from collections.abc import Iterable

from meshkit.errors import InvalidArgument

# Knowledge bases one request may name: each adds to the scope filter every index evaluates.
MAX_KNOWLEDGE_BASES = 20


def knowledge_base_ids(values: Iterable[str], field: str = "kb_ids") -> tuple[str, ...]:
    """The distinct non-blank ids, in the order given; more than MAX_KNOWLEDGE_BASES is refused."""
    unique = tuple(dict.fromkeys(value.strip() for value in values if value.strip()))
    if len(unique) > MAX_KNOWLEDGE_BASES:
        raise InvalidArgument(f"at most {MAX_KNOWLEDGE_BASES} knowledge bases", field=field)
    return unique
