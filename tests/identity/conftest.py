from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import text

from meshkit import db
from meshkit.channels import create_channel
from meshkit.server import MeshServer
from sagemesh.identity.v1 import identity_pb2 as pb
from sagemesh.identity.v1 import identity_pb2_grpc
from services.identity.server import build
from services.identity.settings import IdentitySettings
from tests.conftest import DATABASE_BACKENDS

PASSWORD = "correct horse battery staple"


@dataclass
class IdentityUnderTest:
    channel: grpc.aio.Channel
    stub: identity_pb2_grpc.IdentityServiceStub
    server: MeshServer
    settings: IdentitySettings
    database_url: str

    async def _scalar(self, sql: str, **params):
        engine = db.create_engine(self.database_url)
        try:
            async with engine.connect() as connection:
                return await connection.scalar(text(sql), params)
        finally:
            await engine.dispose()

    async def count_users(self, email: str) -> int:
        return await self._scalar("SELECT count(*) FROM identity_users WHERE email = :email", email=email)

    async def password_hash(self, email: str) -> str:
        return await self._scalar("SELECT password_hash FROM identity_users WHERE email = :email", email=email)

    async def register_and_login(self, email: str, tenant_name: str = "") -> pb.LoginResponse:
        await self.stub.Register(
            pb.RegisterRequest(email=email, password=PASSWORD, tenant_name=tenant_name)
        )
        return await self.stub.Login(
            pb.LoginRequest(email=email, password=PASSWORD, tenant_name=tenant_name)
        )


@pytest.fixture(params=DATABASE_BACKENDS)
async def identity(request, tmp_path, database_url_for) -> AsyncIterator[IdentityUnderTest]:
    """The identity service on a free port, over a real gRPC channel."""
    settings = IdentitySettings(
        _env_file=None,
        data_dir=tmp_path,
        database_url=database_url_for(request.param),
        listen_port=0,
        # A cheaper argon2id than production's keeps the suite quick.
        argon2_time_cost=1,
        argon2_memory_cost_kib=8 * 1024,
        argon2_parallelism=1,
    )
    server = MeshServer(await build(settings), settings)
    await server.start()
    channel = create_channel(server.address, settings)
    try:
        yield IdentityUnderTest(
            channel,
            identity_pb2_grpc.IdentityServiceStub(channel), server, settings,
            settings.database_url_for("identity"),
        )
    finally:
        await channel.close()
        await server.stop(grace=0)
