"""http_get against local web servers (plain and TLS): what it refuses to
connect to, hop by hop, and the bounds on what it reads.

The servers listen on 127.0.0.1, which http_get refuses unless a test allows
its network (allowed_networks, SAGEMESH_AGENT_HTTP_ALLOWED_NETWORKS). Names
like rates.test exist only in the tests' resolver, which counts the lookups:
a name that real DNS does not know proves nothing else looked it up."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from services.agent.tools.addresses import resolve
from services.agent.tools.http_get import MAX_BODY_BYTES, MAX_REDIRECTS, http_get_tool
from services.agent.tools.registry import ToolCallError, ToolRegistry
from tests.conftest import free_port, serving_asgi

LOCAL = ["127.0.0.1/32"]
# 64 MiB of zeros in about 64 KiB.
BOMB = gzip.compress(bytes(64 * 2**20), compresslevel=9)


class CountingResolver:
    """Test names to addresses, anything else through the real resolver; keeps every lookup."""

    def __init__(self, names: dict[str, list[str]] | None = None) -> None:
        self.names = names or {}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.names[host] if host in self.names else await resolve(host, port)


class Site:
    """Pages, and how many requests reached the server."""

    def __init__(self) -> None:
        self.hits = 0
        self.redirect_to = ""

    def app(self) -> Starlette:
        def counted(endpoint):
            async def handle(request):
                self.hits += 1
                return await endpoint(request)
            return handle

        async def rates(request):
            return HTMLResponse("<html><body><h1>Rates</h1><p>The EUR/CHF rate is 0.94.</p></body></html>")

        async def elsewhere(request):
            return RedirectResponse(self.redirect_to)

        async def zipped(request):
            return Response(gzip.compress(b"The EUR/CHF rate is 0.94."), media_type="text/plain",
                            headers={"Content-Encoding": "gzip"})

        async def bomb(request):
            return Response(BOMB, media_type="text/plain", headers={"Content-Encoding": "gzip"})

        async def drip(request):
            async def slowly():
                while True:
                    yield b"."
                    await asyncio.sleep(0.2)
            return StreamingResponse(slowly(), media_type="text/plain")

        return Starlette(routes=[
            Route("/rates", counted(rates)),
            Route("/moved", counted(lambda request: _redirect("/rates"))),
            Route("/loop", counted(lambda request: _redirect("/loop"))),
            Route("/elsewhere", counted(elsewhere)),
            Route("/zipped", counted(zipped)),
            Route("/bomb", counted(bomb)),
            Route("/drip", counted(drip)),
        ])


async def _redirect(location: str) -> Response:
    return RedirectResponse(location)


@pytest.fixture
async def site() -> AsyncIterator[tuple[Site, str]]:
    site = Site()
    async with serving_asgi(site.app()) as url:
        yield site, url


def tool(url: str, hosts=("127.0.0.1",), networks=LOCAL, resolver=None, **options) -> ToolRegistry:
    return ToolRegistry([http_get_tool(list(hosts), [urlsplit(url).port], networks,
                                       resolver=resolver or CountingResolver(), **options)])


async def refused(registry: ToolRegistry, url: str) -> str:
    with pytest.raises(ToolCallError) as refusal:
        await registry.call("http_get", {"url": url})
    assert refusal.value.kind == "refused", refusal.value.message
    return refusal.value.message


async def test_a_local_server_is_refused_unless_its_network_is_allowed(site):
    server, url = site
    message = await refused(tool(url, networks=()), f"{url}/rates")
    assert "127.0.0.1, a loopback address" in message and server.hits == 0
    page = await tool(url).call("http_get", {"url": f"{url}/rates"})
    assert page["text"] == "Rates The EUR/CHF rate is 0.94." and server.hits == 1


@pytest.mark.parametrize("host, reason", [
    ("::1", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "private"),  # carrier-grade NAT
    ("169.254.169.254", "link-local"),  # the cloud metadata service
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("fd00:ec2::254", "private"),  # the metadata service over IPv6
    ("224.0.1.1", "multicast"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "embedding 127.0.0.1, a loopback"),
    ("::ffff:169.254.169.254", "embedding 169.254.169.254, a link-local"),
    ("2002:7f00:1::1", "embedding 127.0.0.1"),  # 6to4
    ("2002:a00:1::1", "embedding 10.0.0.1"),
    ("64:ff9b::7f00:1", "embedding 127.0.0.1"),  # NAT64
    ("64:ff9b::a9fe:a9fe", "embedding 169.254.169.254"),
    ("64:ff9b:1::a00:1", "local NAT64"),
])
async def test_addresses_that_are_not_public_are_refused_in_every_form(host, reason):
    literal = f"[{host}]" if ":" in host else host
    resolver = CountingResolver()
    registry = ToolRegistry([http_get_tool([host], [80], resolver=resolver)])
    message = await refused(registry, f"http://{literal}/")
    assert reason in message and "does not connect there" in message
    assert resolver.asked == [host]


async def test_a_name_with_one_private_address_among_public_ones_is_refused():
    resolver = CountingResolver({"mixed.test": ["93.184.215.14", "10.0.0.5"]})
    registry = ToolRegistry([http_get_tool(["mixed.test"], [80], resolver=resolver)])
    assert "mixed.test is 10.0.0.5, a private" in await refused(registry, "http://mixed.test/")


async def test_each_hop_is_resolved_once_and_connected_to_the_address_that_was_checked(site):
    server, url = site
    port = urlsplit(url).port
    resolver = CountingResolver({"rates.test": ["127.0.0.1"]})
    registry = tool(url, hosts=["rates.test"], resolver=resolver)
    page = await registry.call("http_get", {"url": f"http://rates.test:{port}/moved"})
    assert page["url"] == f"http://rates.test:{port}/rates" and "0.94" in page["text"]
    # Two hops, two lookups, both ours: nobody else asked DNS for a name it does not know.
    assert resolver.asked == ["rates.test", "rates.test"] and server.hits == 2


async def test_a_redirect_to_a_private_address_is_refused(site):
    server, url = site
    port = urlsplit(url).port
    registry = tool(url, hosts=["127.0.0.1", "127.0.0.2", "169.254.169.254", "localhost"])
    for target, reason in [(f"http://127.0.0.2:{port}/rates", "127.0.0.2, a loopback"),
                           (f"http://169.254.169.254:{port}/latest/meta-data/", "169.254.169.254, a link-local"),
                           ("http://example.com/", "example.com is not on this server's allow-list")]:
        server.redirect_to, server.hits = target, 0
        assert reason in await refused(registry, f"{url}/elsewhere")
        assert server.hits == 1  # the first hop only


async def test_ports_other_than_the_allowed_ones_are_refused(site):
    server, url = site
    registry = tool(url)
    assert "port 22 is not allowed" in await refused(registry, "http://127.0.0.1:22/")
    server.redirect_to = "http://127.0.0.1:6379/"
    assert "port 6379 is not allowed" in await refused(registry, f"{url}/elsewhere")
    assert "port 443 is not allowed" in await refused(registry, "https://127.0.0.1/")


async def test_redirects_are_bounded(site):
    server, url = site
    resolver = CountingResolver()
    assert f"more than {MAX_REDIRECTS} redirects" in await refused(tool(url, resolver=resolver), f"{url}/loop")
    assert len(resolver.asked) == server.hits == MAX_REDIRECTS + 1


async def test_compressed_bodies_are_read_and_a_gzip_bomb_is_cut_at_the_limit(site):
    _, url = site
    registry = tool(url)
    zipped = await registry.call("http_get", {"url": f"{url}/zipped"})
    assert zipped["text"] == "The EUR/CHF rate is 0.94." and not zipped["truncated"]
    tracemalloc.start()
    try:
        bomb = await registry.call("http_get", {"url": f"{url}/bomb"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bomb["truncated"] and len(bomb["text"]) <= MAX_BODY_BYTES
    # The 64 MiB were never inflated, not even a piece at a time (the server's own copy is
    # made before the call is traced).
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB"


async def test_a_body_that_never_ends_is_cut_off_by_the_time_limit(site):
    _, url = site
    started = time.monotonic()
    with pytest.raises(ToolCallError) as stopped:
        await tool(url, timeout_seconds=0.5).call("http_get", {"url": f"{url}/drip"})
    assert stopped.value.kind == "timeout" and time.monotonic() - started < 3


@asynccontextmanager
async def serving_tls(app, certificate: trustme.LeafCert, tmp_path) -> AsyncIterator[int]:
    pem = tmp_path / "server.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(pem))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                            ssl_certfile=str(pem), ssl_keyfile=str(pem), timeout_graceful_shutdown=1)
    served = uvicorn.Server(config)
    task = asyncio.create_task(served.serve())
    while not served.started:
        assert not task.done(), "the TLS stand-in did not start"
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        served.should_exit = True
        await task


async def test_tls_checks_the_host_name_and_https_never_redirects_to_http(site, tmp_path):
    server, url = site
    ca = trustme.CA()
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    resolver = CountingResolver({"secure.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    secure = Site()
    async with serving_tls(secure.app(), ca.issue_cert("secure.test"), tmp_path) as tls_port:
        registry = ToolRegistry([http_get_tool(["secure.test", "other.test", "127.0.0.1"],
                                               [tls_port, urlsplit(url).port], LOCAL, resolver=resolver,
                                               ssl_context=trusted)])
        # Connected to 127.0.0.1, the certificate checked for secure.test.
        page = await registry.call("http_get", {"url": f"https://secure.test:{tls_port}/moved"})
        assert page["text"] == "Rates The EUR/CHF rate is 0.94."
        with pytest.raises(ToolCallError) as wrong_name:
            await registry.call("http_get", {"url": f"https://other.test:{tls_port}/rates"})
        assert wrong_name.value.kind == "failed" and "could not be fetched" in wrong_name.value.message
        secure.redirect_to = f"{url}/rates"
        message = await refused(registry, f"https://secure.test:{tls_port}/elsewhere")
    assert "redirects from https to http" in message and server.hits == 0
