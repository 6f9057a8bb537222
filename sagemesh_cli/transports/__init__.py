"""The two ways to the mesh behind one interface (base.Transport):

rest.py   through the REST/JSON gateway with httpx (the default)
grpc.py   straight to the services over gRPC, with sagemesh_sdk
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sagemesh_cli.credentials import Credentials
from sagemesh_cli.transports.base import Transport


@dataclass(frozen=True)
class Target:
    kind: Literal["rest", "grpc"]
    # A gateway URL, or a gRPC address (see grpc.py for the forms it takes).
    address: str


def open_transport(target: Target, credentials: Credentials) -> Transport:
    if target.kind == "grpc":
        # Imported only when asked for: grpc and the generated stubs take a while to load.
        from sagemesh_cli.transports.grpc import GrpcTransport

        return GrpcTransport(target.address, credentials)
    from sagemesh_cli.transports.rest import RestTransport

    return RestTransport(target.address, credentials)
