"""Which `Grpc-Metadata-<key>` headers of a client reach the backends.

Backends trust their metadata: the token in `authorization`, the address in
`x-forwarded-for`, the mesh's routing headers, the sidecar's `x-envoy-*`. A
client may set none of these; it may set only the keys of an allow-list
(SAGEMESH_FORWARDED_METADATA), and any other key is refused by name rather
than dropped, so that a client learns why its header had no effect.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection, Iterable

from meshkit.context import ROUTING_HEADERS
from meshkit.errors import InvalidArgument
from meshkit.health import VERSION_METADATA

PREFIX = "grpc-metadata-"
# Keys the gateway sets from the request itself, or that the mesh, gRPC or the sidecar read.
NEVER_FORWARDED = frozenset({"authorization", "x-forwarded-for", "x-request-id", "idempotency-key",
                             *ROUTING_HEADERS, VERSION_METADATA})
NEVER_FORWARDED_PREFIXES = ("grpc-", ":", "x-envoy-", "x-forwarded-", "x-istio-")
_VALID_KEY = re.compile(r"^[0-9a-z_.-]+$")
# gRPC carries only printable ASCII in text metadata; anything else would be
# refused by the transport after the request had been accepted.
_VALID_VALUE = re.compile(r"^[\x20-\x7e]*$")


def may_forward(key: str) -> bool:
    """Whether a key may be on the allow-list at all."""
    return bool(_VALID_KEY.match(key)) and key not in NEVER_FORWARDED and not key.startswith(NEVER_FORWARDED_PREFIXES)


def text_value(header: str, value: str) -> str:
    if not _VALID_VALUE.match(value):
        raise InvalidArgument(f"header {header} has characters gRPC metadata cannot carry")
    return value


def client_metadata(headers: Iterable[tuple[str, str]], allowed: Collection[str]) -> list[tuple[str, str | bytes]]:
    """The `Grpc-Metadata-<key>` headers as metadata; a key not allowed is INVALID_ARGUMENT."""
    metadata: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        if not name.startswith(PREFIX):
            continue
        key = name[len(PREFIX):]
        if key not in allowed:
            shown = name if len(name) <= 80 else name[:80] + "..."
            raise InvalidArgument(f"header {shown} is not forwarded to services; allowed Grpc-Metadata keys: "
                                  f"{', '.join(sorted(allowed)) or 'none'}")
        if key.endswith("-bin"):
            try:
                metadata.append((key, base64.b64decode(value, validate=True)))
            except binascii.Error:
                raise InvalidArgument(f"header {name} must be base64") from None
        else:
            metadata.append((key, text_value(name, value)))
    return metadata
