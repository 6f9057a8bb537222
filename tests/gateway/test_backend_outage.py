"""A backend that is down or stuck costs only its own routes (issue 19, item 1).

The gateway stays ready, the backend's routes answer 503 within a couple of
seconds, every other route keeps answering, and /api/v1/health shows which
backend is down. A backend that accepts calls and never answers can hold only
a bounded number of requests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from meshkit.settings import MeshSettings
from tests.conftest import free_port
from tests.gateway.conftest import echo_gateway_app, gateway_client, serve_gateway, stop_gateway

PASSWORD = "correct horse battery staple"
UNAVAILABLE = 14


@pytest.fixture
async def silent_address() -> AsyncIterator[str]:
    """A server that accepts connections and never says a word: no HTTP/2, no gRPC."""
    connections: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.read(65536):
            pass  # what it is sent, it ignores

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in connections:
        writer.close()
    server.close()


class NeverAnswers(grpc.GenericRpcHandler):
    """A gRPC server that takes every call and answers none."""

    def __init__(self) -> None:
        self.calls = 0

    def service(self, handler_call_details):
        async def hang(request, context):
            self.calls += 1
            await asyncio.Event().wait()

        return grpc.unary_unary_rpc_method_handler(hang)


def assert_unavailable(reply: httpx.Response, backend: str) -> None:
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"code": UNAVAILABLE, "message": f"the {backend} service is unavailable; try again shortly",
                            "details": []}
    assert reply.headers["x-request-id"]


async def timed(request) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    reply = await request
    return reply, time.monotonic() - started


async def test_a_stopped_and_a_stuck_backend_cost_only_their_own_routes(identity, silent_address):
    stopped = f"127.0.0.1:{free_port()}"
    async with gateway_client(identity_addr=identity.server.address, agent_addr=silent_address,
                              knowledge_addr=stopped, gateway_services=["identity", "agent", "knowledge"],
                              rate_limits=False) as client:
        # Requests for the stuck backend pile up meanwhile; none may hold the others.
        stuck = [asyncio.create_task(timed(client.get("/api/v1/agent/tools"))) for _ in range(20)]
        ready, ready_seconds = await timed(client.get("/readyz"))
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        assert ready_seconds < 0.5

        email = f"outage-{uuid.uuid4().hex[:8]}@example.com"
        registered, register_seconds = await timed(
            client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD}))
        assert registered.status_code == 200, registered.text
        login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {login.json()['accessToken']}"})
        assert me.status_code == 200 and me.json()["email"] == email

        for reply, seconds in await asyncio.gather(*stuck):
            assert_unavailable(reply, "agent")
            assert seconds < 3  # the connection wait (1 s), not the call's 10 s deadline
        stopped_reply, stopped_seconds = await timed(client.get("/api/v1/knowledge/bases"))
        assert_unavailable(stopped_reply, "knowledge")
        assert stopped_seconds < 3

        health = await client.get("/api/v1/health")
        assert health.status_code == 503
        statuses = {name: report["status"] for name, report in health.json()["services"].items()}
        assert statuses == {"gateway": "SERVING", "identity": "SERVING", "agent": "DEADLINE_EXCEEDED",
                            "knowledge": "UNAVAILABLE"}


async def test_a_backend_that_never_answers_holds_a_bounded_number_of_requests(echo_modules):
    hanging = NeverAnswers()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((hanging,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = MeshSettings(_env_file=None, default_deadline_seconds=3)
    app = echo_gateway_app(echo_modules, {"echo": f"127.0.0.1:{port}"}, settings, max_calls_waiting_per_backend=3)
    http, task, url = await serve_gateway(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            waiting = [asyncio.create_task(client.get(f"/v1/echo/{n}")) for n in range(3)]
            while hanging.calls < 3:
                await asyncio.sleep(0.01)
            # The backend holds three calls: the next are refused at once, not queued behind them.
            for reply, seconds in await asyncio.gather(*(timed(client.get("/v1/echo/more")) for _ in range(10))):
                assert_unavailable(reply, "echo")
                assert seconds < 1
            assert hanging.calls == 3
            assert (await client.get("/readyz")).status_code == 200
            # The three held ones end at their deadline, and free their places.
            assert [reply.status_code for reply in await asyncio.gather(*waiting)] == [504, 504, 504]
            after = await client.get("/v1/echo/after", headers={"Grpc-Timeout": "200m"})
            assert after.status_code == 504 and hanging.calls == 4
    finally:
        await stop_gateway(http, task)
        await server.stop(0)
