"""Fixtures shared by the whole suite.

PostgreSQL: each run creates a database of its own on the server named by
SAGEMESH_TEST_POSTGRES_URL (default: the local server, which .ci/run starts)
and drops it at the end. Tests marked `postgres` fail, not skip, when the
server is down: a suite that silently skips its real backend proves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from scripts.mesh_process import free_port  # noqa: F401  (the tests import it from here)

pytest_plugins = ["tests.fixtures.identity", "tests.fixtures.mesh"]

POSTGRES_ADMIN_URL = os.environ.get(
    "SAGEMESH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@contextlib.asynccontextmanager
async def serving_asgi(app) -> AsyncIterator[str]:
    """A stand-in HTTP server (an ASGI app under uvicorn) on a free port, in
    this event loop; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)
    served = uvicorn.Server(config)
    task = asyncio.create_task(served.serve())
    while not served.started:
        assert not task.done(), "the stand-in HTTP server did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        served.should_exit = True
        await task


async def _admin_execute(statement: str) -> None:
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


def _run_on_own_loop(statement: str) -> None:
    # Synchronous, so async fixtures may request it lazily inside a running loop.
    with ThreadPoolExecutor(1) as worker:
        worker.submit(asyncio.run, _admin_execute(statement)).result()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database for this test session."""
    name = f"sagemesh_test_{uuid.uuid4().hex[:12]}"
    _run_on_own_loop(f'CREATE DATABASE "{name}"')
    yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    _run_on_own_loop(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


DATABASE_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def database_url_for(request, tmp_path):
    """Resolves a backend name to a database URL (a new schema-less database)."""

    def resolve(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / 'test.db'}"
        return request.getfixturevalue("postgres_url")

    return resolve
