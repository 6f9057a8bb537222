"""http_get: fetches a web page or API response from an allow-listed host.

Off unless SAGEMESH_AGENT_HTTP_ALLOWED_HOSTS names hosts: an agent that can
fetch any URL can be steered into the cluster's own network. For that reason
too, each hop (the URL, then every redirect, at most MAX_REDIRECTS) is
checked the same way: an allowed host on an allowed port
(SAGEMESH_AGENT_HTTP_ALLOWED_PORTS), resolved once, every address public
(addresses.py; SAGEMESH_AGENT_HTTP_ALLOWED_NETWORKS excepted), and the
connection made to the address that was checked (pinned_transport.py), so a
second DNS answer cannot point elsewhere. An https page may not redirect to
http. Bodies are cut at a size limit, compressed or not; HTML comes back as
its text.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from bs4 import BeautifulSoup

from services.agent.tools import Tool, ToolContext, ToolError
from services.agent.tools.addresses import IPNetwork, Resolver, checked_address, resolve
from services.agent.tools.pinned_transport import PinnedTransport

MAX_REDIRECTS = 3
# What is read of a body, as sent and once decompressed: a small gzip can
# inflate a thousandfold.
MAX_BODY_BYTES = 256 * 1024
MAX_TEXT_CHARS = 8000
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FAILURES = (httpx.HTTPError, httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException, ssl.SSLError)


@dataclass(frozen=True)
class _Hop:
    url: str
    scheme: str
    host: str
    port: int


def _hop(url: str, hosts: Collection[str], ports: Collection[int]) -> _Hop:
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ToolError(f"{url[:200]!r} is not an http(s) URL")
    host = parts.hostname.lower()
    if host not in hosts:
        raise ToolError(f"{host} is not on this server's allow-list for http_get")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ToolError(f"{url[:200]!r} has an invalid port") from None
    if port not in ports:
        raise ToolError(f"port {port} is not allowed for http_get (allowed: {', '.join(map(str, sorted(ports)))})")
    return _Hop(url, parts.scheme, host, port)


def _decoder(response: httpx.Response) -> Any:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise ToolError(f"the page came in an encoding http_get does not read: {encoding[:50]}")


async def _read(response: httpx.Response) -> tuple[bytes, bool]:
    """The body up to MAX_BODY_BYTES, decompressed a bounded piece at a time, and whether it was cut."""
    decoder, body, received = _decoder(response), bytearray(), 0
    async for piece in response.aiter_raw():
        received += len(piece)
        while piece:
            room = MAX_BODY_BYTES + 1 - len(body)
            if decoder is None:
                body += piece[:room]
                piece = b""
            else:
                try:
                    body += decoder.decompress(piece, room)
                except zlib.error:
                    raise ToolError("the page's compressed body is corrupt") from None
                piece = decoder.unconsumed_tail
            if len(body) > MAX_BODY_BYTES:
                return bytes(body[:MAX_BODY_BYTES]), True
        if received > MAX_BODY_BYTES:
            return bytes(body), True
    return bytes(body), False


def _text(response: httpx.Response, body: bytes) -> str:
    text = body.decode(response.encoding or "utf-8", errors="replace")
    if "html" in response.headers.get("content-type", ""):
        page = BeautifulSoup(text, "lxml")
        for hidden in page(["script", "style", "noscript", "template"]):
            hidden.decompose()
        text = " ".join(page.get_text(" ").split())
    return text


def http_get_tool(allowed_hosts: Collection[str], allowed_ports: Collection[int],
                  allowed_networks: Collection[str] = (), timeout_seconds: float = 10.0,
                  resolver: Resolver = resolve, ssl_context: ssl.SSLContext | None = None) -> Tool:
    """`allowed_networks` are reached although not public (an on-premises
    service, the tests' local server); `resolver` and `ssl_context` are for tests."""
    hosts = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())
    ports = frozenset(allowed_ports)
    networks: list[IPNetwork] = [ipaddress.ip_network(n.strip()) for n in allowed_networks if n.strip()]

    async def address_of(hop: _Hop) -> str:
        try:
            addresses = await resolver(hop.host, hop.port)
        except (socket.gaierror, OSError):
            raise ToolError(f"{hop.host} could not be resolved") from None
        try:
            return checked_address(hop.host, addresses, networks)
        except (PermissionError, LookupError) as refused:
            raise ToolError(f"{refused}: http_get does not connect there") from None

    async def fetch(hop: _Hop) -> tuple[httpx.Response, bytes, bool] | str:
        """The answer, or where it redirects to."""
        transport = PinnedTransport(await address_of(hop), ssl_context)
        async with httpx.AsyncClient(transport=transport, timeout=timeout_seconds, follow_redirects=False,
                                     trust_env=False) as client:
            headers = {"Accept": "text/html, application/json, text/*", "Accept-Encoding": "gzip, deflate"}
            try:
                async with client.stream("GET", hop.url, headers=headers) as response:
                    if response.is_redirect:
                        return urljoin(hop.url, response.headers["location"])
                    body, truncated = await _read(response)
                    return response, body, truncated
            except _FAILURES as error:
                # Counts against the tool's breaker, unlike a refusal.
                raise ConnectionError(f"{hop.host} could not be fetched: {type(error).__name__}") from None

    async def run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        hop = _hop(arguments["url"], hosts, ports)
        for _ in range(MAX_REDIRECTS + 1):
            fetched = await fetch(hop)
            if not isinstance(fetched, str):
                break
            following = _hop(fetched, hosts, ports)
            if hop.scheme == "https" and following.scheme != "https":
                raise ToolError(f"{hop.host} redirects from https to http, which http_get does not follow")
            hop = following
        else:
            raise ToolError(f"more than {MAX_REDIRECTS} redirects")
        response, body, truncated = fetched
        text = _text(response, body)
        return {"url": hop.url, "status": response.status_code, "content_type": response.headers.get("content-type", ""),
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
        # The whole fetch, every hop and the body, within this (the registry enforces it).
        timeout_seconds=timeout_seconds + 1,
        enabled=bool(hosts),
    )
