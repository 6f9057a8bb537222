"""A request's query string as (name, value) pairs, within the gateway's limits.

It is read before authentication, so its size, its number of parameters and
each name's length and depth are bounded before any name is looked at.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from gateway.transcode import split_field_path
from meshkit.errors import InvalidArgument


@dataclass(frozen=True)
class QueryLimits:
    max_bytes: int
    max_parameters: int
    max_name_length: int
    # Parts of a dotted name (`a.b.c` has 3).
    max_name_depth: int


def query_parameters(query_string: bytes, limits: QueryLimits) -> list[tuple[str, str]]:
    if len(query_string) > limits.max_bytes:
        raise InvalidArgument(f"query string over the {limits.max_bytes}-byte limit")
    try:
        # As Starlette reads it; parse_qsl stops counting at the limit instead of splitting everything.
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True,
                          max_num_fields=limits.max_parameters)
    except ValueError:
        raise InvalidArgument(f"more than {limits.max_parameters} query parameters") from None
    for name, _ in pairs:
        if len(name) > limits.max_name_length:
            raise InvalidArgument(
                f"query parameter name {name[:40]!r}... over the {limits.max_name_length}-character limit"
            )
        if len(split_field_path(name)) > limits.max_name_depth:
            raise InvalidArgument(f"query parameter {name!r} nests deeper than {limits.max_name_depth} fields")
    return pairs
