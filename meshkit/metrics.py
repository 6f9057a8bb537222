"""Prometheus metrics every process has: gRPC calls served and made, by
method and status code (named as go-grpc-prometheus names them, so existing
dashboards fit), and the /metrics endpoint that serves them with the
process's domain metrics."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from prometheus_client import Counter, Histogram, start_http_server

from meshkit.topology import INFRASTRUCTURE_METHOD_PREFIXES

log = logging.getLogger(__name__)

# From an in-memory lookup to an answer written by a slow model.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LABELS = ["grpc_service", "grpc_method"]

SERVER_HANDLED = Counter("grpc_server_handled_total", "RPCs completed on the server, by status code.",
                         [*_LABELS, "grpc_code"])
SERVER_HANDLING_SECONDS = Histogram("grpc_server_handling_seconds", "Time the server took to complete an RPC.",
                                    _LABELS, buckets=LATENCY_BUCKETS)
CLIENT_HANDLED = Counter("grpc_client_handled_total", "RPCs completed by this process's clients, by status code.",
                         [*_LABELS, "grpc_code"])
CLIENT_HANDLING_SECONDS = Histogram("grpc_client_handling_seconds", "Time an RPC took as its client saw it.",
                                    _LABELS, buckets=LATENCY_BUCKETS)


def _split(method: str | bytes) -> tuple[str, str] | None:
    method = method.decode() if isinstance(method, bytes) else method
    if method.startswith(INFRASTRUCTURE_METHOD_PREFIXES):
        return None
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


def observe_server_call(method: str, code: grpc.StatusCode, seconds: float) -> None:
    if labels := _split(method):
        SERVER_HANDLED.labels(*labels, code.name).inc()
        SERVER_HANDLING_SECONDS.labels(*labels).observe(seconds)


async def _observe_client_call(labels: tuple[str, str], call, started: float) -> None:
    try:
        code = await call.code()
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
    CLIENT_HANDLED.labels(*labels, code.name).inc()
    CLIENT_HANDLING_SECONDS.labels(*labels).observe(time.perf_counter() - started)


# The loop keeps only weak references to tasks.
_observing: set[asyncio.Task] = set()


class _ClientCall:
    def _measure(self, details, call):
        if labels := _split(details.method):
            # The call is under way; its code is known once it ends.
            task = asyncio.ensure_future(_observe_client_call(labels, call, time.perf_counter()))
            _observing.add(task)
            task.add_done_callback(_observing.discard)
        return call


# One class per kind of call: grpc.aio files an interceptor under the first
# kind it implements only.
class _UnaryUnary(_ClientCall, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return self._measure(details, await continuation(details, request))


class _UnaryStream(_ClientCall, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return self._measure(details, await continuation(details, request))


class _StreamUnary(_ClientCall, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):
        return self._measure(details, await continuation(details, request_iterator))


class _StreamStream(_ClientCall, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return self._measure(details, await continuation(details, request_iterator))


def client_interceptors() -> list[_ClientCall]:
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]


def serve_metrics(host: str, port: int) -> int | None:
    """Serves /metrics on a thread of its own; returns the port (None when 0 turned it off)."""
    if port == 0:
        return None
    server, _ = start_http_server(port, host)
    port = server.server_port
    log.info("metrics on http://%s:%d/metrics", host, port, extra={"metrics_port": port})
    return port
