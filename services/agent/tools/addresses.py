"""Which addresses http_get may connect to: public unicast ones only, judged
by the `ipaddress` module, with the IPv4 address an IPv6 one embeds
(IPv4-mapped, 6to4, Teredo, NAT64) judged as itself."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The host's addresses, as many as DNS gives; http_get resolves once per hop.
Resolver = Callable[[str, int], Awaitable[list[str]]]

# RFC 6052's well-known NAT64 prefix carries the IPv4 address in its last 32 bits;
# `ipaddress` counts it as global whatever it embeds.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# RFC 8215's local-use NAT64 prefix: the operator's own translators, never public.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


async def resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def why_not_public(address: IPAddress) -> str | None:
    """None for a public unicast address, else why it is refused."""
    if address.version == 6:
        if address in _LOCAL_NAT64:
            return "a local NAT64 address"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = why_not_public(embedded)
            return f"an IPv6 address embedding {embedded}, {reason}" if reason else None
    if address.is_multicast:
        return "a multicast address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        # 169.254.169.254, the cloud metadata service, among them.
        return "a link-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if not address.is_global:
        return "a private or reserved address"
    return None


def checked_address(host: str, addresses: Collection[str], allowed_networks: Collection[IPNetwork]) -> str:
    """The address to connect to: the first, once every address the host has
    is public or in `allowed_networks` (an answer that mixes in one private
    address is refused as a whole: which one a client picks is not ours to say)."""
    if not addresses:
        raise LookupError(f"{host} has no address")
    for text in addresses:
        address = ipaddress.ip_address(text)
        if any(address in network for network in allowed_networks):
            continue
        if reason := why_not_public(address):
            raise PermissionError(f"{host} is {address}, {reason}")
    return next(iter(addresses))
