"""One POST to a model server (embeddings, rerank, reasoning), with the failures that are
worth retrying told apart from the ones that are not."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from meshkit.errors import Unavailable

log = logging.getLogger(__name__)


async def post_json(client: httpx.AsyncClient, url: str, payload: dict[str, Any], service: str,
                    refused: type[Exception]) -> Any:
    """The decoded JSON body of a 200 answer. Unreachable, overloaded (429) or
    failing (5xx): Unavailable, so callers retry. Any other answer: `refused`,
    with what the server said."""
    try:
        response = await client.post(url, json=payload)
    except httpx.TransportError as error:  # includes timeouts
        log.warning("%s %s unreachable: %r", service, url, error)
        raise Unavailable(f"the {service} is unavailable") from error
    if response.status_code >= 500 or response.status_code == 429:
        log.warning("%s %s answered %s: %.500s", service, url, response.status_code, response.text)
        raise Unavailable(f"the {service} is unavailable")
    if response.status_code != 200:
        raise refused(f"{service} {url} answered {response.status_code}: {response.text[:500]}")
    try:
        return response.json()
    except ValueError as error:
        raise refused(f"{service} {url} answered a body that is not JSON: {response.text[:500]}") from error
