"""`make run`'s launcher: starts the mesh, reports where it listens, and
stops every service cleanly on Ctrl-C."""

from __future__ import annotations

import json
import urllib.request

from scripts.mesh_process import mesh_env, running_mesh


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
