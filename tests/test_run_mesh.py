"""`make run`'s launcher: starts the mesh, reports where it listens, and
stops every service cleanly on Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_launcher_starts_the_mesh_and_ctrl_c_stops_it(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    rag_engine_address = f"127.0.0.1:{free_port()}"
    knowledge_address = f"127.0.0.1:{free_port()}"
    conversation_address = f"127.0.0.1:{free_port()}"
    agent_address = f"127.0.0.1:{free_port()}"
    http_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAGEMESH_")},
        "SAGEMESH_IDENTITY_ADDR": address,
        "SAGEMESH_RAG_ENGINE_ADDR": rag_engine_address,
        "SAGEMESH_KNOWLEDGE_ADDR": knowledge_address,
        "SAGEMESH_CONVERSATION_ADDR": conversation_address,
        "SAGEMESH_AGENT_ADDR": agent_address,
        "SAGEMESH_DATA_DIR": str(tmp_path),
        "SAGEMESH_GRACE_PERIOD_SECONDS": "2",
        "SAGEMESH_HTTP_PORT": str(http_port),
    }
    launcher = subprocess.Popen(
        [sys.executable, "scripts/run_mesh.py"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        # A group of its own, so a failing test can take the services down with it.
        start_new_session=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = launcher.stdout.readline()
            lines.append(line)
            if "Ctrl-C" in line or not line:
                break
        output = "".join(lines)
        assert "sagemesh is running" in output, output
        assert f"identity      grpc  {address}" in output
        assert f"rag_engine    grpc  {rag_engine_address}" in output
        assert f"knowledge     grpc  {knowledge_address}" in output
        assert f"conversation  grpc  {conversation_address}" in output
        assert f"agent         grpc  {agent_address}" in output
        assert f"gateway       http  http://127.0.0.1:{http_port}" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=5) as reply:
            assert json.load(reply)["backends"] == {"identity": "SERVING", "conversation": "SERVING",
                                                   "knowledge": "SERVING", "rag_engine": "SERVING",
                                                   "agent": "SERVING"}
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=20) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
