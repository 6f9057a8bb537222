"""grpc.aio server bootstrap shared by every service.

A service describes itself as a ServiceApp (its servicers, dependency checks
and shutdown hooks); MeshServer adds what every server has: interceptors (tracing
when it is on, request context and metrics, errors, auth), grpc.health.v1,
reflection, keepalive enforcement, message size limits, and
a graceful stop that drains in-flight calls. `run` is a service's main():
it also sets up tracing and serves /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from meshkit import auth, channels, interceptors, metrics, revocations, telemetry
from meshkit.health import DependencyHealth, HealthCheck, VersionedHealthServicer
from meshkit.logs import configure_logging
from meshkit.revocations import RevocationSource, RevokedSessions
from meshkit.revocations_grpc import IdentityRevocations
from meshkit.settings import MeshSettings
from meshkit.topology import ServiceInfo, metrics_port_of

log = logging.getLogger(__name__)

# A poll of identity's revoked sessions that takes longer is given up and made again.
REVOCATION_POLL_TIMEOUT_SECONDS = 5.0


@dataclass
class ServiceApp:
    info: ServiceInfo
    # Adds the service's servicers to the server.
    register: Callable[[grpc.aio.Server], None]
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    # Run after the server has drained, in order (closing pools and the like).
    on_shutdown: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    # Where the server learns of sessions ended before their tokens expire: identity's
    # ListRevokedSessions over gRPC unless the service says otherwise (identity reads its own).
    revocation_source: RevocationSource | None = None
    revoked_sessions: RevokedSessions = field(default_factory=RevokedSessions)


def server_options(settings: MeshSettings) -> list[tuple[str, int]]:
    keepalive_ms = int(settings.keepalive_time_seconds * 1000)
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Accept client pings as often as our own clients send them, no more.
        ("grpc.http2.min_ping_interval_without_data_ms", min(keepalive_ms, 10_000)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.grace_period_seconds * 1000)),
        # gRPC sets SO_REUSEPORT by default on Linux: a second server on a port in use (a stale
        # process, a second `make run`, a port handed out twice) would start without complaint and
        # take a share of the first's connections, answering calls meant for another service.
        ("grpc.so_reuseport", 0),
    ]


def token_verifier(settings: MeshSettings, revoked_sessions: Container[str] = frozenset()) -> auth.TokenVerifier:
    return auth.TokenVerifier(
        auth.PublicKeyRing(settings.keys_dir), settings.jwt_issuer, settings.jwt_audience,
        revoked_sessions=revoked_sessions,
    )


class MeshServer:
    def __init__(self, app: ServiceApp, settings: MeshSettings) -> None:
        self.app = app
        self.settings = settings
        self.server = grpc.aio.server(
            interceptors=[
                # Outermost, so that the span covers the whole call and sees its status.
                *telemetry.server_interceptors(),
                interceptors.RequestContextInterceptor(),
                interceptors.ErrorInterceptor(),
                interceptors.AuthInterceptor(token_verifier(settings, app.revoked_sessions)),
            ],
            options=server_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        self.health_servicer = VersionedHealthServicer(telemetry.service_version(settings))
        self.health = DependencyHealth(
            self.health_servicer,
            [app.info.grpc_service],
            app.health_checks,
            settings.health_check_interval_seconds,
        )
        self._watcher: asyncio.Task | None = None
        self._revocations: asyncio.Task | None = None
        self._identity_channel: grpc.aio.Channel | None = None
        self.port: int | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.listen_host}:{self.port}"

    async def start(self) -> int:
        self.app.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health_servicer, self.server)
        reflection.enable_server_reflection(
            [
                self.app.info.grpc_service,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        port = self.settings.listen_port
        if port is None:
            port = self.app.info.default_port
        self.port = self.server.add_insecure_port(f"{self.settings.listen_host}:{port}")
        await self.health.started()
        await self.health.check_once()
        await self.server.start()
        self._watcher = asyncio.create_task(self.health.watch())
        self._revocations = asyncio.create_task(revocations.follow(
            self.app.revoked_sessions, self._revocation_source(), self.settings.revocation_poll_seconds))
        log.info(
            "%s listening on %s", self.app.info.name, self.address,
            extra={"address": self.address},
        )
        return self.port

    def _revocation_source(self) -> RevocationSource:
        if self.app.revocation_source is not None:
            return self.app.revocation_source
        self._identity_channel = channels.channel_to("identity", self.settings)
        return IdentityRevocations(self._identity_channel, REVOCATION_POLL_TIMEOUT_SECONDS)

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, refuses new calls, lets in-flight calls finish
        within the grace period, then runs the shutdown hooks."""
        for task in (self._watcher, self._revocations):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.health.shutting_down()
        await self.server.stop(self.settings.grace_period_seconds if grace is None else grace)
        if self._identity_channel is not None:
            await self._identity_channel.close()
        for hook in self.app.on_shutdown:
            await hook()
        log.info("%s stopped", self.app.info.name)


S = TypeVar("S", bound=MeshSettings)


def run(service: str, build: Callable[[S], Awaitable[ServiceApp]], settings: S) -> None:
    """A service's main(): serve until SIGTERM or SIGINT, then drain and stop."""
    configure_logging(service, settings.log_level, settings.log_format)
    telemetry.configure_tracing(service, settings)
    metrics.serve_metrics(settings.metrics_host, metrics_port_of(service, settings.metrics_port))
    try:
        uvloop.run(_serve(build, settings))
    finally:
        telemetry.shutdown_tracing()


async def _serve(build: Callable[[S], Awaitable[ServiceApp]], settings: S) -> None:
    app = await build(settings)
    server = MeshServer(app, settings)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("%s draining (grace %.0fs)", app.info.name, settings.grace_period_seconds)
    await server.stop()
