"""meshkit.probe, run as the image's HEALTHCHECK runs it: a separate process
against a real MeshServer (or HTTP endpoint) serving in this test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from meshkit.probe import default_target, main_process_command, service_of_command
from meshkit.server import MeshServer, ServiceApp
from meshkit.settings import MeshSettings
from meshkit.topology import SERVICES, ServiceInfo
from tests.conftest import free_port, serving_asgi

ROOT = Path(__file__).resolve().parent.parent.parent
PROBED = ServiceInfo("probed", "sagemesh.identity.v1.IdentityService", 0, 0)
# Where a proxy would be if the container's environment named one; nothing listens there.
DEAD_PROXY = f"http://127.0.0.1:{free_port()}"


@contextlib.asynccontextmanager
async def mesh_server(tmp_path: Path, database_up: bool = True) -> AsyncIterator[str]:
    """A MeshServer whose one dependency check passes or fails; yields its address."""

    async def database() -> None:
        if not database_up:
            raise ConnectionError("database unreachable")

    settings = MeshSettings(_env_file=None, data_dir=tmp_path, listen_port=0)
    server = MeshServer(ServiceApp(PROBED, lambda grpc_server: None, health_checks={"database": database}),
                        settings)
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)


async def probe(*args: str, **environ: str) -> tuple[int, str]:
    """Runs `python -m meshkit.probe ARGS` without blocking the loop the servers run in;
    its environment holds no SAGEMESH_ settings but those given."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SAGEMESH_")}
    env.update(environ)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshkit.probe", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode, output.decode()


def assert_one_line(output: str) -> None:
    assert "Traceback" not in output, output
    assert output.endswith("\n") and output.count("\n") == 1, output


def health_app(status: int) -> Starlette:
    async def healthz(request):
        return PlainTextResponse("ok" if status == 200 else "draining", status_code=status)

    return Starlette(routes=[Route("/healthz", healthz)])


async def test_a_serving_server_is_healthy(tmp_path):
    async with mesh_server(tmp_path) as address:
        code, output = await probe("--grpc", address, https_proxy=DEAD_PROXY, http_proxy=DEAD_PROXY)
    assert code == 0, output
    assert_one_line(output)
    assert f"grpc {address}" in output and "SERVING" in output


async def test_a_server_reporting_not_serving_is_unhealthy(tmp_path):
    async with mesh_server(tmp_path, database_up=False) as address:
        code, output = await probe("--grpc", address)
    assert code == 1, output
    assert_one_line(output)
    assert "NOT_SERVING" in output


async def test_nothing_listening_is_unhealthy_in_one_line():
    code, output = await probe("--grpc", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 1, output
    assert_one_line(output)
    assert "UNAVAILABLE" in output


async def test_the_service_asked_for_is_the_one_checked(tmp_path):
    async with mesh_server(tmp_path) as address:
        known = await probe("--grpc", address, "--service", PROBED.grpc_service)
        unknown = await probe("--grpc", address, "--service", "sagemesh.nothing.v1.NoService")
    assert known[0] == 0, known[1]
    assert unknown[0] == 1 and "NOT_FOUND" in unknown[1], unknown[1]
    assert_one_line(unknown[1])


async def test_http_200_is_healthy_and_503_is_not():
    async with serving_asgi(health_app(200)) as up, serving_asgi(health_app(503)) as draining:
        ok = await probe("--http", f"{up}/healthz", http_proxy=DEAD_PROXY)
        refused = await probe("--http", f"{draining}/healthz")
    assert ok[0] == 0 and "HTTP 200" in ok[1], ok[1]
    assert refused[0] == 1 and "HTTP 503" in refused[1], refused[1]
    for _, output in (ok, refused):
        assert_one_line(output)


async def test_http_nothing_listening_is_unhealthy_in_one_line():
    code, output = await probe("--http", f"http://127.0.0.1:{free_port()}/healthz")
    assert code == 1, output
    assert_one_line(output)
    assert "unreachable" in output


async def test_without_a_target_the_listen_port_is_probed(tmp_path):
    async with mesh_server(tmp_path) as address:
        code, output = await probe(SAGEMESH_LISTEN_PORT=address.rsplit(":", 1)[1])
    assert code == 0, output
    assert f"grpc {address}" in output


async def test_without_a_target_or_a_listen_port_the_gateway_is_probed():
    # Here PID 1 is no mesh service, as in a container running the gateway.
    assert service_of_command(main_process_command()) is None
    async with serving_asgi(health_app(200)) as url:
        code, output = await probe(SAGEMESH_HTTP_PORT=url.rsplit(":", 1)[1])
    assert code == 0, output
    assert f"http {url}/healthz: HTTP 200" in output


def test_the_default_target_follows_what_the_container_runs():
    identity = ["python", "-m", "services.identity.server"]
    assert default_target({}, identity) == ("grpc", f"127.0.0.1:{SERVICES['identity'].default_port}")
    # Behind an init (docker run --init) the service is still found in PID 1's arguments.
    behind_init = ["/sbin/docker-init", "--", "python", "-m", "services.rag_engine.server"]
    assert default_target({}, behind_init) == ("grpc", f"127.0.0.1:{SERVICES['rag_engine'].default_port}")
    assert default_target({"SAGEMESH_LISTEN_PORT": "6000"}, identity) == ("grpc", "127.0.0.1:6000")
    assert default_target({}, ["python", "-m", "gateway.server"]) == ("http", "http://127.0.0.1:8080/healthz")
    assert default_target({"SAGEMESH_HTTP_PORT": "8181"}, []) == ("http", "http://127.0.0.1:8181/healthz")
    assert service_of_command(["python", "-m", "services.nothing.server"]) is None
