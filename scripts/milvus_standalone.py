"""A real Milvus standalone server on this machine, for tests and benchmarks.

The `milvus` package (PyPI; a dev dependency) ships Milvus 2.3.5 standalone,
one binary and its libraries, with a small launcher. `milvus_standalone()`
runs one on free ports with its data in a given folder and yields its URL;
run this file to keep one up by hand (`MILVUS_URI=<url> make run`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STARTUP_SECONDS = 60
COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


class MilvusStartError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _binaries(milvus) -> Path:
    """The launcher unpacks ~250 MB of binaries into a server's folder (5-10 s):
    done once per version into a cache that every server links to."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = cache_home / "sagemesh" / f"milvus-{milvus.__version__}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes must not unpack at once
        milvus._initialize_data_files(str(cache))  # unpacks only what is missing or changed
    return cache / "bin"


def _config(milvus, base: Path):
    config = milvus.MilvusServerConfig(data_dir=str(base))
    ports = {key: _free_port() for key in config.configurable_items if key.endswith("_port")}
    # The embedded etcd ignores etcd_port and would take 2379 and 2380: its own
    # config file, a key the launcher's template lacks, gives it free ports.
    client, peer = f"http://127.0.0.1:{ports['etcd_port']}", f"http://127.0.0.1:{_free_port()}"
    etcd = base / "etcd.yaml"
    etcd.write_text(json.dumps({
        "name": "default", "listen-client-urls": client, "advertise-client-urls": client,
        "listen-peer-urls": peer, "initial-advertise-peer-urls": peer, "initial-cluster": f"default={peer}",
    }))
    template = re.sub(r"^etcd:\n", f"etcd:\n  config:\n    path: {etcd}\n", config.template_text,
                      count=1, flags=re.M)
    if template == config.template_text:
        raise MilvusStartError("the milvus package's config template has no etcd section: is it still 2.3.5?")
    config.template_text = template
    for component in COMPONENTS:
        # Otherwise each component registers, and is dialled at, the host's first address.
        config.set(f"{component}.ip", "127.0.0.1")
    return config, ports


def _healthy(health_url: str, url: str) -> bool:
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


def _log_tail(base: Path, lines: int = 40) -> str:
    parts = []
    for name in ("milvus-stdout.log", "milvus-stderr.log"):
        log = base / "logs" / name
        if log.exists():
            parts.append(f"--- {name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(parts) or "(no log)"


@contextmanager
def milvus_standalone(base: Path) -> Iterator[str]:
    """Yields the URL of a Milvus server keeping its files under `base`;
    raises MilvusStartError, with the server's log, if it does not serve."""
    try:
        import milvus
    except ImportError as error:
        raise MilvusStartError("the milvus package (a dev dependency) is missing: pip install 'milvus==2.3.5'") \
            from error
    base.mkdir(parents=True, exist_ok=True)
    (base / "bin").symlink_to(_binaries(milvus), target_is_directory=True)
    config, ports = _config(milvus, base)
    server = milvus.MilvusServer(config, wait_for_started=False, **ports)
    server.webservice_port = _free_port()  # /healthz and metrics
    cwd = os.getcwd()
    try:
        try:
            server.start()  # returns once the process is started
        finally:
            os.chdir(cwd)  # start() runs the binary from the server's folder
        url = f"http://127.0.0.1:{server.listen_port}"
        health_url = f"http://127.0.0.1:{server.webservice_port}/healthz"
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _healthy(health_url, url):
            if server.server_proc.poll() is not None:
                raise MilvusStartError(f"Milvus exited with {server.server_proc.returncode} before serving on "
                                       f"{url}:\n{_log_tail(base)}")
            if time.monotonic() > deadline:
                raise MilvusStartError(f"Milvus did not serve on {url} within {STARTUP_SECONDS} s:\n"
                                       f"{_log_tail(base)}")
            time.sleep(0.2)
        yield url
    finally:
        server.stop()  # SIGTERM; SIGKILL after a second
        # ~270 MB, mostly preallocated write-ahead logs; the logs stay.
        shutil.rmtree(base / "data", ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a Milvus standalone server until interrupted.")
    parser.add_argument("--dir", type=Path, default=None, help="its files (default: a temporary folder)")
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="milvus-"))
    with milvus_standalone(base) as url:
        print(f"Milvus serving on {url} (files in {base}); Ctrl-C stops it.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
