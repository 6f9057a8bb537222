"""http_get: fetches a web page or API response from an allow-listed host.

Off unless SAGEMESH_AGENT_HTTP_ALLOWED_HOSTS names hosts: an agent that can
fetch any URL can be steered into the cluster's own network. Redirects are
followed only while they stay on allowed hosts, bodies are cut at a size
limit, and HTML comes back as its text.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from bs4 import BeautifulSoup

from services.agent.tools import Tool, ToolContext, ToolError

MAX_REDIRECTS = 3
MAX_BODY_BYTES = 256 * 1024
MAX_TEXT_CHARS = 8000


def _allowed(url: str, hosts: Collection[str]) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(f"{url!r} is not an http(s) URL")
    if parts.hostname.lower() not in hosts:
        raise ToolError(f"{parts.hostname} is not on this server's allow-list for http_get")
    return url


async def _read(response: httpx.Response) -> tuple[bytes, bool]:
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) > MAX_BODY_BYTES:
            return bytes(body[:MAX_BODY_BYTES]), True
    return bytes(body), False


def http_get_tool(allowed_hosts: Collection[str], timeout_seconds: float = 10.0) -> Tool:
    hosts = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())

    async def run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        url = _allowed(arguments["url"], hosts)
        async with httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                async with client.stream("GET", url, headers={"Accept": "text/html, application/json, text/*"}) \
                        as response:
                    if response.is_redirect:
                        url = _allowed(urljoin(url, response.headers["location"]), hosts)
                        continue
                    body, truncated = await _read(response)
                    break
            else:
                raise ToolError(f"more than {MAX_REDIRECTS} redirects")
        content_type = response.headers.get("content-type", "")
        text = body.decode(response.encoding or "utf-8", errors="replace")
        if "html" in content_type:
            page = BeautifulSoup(text, "lxml")
            for hidden in page(["script", "style", "noscript", "template"]):
                hidden.decompose()
            text = " ".join(page.get_text(" ").split())
        return {"url": url, "status": response.status_code, "content_type": content_type,
                "text": text[:MAX_TEXT_CHARS], "truncated": truncated or len(text) > MAX_TEXT_CHARS}

    return Tool(
        name="http_get",
        description="Fetches a URL on an allow-listed host and returns its status and text.",
        input_schema={
            "type": "object",
            "properties": {"url": {"type": "string", "minLength": 8, "maxLength": 2000}},
            "required": ["url"],
            "additionalProperties": False,
        },
        run=run,
        timeout_seconds=timeout_seconds + 1,
        enabled=bool(hosts),
    )
