"""The gateway's ASGI application.

Every request is matched against the routes from the contracts, transcoded
into its RPC, sent over the shared channel of the backend that serves it, and
the reply (or its status) transcoded back, the way grpc-gateway does it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping

import grpc
from google.protobuf import message_factory
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway import errors, transcode, uploads
from gateway.backend_gate import BackendGate, BackendUnavailable
from gateway.client_metadata import client_metadata, text_value
from gateway.query import QueryLimits, query_parameters
from gateway.observability import RequestObservation
from gateway.rate_limits import RateLimiter, Refusal
from gateway.rules import Route, Router
from gateway.stream_limits import StreamLimiter
from meshkit.auth import TokenVerifier, bearer_token
from meshkit.context import ROUTING_HEADERS
from meshkit.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from meshkit.health import HealthReport, check_health

log = logging.getLogger(__name__)

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
_VALID_METADATA_VALUE = re.compile(r"^[\x20-\x7e]*$")
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Metadata gRPC itself uses; never echoed to HTTP clients.
_INTERNAL_METADATA = ("grpc-", ":")
# gRPC's own wording when no connection could be made: it names internal addresses.
_TRANSPORT_FAILURE = re.compile(r"failed to connect|connection refused|DNS resolution failed|Socket closed", re.I)
# Logins are also limited per account and address: passwords must not be guessed at speed;
# registrations per address: each costs a password hash and makes a user.
LOGIN_METHOD = "sagemesh.identity.v1.IdentityService.Login"
REGISTER_METHOD = "sagemesh.identity.v1.IdentityService.Register"
# Every process's status and version; /readyz is the gateway's own readiness.
HEALTH_PATH = "/api/v1/health"
# Headers read once: a second Authorization could be counted by the rate limiter as one
# caller and reach the backend as another.
_SINGLE_HEADERS = ("authorization", "idempotency-key", *ROUTING_HEADERS)


def error_response(
    http_status: int, body: dict, request_id: str, headers: Mapping[str, str] | None = None
) -> Response:
    extra = {"x-request-id": request_id, **(headers or {})}
    if http_status == 401:
        extra.setdefault("www-authenticate", "Bearer")
    return Response(transcode.dumps(body), http_status, extra, media_type=JSON)


def invalid_argument(error: InvalidArgument, request_id: str) -> Response:
    return error_response(
        400, errors.status_json(grpc.StatusCode.INVALID_ARGUMENT, error.message), request_id
    )


def payload_too_large(error: ResourceExhausted, request_id: str) -> Response:
    return error_response(
        413, errors.status_json(grpc.StatusCode.RESOURCE_EXHAUSTED, error.message), request_id
    )


def request_timeout(error: uploads.UploadIdle, request_id: str) -> Response:
    return error_response(
        408, errors.status_json(grpc.StatusCode.DEADLINE_EXCEEDED, error.message), request_id
    )


class ClientStalled(Exception):
    """The client stopped reading its response."""


def parse_timeout(value: str) -> float:
    found = _TIMEOUT.match(value.strip())
    if not found:
        raise InvalidArgument(f"malformed Grpc-Timeout {value!r}: expected e.g. 500m or 10S")
    return int(found.group(1)) * _TIMEOUT_UNITS[found.group(2)]


def backend_unavailable(error: BackendUnavailable, request_id: str) -> Response:
    return error_response(
        503, errors.status_json(grpc.StatusCode.UNAVAILABLE, errors.unavailable_message(error.backend)), request_id
    )


def too_many_requests(refusal: Refusal, request_id: str) -> Response:
    return error_response(429, errors.status_json(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal.message), request_id,
                          {"retry-after": str(refusal.retry_after_seconds)})


def client_address(request: Request, trusted_proxy_hops: int) -> str:
    """The caller's address: the peer's, or, behind `trusted_proxy_hops` proxies that append to
    X-Forwarded-For, the address the farthest of them saw (entries before it can be forged)."""
    peer = request.client.host if request.client else ""
    if trusted_proxy_hops <= 0:
        return peer
    chain = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()]
    return chain[-trusted_proxy_hops] if len(chain) >= trusted_proxy_hops else peer


def request_id_of(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if given and len(given) <= 128 and _VALID_METADATA_VALUE.match(given) else uuid.uuid4().hex


def single_headers_once(request: Request) -> None:
    for name in _SINGLE_HEADERS:
        if len(request.headers.getlist(name)) > 1:
            raise InvalidArgument(f"more than one {name} header")


def outgoing_metadata(
    request: Request, request_id: str, allowed_metadata: Collection[str], may_route: bool = False
) -> list[tuple[str, str | bytes]]:
    """The request's metadata for the backend; the routing headers (x-canary) only when
    `may_route`: a verified canary tester's request."""
    headers = request.headers
    metadata: list[tuple[str, str | bytes]] = [("x-request-id", request_id)]
    if "authorization" in headers:
        metadata.append(("authorization", text_value("Authorization", headers["authorization"])))
    for key in ROUTING_HEADERS:
        if key in headers and may_route:
            metadata.append((key, text_value(key, headers[key])))
    if "idempotency-key" in headers:
        # The IETF draft's header, for the RPCs that honour it (SendMessage).
        metadata.append(("idempotency-key", text_value("Idempotency-Key", headers["idempotency-key"])))
    if request.client:
        forwarded = headers.get("x-forwarded-for", "")
        chain = f"{forwarded}, {request.client.host}" if forwarded and _VALID_METADATA_VALUE.match(forwarded) else request.client.host
        metadata.append(("x-forwarded-for", chain))
    metadata.extend(client_metadata(headers.items(), allowed_metadata))
    return metadata


