"""The gateway: `python -m gateway.server`."""

from __future__ import annotations

import importlib
import logging
from functools import partial

import uvicorn

from gateway.app import Gateway
from gateway.openapi import docs_pages
from gateway.rate_limits import RateLimitConfig, RateLimiter, storage_for
from gateway.query import QueryLimits
from gateway.rules import Router, routes_of
from gateway.settings import GatewaySettings
from gateway.stream_limits import StreamLimiter, open_streams_for
from gateway.uploads import UploadLimits
from meshkit.channels import channel_to
from meshkit import metrics, telemetry
from meshkit.auth import TokenVerifier
from meshkit.logs import configure_logging
from meshkit.server import token_verifier
from meshkit.topology import SERVICES, metrics_port_of

log = logging.getLogger(__name__)


def service_descriptor(name: str):
    """The descriptor of a mesh service, from its generated module."""
    info = SERVICES[name]
    package, service = info.grpc_service.rsplit(".", 1)
    module = importlib.import_module(f"{package}.{name}_pb2")
    return module.DESCRIPTOR.services_by_name[service]


def build(settings: GatewaySettings) -> Gateway:
    unknown = set(settings.gateway_services) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown services in SAGEMESH_GATEWAY_SERVICES: {sorted(unknown)}")
    descriptors = {name: service_descriptor(name) for name in settings.gateway_services}
    routes = [route for name, d in descriptors.items() for route in routes_of(d, name)]
    # Tokens are verified here only to know who calls (their limits, whether they test canaries);
    # the services verify them again. One verifier, so one cache of verified tokens.
    verifier = token_verifier(settings)
    return Gateway(
        Router(routes),
        {name: partial(channel_to, name, settings) for name in descriptors},
        max_body_bytes=settings.max_body_bytes,
        upload_limits=upload_limits(settings),
        query_limits=query_limits(settings),
        forwarded_metadata=settings.forwarded_metadata,
        backend_connect_timeout=settings.backend_connect_timeout_seconds,
        max_calls_waiting_per_backend=settings.max_calls_waiting_per_backend,
        readiness_timeout=settings.readiness_timeout_seconds,
        stream_deadline=settings.stream_deadline_seconds,
        extra_routes=docs_pages(list(descriptors.values())),
        rate_limiter=rate_limiter(settings, verifier) if settings.rate_limits else None,
        trusted_proxy_hops=settings.trusted_proxy_hops,
        version=telemetry.service_version(settings),
        stream_limiter=stream_limiter(settings, verifier) if settings.max_streams_per_caller > 0 else None,
        send_timeout=settings.stream_idle_timeout_seconds,
        verifier=verifier,
    )


def upload_limits(settings: GatewaySettings) -> UploadLimits:
    return UploadLimits(settings.max_upload_bytes, settings.max_body_bytes, settings.max_upload_fields,
                        settings.max_upload_field_bytes, settings.stream_idle_timeout_seconds)


def query_limits(settings: GatewaySettings) -> QueryLimits:
    return QueryLimits(settings.max_query_bytes, settings.max_query_parameters, settings.max_query_name_length,
                       settings.max_query_name_depth)


def stream_limiter(settings: GatewaySettings, verifier: TokenVerifier) -> StreamLimiter:
    return StreamLimiter(settings.max_streams_per_caller, open_streams_for(settings.redis_url), verifier)


def rate_limiter(settings: GatewaySettings, verifier: TokenVerifier) -> RateLimiter:
    config = RateLimitConfig(settings.rate_limit_per_user, settings.rate_limit_per_tenant,
                             settings.rate_limit_per_address, settings.login_limit_per_account,
                             settings.login_limit_per_address, settings.registration_limit_per_address)
    return RateLimiter(config, storage_for(settings.redis_url), verifier)


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    telemetry.configure_tracing("gateway", settings)
    metrics.serve_metrics(settings.metrics_host, metrics_port_of("gateway", settings.metrics_port))
    app = build(settings)
    log.info("gateway listening on http://%s:%d", settings.http_host, settings.http_port)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.grace_period_seconds),
    )
    telemetry.shutdown_tracing()


if __name__ == "__main__":
    main()
