"""The `sagemesh` command as people run it: the installed console script, in a
process of its own, against the whole mesh as `make run` starts it."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.mesh_process import mesh_env, running_mesh

SAGEMESH = Path(sys.executable).with_name("sagemesh")
PASSWORD = "correct horse battery staple"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    def json_lines(self) -> list:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def failed_with(self, code: int, *words: str) -> bool:
        """Failed as the CLI promises to: the exit code, and one line on stderr saying `words`."""
        lines = self.stderr.splitlines()
        assert self.code == code, self
        assert len(lines) == 1 and lines[0].startswith("error: "), self.stderr
        assert all(word in lines[0] for word in words), lines[0]
        return True


class Cli:
    """Runs `sagemesh` with a config file of its own and no SAGEMESH_* variables but `env`'s."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        assert SAGEMESH.exists(), f"{SAGEMESH} is missing: `make install` installs the console script"
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.config = home / "config.toml"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SAGEMESH_", "OTEL_"))},
            # Tables as wide as they like; no colours (stdout is not a terminal anyway).
            "COLUMNS": "200", "NO_COLOR": "1",
            "SAGEMESH_CONFIG": str(self.config),
            **env,
        }

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> Result:
        done = subprocess.run([str(SAGEMESH), *args], input=input, capture_output=True, text=True,
                              env={**self.env, **(env or {})}, cwd=cwd or self.home, timeout=300,
                              # No controlling terminal: nothing may wait on the developer's.
                              start_new_session=True)
        assert "Traceback" not in done.stderr, done.stderr
        return Result(done.returncode, done.stdout, done.stderr)

    def in_terminal(self, *args: str, answers: list[str], cwd: Path | None = None) -> Result:
        """With a terminal as stdin, typing each answer once its password prompt shows: getpass
        throws away what was typed before it asks."""
        controller, terminal = pty.openpty()
        process = subprocess.Popen([str(SAGEMESH), *args], stdin=terminal, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=self.env, cwd=cwd or self.home,
                                   start_new_session=True)
        os.close(terminal)
        prompts, deadline = b"", time.monotonic() + 60
        try:
            for asked, answer in enumerate(answers, start=1):
                # With no controlling terminal, getpass asks on stderr.
                while prompts.count(b"assword: ") < asked:
                    ready, _, _ = select.select([process.stderr], [], [], max(0.0, deadline - time.monotonic()))
                    assert ready, f"no password prompt: {prompts!r}"
                    piece = os.read(process.stderr.fileno(), 4096)
                    assert piece, f"exited before asking: {prompts!r}"
                    prompts += piece
                os.write(controller, answer.encode() + b"\n")
            stdout, stderr = process.communicate(timeout=300)
        finally:
            os.close(controller)
            if process.poll() is None:
                process.kill()
        stderr = (prompts + stderr).decode()
        assert "Traceback" not in stderr, stderr
        return Result(process.returncode, stdout.decode(), stderr)


@pytest.fixture(scope="session")
def mesh(tmp_path_factory):
    """`scripts/run_mesh.py` on free ports, for every CLI test."""
    with running_mesh(mesh_env(tmp_path_factory.mktemp("mesh"), SAGEMESH_LOG_LEVEL="WARNING")) as running:
        yield running


def transport_env(mesh, transport: str) -> dict[str, str]:
    """How a user points the CLI at the mesh: the gateway's URL, or every service's gRPC address."""
    if transport == "rest":
        return {"SAGEMESH_URL": mesh.url}
    return {"SAGEMESH_GRPC": ",".join(f"{name}={address}" for name, address in mesh.addresses.items())}


@pytest.fixture(params=["rest", "grpc"])
def cli(request, mesh, tmp_path) -> Cli:
    """The CLI over each transport, with a config file of its own."""
    runner = Cli(tmp_path, transport_env(mesh, request.param))
    runner.transport = request.param
    return runner


@pytest.fixture
def rest_cli(mesh, tmp_path) -> Cli:
    return Cli(tmp_path, transport_env(mesh, "rest"))


def sign_up(cli: Cli, email: str) -> None:
    """Registers and logs in, the password from stdin."""
    assert cli("register", "--email", email, "--password-stdin", input=PASSWORD).code == 0
    assert cli("login", "--email", email, "--password-stdin", input=PASSWORD).code == 0
