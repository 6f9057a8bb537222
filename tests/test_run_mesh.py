"""`make run`'s launcher: starts the mesh, reports where it listens, and
stops every service cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import urllib.request

from scripts.mesh_process import mesh_env, running_mesh
from scripts.run_mesh import stop_all


def test_launcher_starts_the_mesh_and_ctrl_c_stops_it(tmp_path):
    env = mesh_env(tmp_path)
    with running_mesh(env) as mesh:
        for name, address in mesh.addresses.items():
            assert f"{name:<13} grpc  {address:<22}  metrics {mesh.metrics[name]}" in mesh.output
        assert f"gateway       http  {mesh.url}  (API docs: {mesh.url}/docs)  metrics {mesh.metrics['gateway']}" \
            in mesh.output
        with urllib.request.urlopen(f"{mesh.url}/api/v1/health", timeout=5) as reply:
            statuses = {name: report["status"] for name, report in json.load(reply)["services"].items()}
            assert statuses == {"gateway": "SERVING", "identity": "SERVING", "conversation": "SERVING",
                                "knowledge": "SERVING", "rag_engine": "SERVING", "agent": "SERVING"}
    assert mesh.launcher.returncode == 0  # Ctrl-C stopped every process cleanly


async def test_a_process_that_ignores_sigterm_is_killed_and_named(capsys):
    # A service whose shutdown hangs must not hang `make run`'s Ctrl-C (nor a test's teardown).
    stubborn = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                              "print('ready', flush=True); time.sleep(60)", stdout=asyncio.subprocess.PIPE)
    polite = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    assert await stubborn.stdout.readline() == b"ready\n"  # its handler is set
    codes = await stop_all({"stubborn": stubborn, "polite": polite}, timeout=1)
    assert codes == [-signal.SIGKILL, -signal.SIGTERM]
    assert "stubborn still running 1 s after SIGTERM: killed" in capsys.readouterr().err
