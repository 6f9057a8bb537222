"""One POST to a model server (embeddings, rerank, reasoning), with the failures that are
worth retrying told apart from the ones that are not. What the server said
goes to the log (with the request's trace id), never into the error: a
model server's message can hold keys, URLs or the prompt."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from meshkit.errors import Unavailable

log = logging.getLogger(__name__)


async def post_json(client: httpx.AsyncClient, url: str, payload: dict[str, Any], service: str,
                    refused: type[Exception]) -> Any:
    """The decoded JSON body of a 200 answer. Unreachable, overloaded (429),
    failing (5xx) or refusing our credentials (401, 403): Unavailable, so
    callers retry or fall back. Any other answer: `refused`."""
    try:
        response = await client.post(url, json=payload)
    except httpx.TransportError as error:  # includes timeouts
        log.warning("%s %s unreachable: %r", service, url, error)
        raise Unavailable(f"the {service} is unavailable") from error
    if response.status_code != 200:
        log.warning("%s %s answered %s: %.500s", service, url, response.status_code, response.text)
    if response.status_code >= 500 or response.status_code in (401, 403, 429):
        raise Unavailable(f"the {service} is unavailable")
    if response.status_code != 200:
        raise refused(f"the {service} refused the request ({response.status_code})")
    try:
        return response.json()
    except ValueError as error:
        log.warning("%s %s answered a body that is not JSON: %.500s", service, url, response.text)
        raise refused(f"the {service} answered something that is not JSON") from error
