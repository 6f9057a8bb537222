"""Client channels to other services, built in one place.

Every channel follows the mesh's ChannelPolicy (meshkit.channel_policy:
keepalive, a retry policy in its service config, a load-balancing policy, a
deadline on every call) and has interceptors that forward the current
request's id, deadline, routing headers and caller token to the next hop,
count and time each call (Prometheus), and carry the trace to the next hop
(when tracing is on).
"""

from __future__ import annotations

import time

import grpc

from meshkit import auth, context, metrics, telemetry
from meshkit.channel_policy import ChannelPolicy, MethodPolicy, call_details, open_channel, rewriting_interceptors
from meshkit.settings import MeshSettings


def create_channel(
    target: str, settings: MeshSettings, overrides: tuple[MethodPolicy, ...] = ()
) -> grpc.aio.Channel:
    policy = settings.channel_policy
    interceptors = [*outgoing_call_interceptors(policy), *telemetry.client_interceptors(),
                    *metrics.client_interceptors()]
    return open_channel(target, policy, interceptors, overrides)


def channel_to(service: str, settings: MeshSettings, **kwargs) -> grpc.aio.Channel:
    """A channel to one of the mesh's services, by name ("identity", ...)."""
    return create_channel(settings.address_of(service), settings, **kwargs)


def outgoing_call_interceptors(policy: ChannelPolicy) -> list[grpc.aio.ClientInterceptor]:
    """Each call gets a deadline: its own, else the default, never beyond what
    remains of the incoming request's; and carries the request id, the
    caller's token and the routing headers on."""

    async def forward_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        timeout = policy.timeout_of(details)
        incoming_deadline = context.deadline.get()
        if incoming_deadline is not None:
            timeout = max(min(timeout, incoming_deadline - time.monotonic()), 0.0)
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        request_id = context.request_id.get()
        if request_id and "x-request-id" not in metadata:
            metadata["x-request-id"] = request_id
        for key, value in context.routing.get():
            if key not in metadata:
                metadata[key] = value
        principal = auth.principal_or_none()
        if principal is not None and "authorization" not in metadata:
            metadata["authorization"] = f"Bearer {principal.token}"
        return call_details(details, timeout, metadata)

    return rewriting_interceptors(forward_context)
