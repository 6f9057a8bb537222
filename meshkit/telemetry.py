"""Traces, set up once per process: OpenTelemetry exported over OTLP/gRPC.

Configured by the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT (Jaeger or
an OpenTelemetry Collector), OTEL_TRACES_SAMPLER and _ARG, OTEL_BSP_* for
batching, OTEL_RESOURCE_ATTRIBUTES. With no endpoint nothing is installed: the
spans the code starts are the API's no-op spans, and no interceptor is added.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os

from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import any_of, negate, service_prefix

from meshkit.settings import MeshSettings

log = logging.getLogger(__name__)

_provider = None
# Probes and reflection would bury the traces people look for.
_NOT_TRACED = negate(any_of(service_prefix("grpc.health.v1"), service_prefix("grpc.reflection")))


def endpoint_configured() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def service_version(settings: MeshSettings) -> str:
    """What tells a canary from stable: SAGEMESH_SERVICE_VERSION (set from the
    pod's version label), else the installed package's version."""
    if settings.service_version:
        return settings.service_version
    try:
        return importlib.metadata.version("sagemesh")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def configure_tracing(service: str, settings: MeshSettings) -> None:
    """Installs the tracer provider when an OTLP endpoint is configured."""
    global _provider
    if _provider is not None or not endpoint_configured():
        return
    # Imported here so that a process without an endpoint loads none of the SDK.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.version": service_version(settings), "deployment.environment.name": settings.environment}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = service
    # The sampler comes from OTEL_TRACES_SAMPLER (parent-based, always on, by default).
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    _provider = provider
    log.info("tracing to %s", os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
             or os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])


def tracing() -> bool:
    return _provider is not None


def shutdown_tracing() -> None:
    """Sends the spans still batched; call once the server has drained."""
    if _provider is not None:
        _provider.shutdown()


def server_interceptors() -> list:
    return [aio_server_interceptor(filter_=_NOT_TRACED)] if tracing() else []


def client_interceptors() -> list:
    return aio_client_interceptors(filter_=_NOT_TRACED) if tracing() else []


def instrument_engine(engine) -> None:
    """Spans for the statements a SQLAlchemy (async) engine runs."""
    if tracing():
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # Its declared range stops below SQLAlchemy 2.1, whose engine events it
        # hooks are unchanged; tests/test_observability.py shows the spans.
        SQLAlchemyInstrumentor().instrument(engine=getattr(engine, "sync_engine", engine),
                                            tracer_provider=_provider, skip_dep_check=True)

