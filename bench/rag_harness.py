"""Services as the benchmarks meet them: each in its own process, called over
gRPC with a signed access token, as other services and users would call them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

from meshkit.channels import create_channel
from meshkit.health import wait_until_serving
from meshkit.settings import MeshSettings
from sagemesh.rag_engine.v1 import rag_engine_pb2_grpc
from services.identity.domain import Role, User
from services.identity.tokens import AccessTokenIssuer, load_signing_key

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def auth_metadata(issuer: AccessTokenIssuer, tenant: str) -> list[tuple[str, str]]:
    user = User(f"bench-{tenant}", tenant, tenant, f"{tenant}@example.com", tenant, Role.MEMBER,
                datetime.now(timezone.utc))
    return [("authorization", f"Bearer {issuer.issue(user, 'bench', time.time())}")]


class RagClient:
    def __init__(self, stub: rag_engine_pb2_grpc.RagEngineServiceStub, issuer: AccessTokenIssuer) -> None:
        self.stub = stub
        self._issuer = issuer

    def metadata_for(self, tenant: str) -> list[tuple[str, str]]:
        return auth_metadata(self._issuer, tenant)


@asynccontextmanager
async def service(name: str, data_dir: Path, **settings: str):
    """Starts `python -m services.<name>.server` with SAGEMESH_<name>
    settings and yields (channel, address) once it reports SERVING."""
    async with service_process(name, data_dir, **settings) as (channel, address, _):
        yield channel, address


@asynccontextmanager
async def service_process(name: str, data_dir: Path, **settings: str):
    """As `service`, yielding (channel, address, process): the Popen of the server, for a bench
    that watches the process (its memory, its CPU)."""
    port = free_port()
    env = {**os.environ, "SAGEMESH_DATA_DIR": str(data_dir), "SAGEMESH_LISTEN_PORT": str(port),
           "SAGEMESH_LOG_LEVEL": "WARNING",
           # No /metrics: its default port may be taken by `make run` or a test's service on this machine.
           "SAGEMESH_METRICS_PORT": "0"}
    env.update({f"SAGEMESH_{key.upper()}": value for key, value in settings.items()})
    client_settings = MeshSettings(_env_file=None, data_dir=data_dir, default_deadline_seconds=600)
    process = subprocess.Popen([sys.executable, "-m", f"services.{name}.server"], cwd=ROOT, env=env)
    address = f"127.0.0.1:{port}"
    channel = create_channel(address, client_settings)
    try:
        if not await wait_until_serving(channel, lambda: process.poll() is None, 120):
            raise RuntimeError(f"{name} did not start serving ({process.poll() or 'no exit'})")
        yield channel, address, process
    finally:
        await channel.close()
        process.terminate()
        process.wait(timeout=60)


def token_issuer(data_dir: Path) -> AccessTokenIssuer:
    """Signs tokens with the key every service started on `data_dir` trusts."""
    settings = MeshSettings(_env_file=None, data_dir=data_dir)
    kid, key = load_signing_key(settings.keys_dir, None)
    return AccessTokenIssuer(kid, key, settings.jwt_issuer, settings.jwt_audience, 24 * 3600)


@asynccontextmanager
async def rag_engine(data_dir: Path, **settings: str):
    """rag_engine in its own process; yields a client once it is SERVING."""
    issuer = token_issuer(data_dir)
    async with service("rag_engine", data_dir, **settings) as (channel, _):
        yield RagClient(rag_engine_pb2_grpc.RagEngineServiceStub(channel), issuer)
