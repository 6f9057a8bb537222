"""Fixtures for rag_engine's backends.

Elasticsearch: noida-db (a PyPI package: one small binary that speaks the
Elasticsearch REST API, claiming 8.15) stands in for a real cluster. It runs
on a free port with its data in a temporary folder, for the whole session.
If it does not come up the tests that need it fail: they never skip.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest

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


# Milvus server: the `milvus` package (PyPI; a test dependency) ships Milvus
# 2.3.5 standalone, one binary and its libraries, with a small launcher. One
# server runs for the session on free ports with its data in a temporary
# folder; each test makes collections of its own. If it does not come up the
# tests that need it fail: they never skip.

MILVUS_STARTUP_SECONDS = 60
MILVUS_COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord",
                     "dataNode")


def _milvus_binaries(milvus) -> Path:
    """The launcher unpacks ~250 MB of binaries into a server's folder (5-10 s):
    done once per version into a cache that every session links to."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = cache_home / "sagemesh" / f"milvus-{milvus.__version__}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions must not unpack at once
        milvus._initialize_data_files(str(cache))  # unpacks only what is missing or changed
    return cache / "bin"


def _milvus_config(milvus, base: Path):
    config = milvus.MilvusServerConfig(data_dir=str(base))
    ports = {key: free_port() for key in config.configurable_items if key.endswith("_port")}
    # The embedded etcd ignores etcd_port and would take 2379 and 2380: its own
    # config file, a key the launcher's template lacks, gives it free ports.
    client, peer = f"http://127.0.0.1:{ports['etcd_port']}", f"http://127.0.0.1:{free_port()}"
    etcd = base / "etcd.yaml"
    etcd.write_text(json.dumps({
        "name": "default", "listen-client-urls": client, "advertise-client-urls": client,
        "listen-peer-urls": peer, "initial-advertise-peer-urls": peer, "initial-cluster": f"default={peer}",
    }))
    template = re.sub(r"^etcd:\n", f"etcd:\n  config:\n    path: {etcd}\n", config.template_text,
                      count=1, flags=re.M)
    if template == config.template_text:
        pytest.fail("the milvus package's config template has no etcd section: is it still 2.3.5?")
    config.template_text = template
    for component in MILVUS_COMPONENTS:
        # Otherwise each component registers, and is dialled at, the host's first address.
        config.set(f"{component}.ip", "127.0.0.1")
    return config, ports


def _milvus_healthy(health_url: str, url: str) -> bool:
    from pymilvus import MilvusClient

    try:
        with urllib.request.urlopen(health_url, timeout=1) as response:
            if b"OK" not in response.read():
                return False
        client = MilvusClient(url, timeout=5)
    except Exception:  # not up yet: refused, reset, not healthy
        return False
    try:
        client.list_collections()
        return True
    except Exception:
        return False
    finally:
        client.close()


def _milvus_log_tail(base: Path, lines: int = 40) -> str:
    parts = []
    for name in ("milvus-stdout.log", "milvus-stderr.log"):
        log = base / "logs" / name
        if log.exists():
            parts.append(f"--- {name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(parts) or "(no log)"


@pytest.fixture(scope="session")
def milvus_server_url(tmp_path_factory) -> Iterator[str]:
    """URL of a real Milvus standalone server for this session."""
    try:
        import milvus
    except ImportError:
        pytest.fail("the milvus package (a test dependency) is missing: pip install 'milvus==2.3.5'")
    base = tmp_path_factory.mktemp("milvus-server")
    (base / "bin").symlink_to(_milvus_binaries(milvus), target_is_directory=True)
    config, ports = _milvus_config(milvus, base)
    server = milvus.MilvusServer(config, wait_for_started=False, **ports)
    server.webservice_port = free_port()  # /healthz and metrics
    cwd = os.getcwd()
    try:
        try:
            server.start()  # returns once the process is started
        finally:
            os.chdir(cwd)  # start() runs the binary from the server's folder
        url = f"http://127.0.0.1:{server.listen_port}"
        health_url = f"http://127.0.0.1:{server.webservice_port}/healthz"
        deadline = time.monotonic() + MILVUS_STARTUP_SECONDS
        while not _milvus_healthy(health_url, url):
            if server.server_proc.poll() is not None:
                pytest.fail(f"Milvus exited with {server.server_proc.returncode} before serving on {url}:\n"
                            f"{_milvus_log_tail(base)}")
            if time.monotonic() > deadline:
                pytest.fail(f"Milvus did not serve on {url} within {MILVUS_STARTUP_SECONDS} s:\n"
                            f"{_milvus_log_tail(base)}")
            time.sleep(0.2)
        yield url
    finally:
        server.stop()  # SIGTERM; SIGKILL after a second
        # ~270 MB, mostly preallocated write-ahead logs; the logs stay.
        shutil.rmtree(base / "data", ignore_errors=True)