def response_headers(initial, trailing, request_id: str) -> dict[str, str]:
    headers = {"x-request-id": request_id}
    for prefix, metadata in (("grpc-metadata-", initial), ("grpc-trailer-", trailing)):
        for key, value in metadata or ():
            if key.startswith(_INTERNAL_METADATA) or key == "x-request-id":
                continue
            if isinstance(value, bytes):
                value = base64.b64encode(value).decode()
            headers[f"{prefix}{key}"] = value
    return headers


class Gateway:
    def __init__(
        self,
        router: Router,
        # Backend name -> a function making its channel. Channels belong to the
        # event loop they are made in, so they are made inside the serving loop.
        channel_factories: Mapping[str, Callable[[], grpc.aio.Channel]],
        max_body_bytes: int,
        upload_limits: uploads.UploadLimits,
        query_limits: QueryLimits,
        # Grpc-Metadata-<key> keys passed on to backends.
        forwarded_metadata: Collection[str],
        # How long a call waits for its backend's connection, and how many may wait on one backend's answer.
        backend_connect_timeout: float,
        max_calls_waiting_per_backend: int,
        readiness_timeout: float,
        stream_deadline: float = 300.0,
        extra_routes: Mapping[str, object] | None = None,
        rate_limiter: RateLimiter | None = None,
        trusted_proxy_hops: int = 0,
        version: str = "",
        stream_limiter: StreamLimiter | None = None,
        # Seconds a response may wait for its client to read before it is given up; None: no limit.
        send_timeout: float | None = None,
        # Verifies tokens to learn whether a caller is a canary tester; without it no request
        # may ask for canaries.
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.router = router
        self.channel_factories = channel_factories
        self._channels: dict[str, grpc.aio.Channel] | None = None
        self.max_body_bytes = max_body_bytes
        self.upload_limits = upload_limits
        self.query_limits = query_limits
        self.forwarded_metadata = frozenset(forwarded_metadata)
        self.gates = {name: BackendGate(name, backend_connect_timeout, max_calls_waiting_per_backend)
                      for name in channel_factories}
        self.stream_limiter = stream_limiter
        self.send_timeout = send_timeout
        self.verifier = verifier
        self.readiness_timeout = readiness_timeout
        self.stream_deadline = stream_deadline
        # This gateway's version, as /api/v1/health reports it.
        self.version = version
        # Fixed pages: /healthz, /readyz, /api/v1/health, /openapi.json, /docs ...
        self.pages = {"/healthz": self.healthz, "/readyz": self.readyz, HEALTH_PATH: self.health_report,
                      **(extra_routes or {})}
        self._callables: dict[Route, object] = {}
        self.rate_limiter = rate_limiter
        self.trusted_proxy_hops = trusted_proxy_hops

    @property
    def channels(self) -> dict[str, grpc.aio.Channel]:
        if self._channels is None:
            self._channels = {name: make() for name, make in self.channel_factories.items()}
        return self._channels

    async def close(self) -> None:
        if self._channels is not None:
            await asyncio.gather(*(channel.close() for channel in self._channels.values()))
            self._channels = None
            self._callables.clear()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        request_id = request_id_of(request)
        page = request.url.path in self.pages
        # What a request holds until its response is sent: its stream slot, its backend call.
        async with contextlib.AsyncExitStack() as held:
            seen = held.enter_context(RequestObservation(request, traced=not page))
            if page:
                seen.route_matched(request.url.path)
            try:
                response = await self.handle(request, request_id, seen, held)
            except Exception:
                # The last resort: a Status body with the request id, never a bare page.
                log.exception("unhandled error", extra={"path": request.url.path, "request_id": request_id})
                response = error_response(
                    500,
                    errors.status_json(
                        grpc.StatusCode.INTERNAL,
                        f"internal error; quote request id {request_id} when reporting it",
                    ),
                    request_id,
                )
            seen.answered(response)
            try:
                await response(scope, receive, self.sender(send))
            except ClientStalled:
                # Nothing more can reach the client; the server closes the connection.
                log.warning("client stopped reading its response",
                            extra={"path": request.url.path, "request_id": request_id})

    def sender(self, send):
        if self.send_timeout is None:
            return send

        async def send_in_time(message) -> None:
            try:
                async with asyncio.timeout(self.send_timeout):
                    await send(message)
            except TimeoutError:
                raise ClientStalled from None

        return send_in_time

    async def handle(
        self, request: Request, request_id: str, seen: RequestObservation, held: contextlib.AsyncExitStack
    ) -> Response:
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        page = self.pages.get(request.url.path)
        if page is not None and request.method in ("GET", "HEAD"):
            return await page(request)
        route, variables = self.router.match(request.method, raw_path)
        if route is None:
            if variables:
                return error_response(
                    405, errors.status_json(grpc.StatusCode.UNIMPLEMENTED, "Method Not Allowed"),
                    request_id, {"allow": ", ".join(variables)},
                )
            return error_response(
                404, errors.status_json(grpc.StatusCode.NOT_FOUND, "Not Found"), request_id
            )
        seen.route_matched(route.template.template)
        caller = None
        if self.rate_limiter:
            caller = self.rate_limiter.caller(request.headers.get("authorization"),
                                              client_address(request, self.trusted_proxy_hops))
            if refusal := await self.rate_limiter.check(caller):
                return too_many_requests(refusal, request_id)
        if self.stream_limiter and (route.client_streaming or route.server_streaming):
            streamer = caller or self.stream_limiter.caller(request.headers.get("authorization"),
                                                            client_address(request, self.trusted_proxy_hops))
            if not await held.enter_async_context(self.stream_limiter.stream(streamer)):
                return error_response(
                    429, errors.status_json(grpc.StatusCode.RESOURCE_EXHAUSTED, self.stream_limiter.refusal(streamer)),
                    request_id,
                )
        try:
            single_headers_once(request)
            timeout = parse_timeout(request.headers["grpc-timeout"]) if "grpc-timeout" in request.headers else None
            metadata = outgoing_metadata(request, request_id, self.forwarded_metadata,
                                         may_route=self.is_canary_tester(request))
            if timeout is None and (route.client_streaming or route.server_streaming):
                timeout = self.stream_deadline
            if route.client_streaming:
                return await self.client_stream(route, variables, request, metadata, timeout, request_id)
            body = await self.read_body(request) if route.body else None
            message = transcode.build_request(
                self.message_class(route), route.body, variables,
                query_parameters(request.scope["query_string"], self.query_limits), body,
            )
        except BackendUnavailable as error:
            return backend_unavailable(error, request_id)
        except InvalidArgument as error:
            return invalid_argument(error, request_id)
        except ResourceExhausted as error:
            return payload_too_large(error, request_id)
        except ClientDisconnect:
            return Response(status_code=499)
        if caller and route.method.full_name == LOGIN_METHOD:
            if refusal := await self.rate_limiter.check_login(caller, message.email):
                return too_many_requests(refusal, request_id)
        if caller and route.method.full_name == REGISTER_METHOD:
            if refusal := await self.rate_limiter.check_registration(caller):
                return too_many_requests(refusal, request_id)
        try:
            if route.server_streaming:
                return await self.server_stream(route, message, request, metadata, timeout, request_id, held)
            return await self.unary(route, message, metadata, timeout, request_id)
        except BackendUnavailable as error:
            return backend_unavailable(error, request_id)

    def is_canary_tester(self, request: Request) -> bool:
        """Whether the request's token verifies and names a canary tester: x-canary steers a request
        onto canaries, which run few replicas, so a client's word is not enough."""
        if self.verifier is None or not any(key in request.headers for key in ROUTING_HEADERS):
            return False
        try:
            return self.verifier.verify(bearer_token(request.headers.get("authorization"))).canary_tester
        except Unauthenticated:
            return False

    async def lifespan(self, receive, send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                self.channels  # connect early, in the serving loop
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # Calls -------------------------------------------------------------------

    def message_class(self, route: Route):
        return message_factory.GetMessageClass(route.method.input_type)

    def multicallable(self, route: Route):
        found = self._callables.get(route)
        if found is None:
            channel = self.channels[route.backend]
            kind = ("stream" if route.client_streaming else "unary") + "_" + (
                "stream" if route.server_streaming else "unary"
            )
            found = getattr(channel, kind)(
                route.grpc_path,
                request_serializer=self.message_class(route).SerializeToString,
                response_deserializer=message_factory.GetMessageClass(route.method.output_type).FromString,
            )
            self._callables[route] = found
        return found

    def rpc_failure(self, route: Route, error: grpc.aio.AioRpcError, request_id: str) -> Response:
        status, body = errors.from_rpc_error(error)
        if error.code() == grpc.StatusCode.UNAVAILABLE and _TRANSPORT_FAILURE.search(body["message"]):
            body["message"] = errors.unavailable_message(route.backend)
        return error_response(status, body, request_id)

    def answer(self, route: Route):
        """Held while a call waits for its backend's answer (BackendGate)."""
        return self.gates[route.backend].answer(self.channels[route.backend])

    async def unary(self, route, message, metadata, timeout, request_id) -> Response:
        try:
            async with self.answer(route):
                call = self.multicallable(route)(message, metadata=metadata, timeout=timeout)
                reply = await call
        except grpc.aio.AioRpcError as error:
            return self.rpc_failure(route, error, request_id)
        headers = response_headers(await call.initial_metadata(), await call.trailing_metadata(), request_id)
        body = transcode.dumps(transcode.to_json_value(reply, route.response_body))
        return Response(body, 200, headers, media_type=JSON)

    async def server_stream(self, route, message, request, metadata, timeout, request_id, held) -> Response:
        # Until the first reply arrives a failure is still an HTTP status.
        try:
            async with self.answer(route):
                call = self.multicallable(route)(message, metadata=metadata, timeout=timeout)
                # However the response ends (sent, its client gone or stalled), the backend stops working for it.
                held.callback(call.cancel)
                replies = call.__aiter__()
                first = await anext(replies)
        except StopAsyncIteration:
            first = None
        except grpc.aio.AioRpcError as error:
            return self.rpc_failure(route, error, request_id)
        sse = EVENT_STREAM in request.headers.get("accept", "")

        def frame(payload: dict, event: str | None = None) -> bytes:
            if not sse:
                return transcode.dumps(payload) + b"\n"
            head = f"event: {event}\n".encode() if event else b""
            return head + b"data: " + transcode.dumps(payload) + b"\n\n"

        async def frames() -> AsyncIterator[bytes]:
            try:
                if first is not None:
                    yield frame({"result": transcode.to_json_value(first, route.response_body)})
                    async for reply in replies:
                        yield frame({"result": transcode.to_json_value(reply, route.response_body)})
            except grpc.aio.AioRpcError as error:
                yield frame({"error": errors.from_rpc_error(error)[1]}, event="error")
            finally:
                # A client that went away must not leave the backend working for nobody.
                call.cancel()

        headers = response_headers(await call.initial_metadata(), None, request_id)
        if sse:
            headers["cache-control"] = "no-cache"
        return StreamingResponse(frames(), 200, headers, media_type=EVENT_STREAM if sse else JSON)

    async def client_stream(self, route, variables, request, metadata, timeout, request_id) -> Response:
        problem: list[Exception] = []
        call_holder: list = []

        async def messages():
            try:
                async for message in uploads.request_messages(
                    route, self.message_class(route), variables, request, self.upload_limits
                ):
                    yield message
            except (InvalidArgument, ResourceExhausted, ClientDisconnect, uploads.UploadIdle) as error:
                problem.append(error)
                call_holder[0].cancel()

        try:
            async with self.answer(route):
                call = self.multicallable(route)(messages(), metadata=metadata, timeout=timeout)
                call_holder.append(call)
                reply = await call
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as error:
            if problem:
                return self.upload_problem(problem[0], request_id)
            if isinstance(error, asyncio.CancelledError):
                raise
            return self.rpc_failure(route, error, request_id)
        if problem:
            return self.upload_problem(problem[0], request_id)
        headers = response_headers(await call.initial_metadata(), await call.trailing_metadata(), request_id)
        return Response(transcode.dumps(transcode.to_json_value(reply, route.response_body)), 200, headers, media_type=JSON)

    def upload_problem(self, error: Exception, request_id: str) -> Response:
        if isinstance(error, ResourceExhausted):
            return payload_too_large(error, request_id)
        if isinstance(error, ClientDisconnect):
            return Response(status_code=499)
        if isinstance(error, uploads.UploadIdle):
            return request_timeout(error, request_id)
        return invalid_argument(error, request_id)

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise ResourceExhausted(f"request body over the {self.max_body_bytes}-byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ResourceExhausted(f"request body over the {self.max_body_bytes}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    # Health ------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def backend_health(self) -> dict[str, HealthReport]:
        names = list(self.channels)
        reports = await asyncio.gather(*(check_health(self.channels[n], timeout=self.readiness_timeout) for n in names))
        return dict(zip(names, reports))

    async def readyz(self, request: Request) -> Response:
        # The gateway's own readiness: it serves. A backend that is down makes its own routes 503
        # (and shows in /api/v1/health); were it to make every gateway unready, one stuck service
        # would take the whole API down.
        return JSONResponse({"status": "ready"})

    async def health_report(self, request: Request) -> Response:
        """Every process's status and version, the gateway's own first: what
        `sagemesh health` shows over REST. 503 unless every backend serves."""
        reports = {"gateway": HealthReport("SERVING", self.version), **await self.backend_health()}
        serving = all(report.serving for report in reports.values())
        return JSONResponse(
            {"status": "SERVING" if serving else "NOT_SERVING",
             "services": {name: {"status": r.status, "version": r.version} for name, r in reports.items()}},
            status_code=200 if serving else 503,
        )
