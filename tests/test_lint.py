"""Pyflakes and syntax checks (ruff) over all Python code: what is always a bug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_python_code_has_no_pyflakes_errors():
    result = subprocess.run(
        [Path(sys.executable).parent / "ruff", "check", "meshkit", "gateway", "services", "scripts", "tests", "bench",
         "sagemesh_sdk", "sagemesh_cli"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
