"""Server interceptors. Each one is a scope (an async context manager) around
every call, whatever its streaming shape; order them outermost first:

    RequestContextInterceptor  request id, deadline, one access-log line, metrics
    ErrorInterceptor           domain errors -> status codes; no stack traces out
    AuthInterceptor            bearer token -> the caller's Principal
"""

from __future__ import annotations

import abc
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from meshkit import auth, context, db, errors, metrics
from meshkit.topology import INFRASTRUCTURE_METHOD_PREFIXES

log = logging.getLogger("meshkit.rpc")

_CODES: dict[type[errors.ServiceError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Aborted: grpc.StatusCode.ABORTED,
}


def status_code_of(error: errors.ServiceError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in _CODES:
            return _CODES[kind]
    return grpc.StatusCode.UNKNOWN


def _metadata(details: grpc.HandlerCallDetails) -> dict[str, str]:
    return {key: value for key, value in details.invocation_metadata or () if isinstance(value, str)}


class ScopedInterceptor(grpc.aio.ServerInterceptor, abc.ABC):
    @abc.abstractmethod
    def scope(
        self, details: grpc.HandlerCallDetails, ctx: grpc.aio.ServicerContext
    ) -> AbstractAsyncContextManager[None]: ...

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        return _wrap_handler(handler, lambda ctx: self.scope(details, ctx))


def _wrap_handler(handler: grpc.RpcMethodHandler, scope) -> grpc.RpcMethodHandler:
    def unary_response(behavior):
        async def call(request_or_iterator: Any, ctx: grpc.aio.ServicerContext):
            async with scope(ctx):
                return await behavior(request_or_iterator, ctx)

        return call

    def stream_response(behavior):
        async def call(request_or_iterator: Any, ctx: grpc.aio.ServicerContext):
            async with scope(ctx):
                result = behavior(request_or_iterator, ctx)
                if inspect.isasyncgen(result):
                    async for response in result:
                        yield response
                else:  # a handler that writes with ctx.write()
                    await result

        return call

    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **serializers)
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **serializers)


class RequestContextInterceptor(ScopedInterceptor):
    """Adopts the caller's x-request-id (or makes one), records the call's
    deadline and routing headers for downstream calls, logs one line per call
    and counts it."""

    @asynccontextmanager
    async def scope(self, details, ctx) -> AsyncIterator[None]:
        metadata = _metadata(details)
        request_id = metadata.get("x-request-id") or uuid.uuid4().hex
        remaining = ctx.time_remaining()
        request_token = context.request_id.set(request_id)
        routing_token = context.routing.set(tuple((k, metadata[k]) for k in context.ROUTING_HEADERS if k in metadata))
        deadline_token = context.deadline.set(
            time.monotonic() + remaining if remaining is not None else None
        )
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            yield
        except grpc.aio.AbortError:
            code = ctx.code() or grpc.StatusCode.UNKNOWN
            raise
        except BaseException:
            code = grpc.StatusCode.CANCELLED if ctx.cancelled() else grpc.StatusCode.UNKNOWN
            raise
        finally:
            seconds = time.perf_counter() - started
            # Probes arrive every few seconds: logged at DEBUG only.
            quiet = details.method.startswith(INFRASTRUCTURE_METHOD_PREFIXES)
            log.log(
                logging.DEBUG if quiet else logging.INFO,
                "rpc",
                extra={"method": details.method, "code": code.name, "duration_ms": round(seconds * 1000, 2)},
            )
            metrics.observe_server_call(details.method, code, seconds)
            context.request_id.reset(request_token)
            context.deadline.reset(deadline_token)
            context.routing.reset(routing_token)


class ErrorInterceptor(ScopedInterceptor):
    """Turns ServiceError into its status code, with a google.rpc.BadRequest
    detail for field errors; a database that cannot be reached into
    UNAVAILABLE; anything unexpected into INTERNAL with the request id, its
    stack trace to the log, never to the client."""

    @asynccontextmanager
    async def scope(self, details, ctx) -> AsyncIterator[None]:
        try:
            yield
        except errors.ServiceError as error:
            await ctx.abort(*_status_of(error))
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            if db.connection_lost(error):
                # Not a bug: the database is restarting or failing over. Callers may retry.
                log.warning("database unavailable in %s: %s", details.method, error)
                await ctx.abort(grpc.StatusCode.UNAVAILABLE, "the database is unavailable; try again shortly")
            log.exception("unhandled error in %s", details.method)
            await ctx.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error; quote request id {context.request_id.get()} when reporting it",
            )


def _status_of(error: errors.ServiceError) -> tuple[grpc.StatusCode, str, tuple]:
    code = status_code_of(error)
    status = status_pb2.Status(code=code.value[0], message=error.message)
    if isinstance(error, errors.InvalidArgument) and error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.description
        )
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    rich = rpc_status.to_status(status)
    return rich.code, rich.details, rich.trailing_metadata


class AuthInterceptor(ScopedInterceptor):
    """Verifies the bearer token of every RPC that needs one (see
    meshkit.topology.PUBLIC_METHODS and INTERNAL_METHODS for those that do not)."""

    def __init__(self, verifier: auth.TokenVerifier) -> None:
        self.verifier = verifier

    @asynccontextmanager
    async def scope(self, details, ctx) -> AsyncIterator[None]:
        principal = None
        if auth.needs_token(details.method):
            token = auth.bearer_token(_metadata(details).get("authorization"))
            principal = self.verifier.verify(token)
        auth.set_principal(principal)
        yield
