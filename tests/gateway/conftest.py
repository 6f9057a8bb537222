"""A real gateway (uvicorn, over HTTP) in front of real gRPC servers.

The Echo service is a contract for testing the gateway alone
(proto/gateway_echo.proto, compiled here): one http rule of each kind, and a
servicer that reports what it received.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import google.api
import grpc
import httpx
import pytest
import uvicorn
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from grpc_tools import protoc

from gateway.app import Gateway
from gateway.server import build, query_limits
from gateway.settings import GatewaySettings
from gateway.uploads import UploadLimits
from gateway.rules import Router, routes_of
from meshkit.channels import create_channel
from meshkit.settings import MeshSettings
from tests.conftest import free_port

PROTO_DIR = Path(__file__).parent / "proto"
MAX_BODY_BYTES = 64 * 1024
MAX_UPLOAD_BYTES = 8 * 1024 * 1024


@pytest.fixture(scope="session")
def echo_modules(tmp_path_factory):
    out = tmp_path_factory.mktemp("echo_gen")
    args = [
        "protoc", f"-I{PROTO_DIR}", f"-I{Path(google.api.__path__[0]).parent.parent}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out}", f"--grpc_python_out={out}", "gateway_echo.proto",
    ]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(out))
    return importlib.import_module("gateway_echo_pb2"), importlib.import_module("gateway_echo_pb2_grpc")


class EchoServicer:
    def __init__(self, pb) -> None:
        self.pb = pb

    async def _echo(self, request, context):
        await context.send_initial_metadata((("x-echo", "yes"),))
        context.set_trailing_metadata((("x-trailer", "done"),))
        remaining = context.time_remaining()
        return self.pb.EchoResponse(
            request=request,
            metadata={k: v for k, v in context.invocation_metadata() if isinstance(v, str)},
            remaining_seconds=-1 if remaining is None else remaining,
        )

    Echo = _echo
    EchoRequestOnly = _echo
    Hidden = _echo

    async def Fail(self, request, context):
        status = status_pb2.Status(code=request.code, message=request.message)
        if request.field:
            violation = error_details_pb2.BadRequest.FieldViolation(field=request.field, description="bad")
            status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        rich = rpc_status.to_status(status)
        await context.abort(rich.code, rich.details, rich.trailing_metadata)

    async def Expand(self, request, context):
        for index in range(request.count):
            await asyncio.sleep(request.delay_seconds)
            yield self.pb.ExpandResponse(index=index)
        if request.fail_code:
            await context.abort(grpc.StatusCode(_code(request.fail_code)), "expansion failed midway")

    async def Collect(self, request_iterator, context):
        meta, digest, size, chunks = None, hashlib.sha256(), 0, 0
        async for message in request_iterator:
            if message.WhichOneof("payload") == "meta":
                if meta is not None or chunks:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "meta must come once, first")
                meta = message.meta
            else:
                digest.update(message.data)
                size += len(message.data)
                chunks += 1
        return self.pb.CollectResponse(meta=meta, size=size, sha256=digest.hexdigest(), chunks=chunks)


def _code(number: int):
    return next(code for code in grpc.StatusCode if code.value[0] == number)


class HttpGateway:
    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url


@pytest.fixture(scope="module")
async def echo_address(echo_modules) -> AsyncIterator[str]:
    pb, pb_grpc = echo_modules
    server = grpc.aio.server()
    pb_grpc.add_EchoServiceServicer_to_server(EchoServicer(pb), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def serve_gateway(app: Gateway) -> tuple[uvicorn.Server, asyncio.Task, str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_config=None,
                       access_log=False, http="httptools")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{port}"


async def stop_gateway(server: uvicorn.Server, task: asyncio.Task) -> None:
    server.should_exit = True
    await task


def echo_gateway_app(echo_modules, backends: dict[str, str], settings: MeshSettings, **options) -> Gateway:
    pb, _ = echo_modules
    service = pb.DESCRIPTOR.services_by_name["EchoService"]
    defaults = GatewaySettings(_env_file=None)
    return Gateway(
        Router(routes_of(service, "echo")),
        {name: partial(create_channel, address, settings) for name, address in backends.items()},
        max_body_bytes=MAX_BODY_BYTES,
        upload_limits=UploadLimits(options.pop("max_upload_bytes", MAX_UPLOAD_BYTES), MAX_BODY_BYTES, max_fields=8,
                                   max_field_bytes=1024, idle_seconds=options.pop("upload_idle_seconds", None)),
        query_limits=options.pop("query_limits", query_limits(defaults)),
        forwarded_metadata=options.pop("forwarded_metadata", defaults.forwarded_metadata),
        backend_connect_timeout=options.pop("backend_connect_timeout", defaults.backend_connect_timeout_seconds),
        max_calls_waiting_per_backend=options.pop("max_calls_waiting_per_backend",
                                                  defaults.max_calls_waiting_per_backend),
        readiness_timeout=0.5,
        **options,
    )


@pytest.fixture(scope="module")
async def gateway(echo_modules, echo_address) -> AsyncIterator[HttpGateway]:
    settings = MeshSettings(_env_file=None, default_deadline_seconds=7)
    app = echo_gateway_app(echo_modules, {"echo": echo_address}, settings)
    server, task, url = await serve_gateway(app)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield HttpGateway(client, url)
    await stop_gateway(server, task)


def as_json(message) -> dict:
    return json_format.MessageToDict(message)


@asynccontextmanager
async def gateway_client(**settings_fields) -> AsyncIterator[httpx.AsyncClient]:
    """The real gateway (`gateway.server.build`) with these settings, and a client of it."""
    server, task, url = await serve_gateway(build(GatewaySettings(_env_file=None, **settings_fields)))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client
    finally:
        await stop_gateway(server, task)
