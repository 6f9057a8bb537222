"""What the production overlay turns on, checked on real service processes:
a service told to share its database refuses to start on SQLite; settings are
read from files, as Kubernetes mounts a Secret; identity refuses to guess which
of several keys signs and signs with the one named."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import grpc
import jwt
import pytest

from meshkit.probe import probe_grpc
from meshkit.settings import MeshSettings
from sagemesh.identity.v1 import identity_pb2 as pb
from sagemesh.identity.v1 import identity_pb2_grpc
from services.identity.tokens import create_signing_key
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
DATABASE_SERVICES = ["identity", "conversation", "knowledge", "agent"]
PASSWORD = "a secret from a file 4!"


def service_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SAGEMESH_", "OTEL_", "DATABASE_URL"))},
        "SAGEMESH_DATA_DIR": str(data_dir),
        "SAGEMESH_LISTEN_PORT": str(free_port()),
        "SAGEMESH_METRICS_PORT": "0",
        "SAGEMESH_GRACE_PERIOD_SECONDS": "1",
        "SAGEMESH_ARGON2_TIME_COST": "1",
        "SAGEMESH_ARGON2_MEMORY_COST_KIB": "8192",
        **extra,
    }


def refused_start(service: str, env: dict[str, str]) -> str:
    """Starts the service and expects it to exit by itself; returns what it wrote to stderr."""
    started = subprocess.run([sys.executable, "-m", f"services.{service}.server"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode != 0, f"{service} started: {started.stderr[-2000:]}"
    return started.stderr


@contextmanager
def serving(service: str, env: dict[str, str]) -> Iterator[str]:
    """The service as a process of its own, once it answers health checks; its address."""
    address = f"127.0.0.1:{env['SAGEMESH_LISTEN_PORT']}"
    process = subprocess.Popen([sys.executable, "-m", f"services.{service}.server"], cwd=ROOT, env=env,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not probe_grpc(address, "", 1.0)[0]:
            assert process.poll() is None, f"{service} exited: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, f"{service} not serving after 60 s"
            time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("service", DATABASE_SERVICES)
def test_a_service_told_to_share_its_database_refuses_sqlite_at_start(service, tmp_path):
    stderr = refused_start(service, service_env(tmp_path, SAGEMESH_REQUIRE_SHARED_DATABASE="true"))
    assert "refuses to start on SQLite" in stderr and "SAGEMESH_DATABASE_URL" in stderr, stderr[-2000:]
    assert not list(tmp_path.glob("*.db")), "it wrote a SQLite file before refusing"
    # A SQLite URL given outright is refused as well.
    env = service_env(tmp_path, SAGEMESH_REQUIRE_SHARED_DATABASE="true",
                      SAGEMESH_DATABASE_URL=f"sqlite:///{tmp_path / 'given.db'}")
    assert "refuses to start on SQLite" in refused_start(service, env)


def test_settings_are_read_from_files_named_like_their_variables(tmp_path, monkeypatch):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SAGEMESH_DATABASE_URL").write_text("postgresql://app:from-a-file@db/app\n")
    (secrets / "SAGEMESH_REDIS_URL").write_text("rediss://:from-a-file@redis:6380/0")
    for name in ("SAGEMESH_DATABASE_URL", "DATABASE_URL", "SAGEMESH_REDIS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SAGEMESH_SECRETS_DIR", str(secrets))
    settings = MeshSettings(_env_file=None)
    assert settings.database_url == "postgresql://app:from-a-file@db/app"
    assert settings.redis_url == "rediss://:from-a-file@redis:6380/0"
    # The environment wins over a file.
    monkeypatch.setenv("SAGEMESH_REDIS_URL", "redis://from-the-environment")
    assert MeshSettings(_env_file=None).redis_url == "redis://from-the-environment"


def login_kid(address: str, email: str) -> str:
    """Registers and logs in over gRPC; the key id in the access token's header."""
    async def call() -> str:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD))
            login = await stub.Login(pb.LoginRequest(email=email, password=PASSWORD))
            return jwt.get_unverified_header(login.access_token)["kid"]

    return asyncio.run(call())


@pytest.mark.postgres
def test_identity_in_production_reads_its_database_url_from_a_secret_file_and_signs_with_the_named_key(
        tmp_path, postgres_url):
    keys = tmp_path / "jwt"
    named, _ = create_signing_key(keys)
    time.sleep(0.01)
    newer, _ = create_signing_key(keys)  # the newest file: once the key that signed
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SAGEMESH_DATABASE_URL").write_text(postgres_url)
    env = service_env(tmp_path, SAGEMESH_REQUIRE_SHARED_DATABASE="true", SAGEMESH_SECRETS_DIR=str(secrets),
                      SAGEMESH_JWT_KEYS_DIR=str(keys), SAGEMESH_JWT_SIGNING_KEY_ID=named)
    with serving("identity", env) as address:
        assert login_kid(address, "file@example.com") == named != newer

    async def users() -> int:
        connection = await asyncpg.connect(postgres_url)
        try:
            return await connection.fetchval("SELECT count(*) FROM identity_users WHERE email = 'file@example.com'")
        finally:
            await connection.close()

    assert asyncio.run(users()) == 1  # in the database the file named, not in a SQLite file
    assert not list(tmp_path.glob("*.db"))


def test_identity_refuses_to_guess_which_of_several_keys_signs(tmp_path):
    keys = tmp_path / "jwt"
    first, _ = create_signing_key(keys)
    second, _ = create_signing_key(keys)
    stderr = refused_start("identity", service_env(tmp_path, SAGEMESH_JWT_KEYS_DIR=str(keys)))
    assert "name the one that signs with SAGEMESH_JWT_SIGNING_KEY_ID" in stderr, stderr[-2000:]
    assert first in stderr and second in stderr
