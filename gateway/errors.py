"""gRPC status -> HTTP, exactly as grpc-gateway's HTTPStatusFromCode."""

from __future__ import annotations

import grpc
from google.protobuf import json_format
from grpc_status import rpc_status

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def unavailable_message(backend: str) -> str:
    # Not gRPC's wording of a failed connection: it names internal addresses.
    return f"the {backend} service is unavailable; try again shortly"


def status_json(code: grpc.StatusCode, message: str, details=()) -> dict:
    return {"code": code.value[0], "message": message, "details": list(details)}


def from_rpc_error(error: grpc.aio.AioRpcError) -> tuple[int, dict]:
    """HTTP status and google.rpc.Status JSON of a failed call, details included."""
    code = error.code()
    message = error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and not message.strip():
        message = "backend unavailable"
    details: list = []
    try:
        rich = rpc_status.from_call(error)
    except ValueError:
        rich = None
    if rich is not None:
        details = json_format.MessageToDict(rich)["details"] if rich.details else []
    return HTTP_STATUS.get(code, 500), status_json(code, message, details)

