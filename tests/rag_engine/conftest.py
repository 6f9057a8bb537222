"""Fixtures for rag_engine's backends.

Elasticsearch: noida-db (a PyPI package: one small binary that speaks the
Elasticsearch REST API, claiming 8.15) stands in for a real cluster. It runs
on a free port with its data in a temporary folder, for the whole session.
If it does not come up the tests that need it fail: they never skip.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from importlib.resources import files

import pytest

from scripts.milvus_standalone import MilvusStartError, milvus_standalone
from tests.conftest import free_port

STARTUP_SECONDS = 20


def _noida_binary() -> str:
    # The binary itself, not the `noida-db` console script: that wrapper runs
    # the binary as a child and would not pass our terminate() on to it.
    binary = files("noida_db").joinpath("noida-db")
    if not binary.is_file():
        pytest.fail(f"noida-db's binary is missing at {binary}")
    return str(binary)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def elasticsearch_url(tmp_path_factory) -> Iterator[str]:
    """URL of an Elasticsearch-compatible server (noida-db) for this session."""
    data_dir = tmp_path_factory.mktemp("noida-db")
    port = free_port()
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [_noida_binary(), "start", "--only", "elasticsearch",
             "--elasticsearch-port", str(port), "--data-dir", str(data_dir / "data")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                log_text = log_path.read_text(errors="replace")
                pytest.fail(f"noida-db did not start on {url}:\n{log_text}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Milvus server: one real standalone server (scripts/milvus_standalone.py) runs
# for the session; each test makes collections of its own. If it does not come
# up the tests that need it fail: they never skip.

@pytest.fixture(scope="session")
def milvus_server_url(tmp_path_factory) -> Iterator[str]:
    """URL of a real Milvus standalone server for this session."""
    try:
        with milvus_standalone(tmp_path_factory.mktemp("milvus-server")) as url:
            yield url
    except MilvusStartError as error:
        pytest.fail(str(error))
