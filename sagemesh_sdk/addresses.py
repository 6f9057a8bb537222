"""Where the client finds each service."""

from __future__ import annotations

import os
from collections.abc import Mapping

from meshkit.topology import SERVICES


def address_variable(service: str) -> str:
    """The variable the mesh itself reads the service's address from (MeshSettings' `<service>_addr`)."""
    return f"SAGEMESH_{service.upper()}_ADDR"


def service_addresses(
    address: str | None = None,
    addresses: Mapping[str, str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """Every service's gRPC target, by service name.

    `address` serves them all (an Istio ingress gateway routing by gRPC service
    name, say). Else `addresses` names some or all of them, and a service it
    does not name is at its SAGEMESH_<SERVICE>_ADDR, else where `make run`
    serves it (127.0.0.1:50051 to 50055).
    """
    if address and addresses:
        raise ValueError("give one address for every service, or addresses by service: not both")
    unknown = set(addresses or ()) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown services {sorted(unknown)}; the services are {list(SERVICES)}")
    named = dict(addresses or {})
    return {
        name: address or named.get(name) or environ.get(address_variable(name)) or info.default_address
        for name, info in SERVICES.items()
    }
