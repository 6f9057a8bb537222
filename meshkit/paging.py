"""Page tokens for list RPCs (AIP-158): opaque to callers, they carry the
sort key of the last item returned, so a page is a range scan, not an offset."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from meshkit.errors import InvalidArgument

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
