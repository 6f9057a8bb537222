"""What the current request carries, available anywhere below the handler.

Set by the server interceptors; read by logs (request id) and by client
channels, which forward the request id, the caller's token, the remaining
deadline and the routing headers to the next hop.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# Absolute deadline (time.monotonic() clock) of the incoming call, if it has one.
deadline: ContextVar[float | None] = ContextVar("deadline", default=None)
# Headers the mesh's router reads at every hop (Istio routes `x-canary: true`
# to canary subsets), so they travel with the request from the gateway on.
ROUTING_HEADERS: tuple[str, ...] = ("x-canary",)
routing: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("routing", default=())
