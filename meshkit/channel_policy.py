"""How a client talks to the mesh's services, defined once: the services'
channels to each other (meshkit.channels) and the client SDK's
(sagemesh_sdk) are both built from it.

A ChannelPolicy is keepalive, the retry policy (in gRPC's service config:
UNAVAILABLE retried with exponential backoff, per-method overrides), the
load-balancing policy, reconnect backoff, message size limits, and the
deadline a call gets when its caller sets none. Each kind of channel adds its
own per-call rewrite (the mesh forwards the incoming request's context, the
SDK adds the caller's token) through `rewriting_interceptors`.

Deliberately light: grpc and the standard library only, so that a client
importing it loads neither the settings machinery nor the services' metrics
and tracing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import grpc

LoadBalancingPolicy = Literal["pick_first", "round_robin"]


@dataclass(frozen=True)
class MethodPolicy:
    """Overrides for one method (or, with method empty, one whole service)."""

    service: str
    method: str = ""
    retry: bool = True
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class ChannelPolicy:
    """The defaults are the mesh's; MeshSettings reads each from the environment
    (SAGEMESH_DEFAULT_DEADLINE_SECONDS, ...)."""

    # Deadline of a call that sets none.
    default_deadline_seconds: float = 10.0
    keepalive_time_seconds: float = 30.0
    keepalive_timeout_seconds: float = 10.0
    # Attempts for a call failing UNAVAILABLE, the first included.
    retry_max_attempts: int = 4
    retry_initial_backoff_seconds: float = 0.1
    retry_max_backoff_seconds: float = 2.0
    # gRPC's retry throttling: each failed call takes a token from a bucket of this many, each
    # success gives back `token_ratio`, and retries stop while the bucket is under half full. A
    # peer that is down then costs each call one attempt, not retry_max_attempts at every hop
    # in turn (four hops retrying four times each would be 4^4 attempts).
    retry_throttling_max_tokens: int = 10
    retry_throttling_token_ratio: float = 0.1
    # gRPC waits up to 120 s between reconnects by default: a peer that is back
    # after a restart would go unused for up to two minutes.
    reconnect_max_backoff_seconds: float = 5.0
    # round_robin spreads calls over every address a headless Service resolves to.
    load_balancing_policy: LoadBalancingPolicy = "pick_first"
    max_message_bytes: int = 16 * 1024 * 1024

    def service_config(self, overrides: Sequence[MethodPolicy] = ()) -> str:
        retry_policy = {
            "maxAttempts": self.retry_max_attempts,
            "initialBackoff": f"{self.retry_initial_backoff_seconds}s",
            "maxBackoff": f"{self.retry_max_backoff_seconds}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        # gRPC refuses a retry policy of fewer than 2 attempts (and then the
        # whole channel): one attempt is no retry policy at all.
        retries = self.retry_max_attempts >= 2
        method_configs = []
        for policy in overrides:
            name = {"service": policy.service, **({"method": policy.method} if policy.method else {})}
            config: dict = {"name": [name]}
            if policy.retry and retries:
                config["retryPolicy"] = retry_policy
            if policy.timeout_seconds is not None:
                config["timeout"] = f"{policy.timeout_seconds}s"
            method_configs.append(config)
        # An empty name matches every method not named above.
        method_configs.append({"name": [{}], **({"retryPolicy": retry_policy} if retries else {})})
        return json.dumps(
            {
                "loadBalancingConfig": [{self.load_balancing_policy: {}}],
                "methodConfig": method_configs,
                "retryThrottling": {"maxTokens": self.retry_throttling_max_tokens,
                                    "tokenRatio": self.retry_throttling_token_ratio},
            }
        )

    def channel_options(self, overrides: Sequence[MethodPolicy] = ()) -> list[tuple[str, object]]:
        reconnect_max_ms = int(self.reconnect_max_backoff_seconds * 1000)
        return [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", self.service_config(overrides)),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_seconds * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", min(1000, reconnect_max_ms)),
            ("grpc.max_reconnect_backoff_ms", reconnect_max_ms),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]

    def timeout_of(self, details: grpc.aio.ClientCallDetails) -> float:
        """The call's own deadline, else the default."""
        return details.timeout if details.timeout is not None else self.default_deadline_seconds


def open_channel(
    target: str,
    policy: ChannelPolicy,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    overrides: Sequence[MethodPolicy] = (),
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """A channel under `policy`; plaintext unless `credentials` are given (in the
    mesh, Istio's sidecars add mutual TLS)."""
    options = policy.channel_options(overrides)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=list(interceptors))
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=list(interceptors))


def call_details(
    details: grpc.aio.ClientCallDetails, timeout: float | None, metadata: grpc.aio.Metadata
) -> grpc.aio.ClientCallDetails:
    """`details` with another timeout and metadata."""
    return grpc.aio.ClientCallDetails(details.method, timeout, metadata, details.credentials, details.wait_for_ready)


Rewrite = Callable[[grpc.aio.ClientCallDetails], Awaitable[grpc.aio.ClientCallDetails]]


class _Rewriting:
    def __init__(self, rewrite: Rewrite) -> None:
        self.rewrite = rewrite


# One class per kind of call: grpc.aio files an interceptor under the first
# kind it implements only, so one class implementing all four would see
# unary-unary calls alone.
class _UnaryUnary(_Rewriting, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(await self.rewrite(details), request)


class _UnaryStream(_Rewriting, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(await self.rewrite(details), request)


class _StreamUnary(_Rewriting, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):
        return await continuation(await self.rewrite(details), request_iterator)


class _StreamStream(_Rewriting, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await continuation(await self.rewrite(details), request_iterator)


def rewriting_interceptors(rewrite: Rewrite) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that pass every call, of whatever kind, through `rewrite`
    (its deadline, its metadata) before it starts."""
    return [kind(rewrite) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
