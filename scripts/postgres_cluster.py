"""A PostgreSQL cluster of one's own, made with Debian's postgresql-common
tools for one run and dropped after it: a bench may stop and start it under
the services without touching the machine's cluster, which other work uses."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scripts.mesh_process import free_port


@dataclass(frozen=True)
class PrivateCluster:
    version: str
    name: str
    port: int

    @property
    def url(self) -> str:
        """Its `postgres` database, as the superuser: the cluster is the run's alone."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Returns once it accepts connections."""
        self._ctl("start")

    def stop(self) -> None:
        # Fast: the sessions are cut at once, as a crash or a failover cuts them, rather than
        # waited for (the services' pooled connections would hold a smart shutdown forever).
        self._ctl("stop", "-m", "fast")

    def postmaster_pid(self) -> int | None:
        """The server's process while it runs (Debian writes it to an external pid file)."""
        with contextlib.suppress(OSError, ValueError):
            return int(Path(f"/var/run/postgresql/{self.version}-{self.name}.pid").read_text().split()[0])
        return None

    def _ctl(self, *action: str) -> None:
        # No systemd redirect: the cluster is this process's, not a unit of the machine's.
        _run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *action)


def _run(*command: str, check: bool = True) -> None:
    subprocess.run(command, check=check, capture_output=True, timeout=120)


def newest_version() -> str:
    return max(os.listdir("/usr/lib/postgresql"), key=float)


@contextlib.contextmanager
def private_cluster(prefix: str) -> Iterator[PrivateCluster]:
    """A new cluster on a free port, trusting local connections, started; dropped on the way
    out however the run ends (an error, Ctrl-C)."""
    cluster = PrivateCluster(newest_version(), f"{prefix}_{uuid.uuid4().hex[:8]}", free_port())
    try:
        _run("pg_createcluster", cluster.version, cluster.name, "--port", str(cluster.port), "--",
             "--auth=trust")
        cluster.start()
        yield cluster
    finally:
        # Also after a half-made cluster, hence no check; --stop stops it first if it runs.
        _run("pg_dropcluster", "--stop", cluster.version, cluster.name, check=False)
