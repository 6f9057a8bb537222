"""Page tokens for list RPCs (AIP-158): opaque to callers, they carry the
sort key of the last item returned, so a page is a range scan, not an offset."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from meshkit.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("must not be negative", field="page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(created_at: datetime, item_id: str) -> str:
    payload = json.dumps([created_at.isoformat(), item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_token(token: str) -> tuple[datetime, str] | None:
    """The position a page token names; None for the first page."""
    if not token:
        return None
    try:
        stamp, item_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return datetime.fromisoformat(stamp), str(item_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidArgument("is not a token this service issued", field="page_token") from None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str = ""


def page_of(items: list[T], size: int, sort_key: Callable[[T], tuple[datetime, str]]) -> Page[T]:
    """A page from `items`, fetched one past `size` to learn whether more follow."""
    if len(items) <= size:
        return Page(items)
    return Page(items[:size], encode_token(*sort_key(items[size - 1])))
