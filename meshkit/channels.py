"""Client channels to other services, built in one place.

Every channel gets keepalive, a retry policy in its service config (retry on
UNAVAILABLE with exponential backoff, per-method overrides), a load-balancing
policy, and interceptors that give every call a deadline and forward the
current request's id and caller token to the next hop, count and time each
call (Prometheus), and carry the trace to the next hop (when tracing is on).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import grpc

from meshkit import auth, context, metrics, telemetry
from meshkit.settings import MeshSettings


@dataclass(frozen=True)
class MethodPolicy:
    """Overrides for one method (or, with method empty, one whole service)."""

    service: str
    method: str = ""
    retry: bool = True
    timeout_seconds: float | None = None


def service_config(settings: MeshSettings, overrides: tuple[MethodPolicy, ...] = ()) -> str:
    retry_policy = {
        "maxAttempts": settings.retry_max_attempts,
        "initialBackoff": f"{settings.retry_initial_backoff_seconds}s",
        "maxBackoff": f"{settings.retry_max_backoff_seconds}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    method_configs = []
    for policy in overrides:
        name = {"service": policy.service, **({"method": policy.method} if policy.method else {})}
        config: dict = {"name": [name]}
        if policy.retry:
            config["retryPolicy"] = retry_policy
        if policy.timeout_seconds is not None:
            config["timeout"] = f"{policy.timeout_seconds}s"
        method_configs.append(config)
    # An empty name matches every method not named above.
    method_configs.append({"name": [{}], "retryPolicy": retry_policy})
    return json.dumps(
        {
            "loadBalancingConfig": [{settings.load_balancing_policy: {}}],
            "methodConfig": method_configs,
        }
    )


def channel_options(settings: MeshSettings, config: str) -> list[tuple[str, object]]:
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", config),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", min(1000, int(settings.reconnect_max_backoff_seconds * 1000))),
        ("grpc.max_reconnect_backoff_ms", int(settings.reconnect_max_backoff_seconds * 1000)),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
    ]


def create_channel(
    target: str, settings: MeshSettings, overrides: tuple[MethodPolicy, ...] = ()
) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        options=channel_options(settings, service_config(settings, overrides)),
        interceptors=[*outgoing_call_interceptors(settings.default_deadline_seconds),
                      *telemetry.client_interceptors(), *metrics.client_interceptors()],
    )


def channel_to(service: str, settings: MeshSettings, **kwargs) -> grpc.aio.Channel:
    """A channel to one of the mesh's services, by name ("identity", ...)."""
    return create_channel(settings.address_of(service), settings, **kwargs)


class _OutgoingCall:
    """Gives each call a deadline: its own, else the default, never beyond
    what remains of the incoming request's; forwards request id, token and
    routing headers."""

    def __init__(self, default_timeout: float) -> None:
        self.default_timeout = default_timeout

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        timeout = details.timeout if details.timeout is not None else self.default_timeout
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
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )


# One class per kind of call: grpc.aio files an interceptor under the first
# kind it implements only, so one class implementing all four would see
# unary-unary calls alone.
class _UnaryUnary(_OutgoingCall, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _UnaryStream(_OutgoingCall, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _StreamUnary(_OutgoingCall, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):
        return await continuation(self._details(details), request_iterator)


class _StreamStream(_OutgoingCall, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await continuation(self._details(details), request_iterator)


def outgoing_call_interceptors(default_timeout: float) -> list[_OutgoingCall]:
    return [kind(default_timeout) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
