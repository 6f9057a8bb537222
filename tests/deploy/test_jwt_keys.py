"""scripts/jwt_keys.py makes the key pair the Secrets carry: identity signs
with it and every other service verifies with its public half alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from meshkit.auth import PublicKeyRing
from services.identity.tokens import load_signing_key

ROOT = Path(__file__).resolve().parent.parent.parent


def test_a_new_pair_is_what_identity_signs_with_and_the_public_half_verifies(tmp_path):
    made = subprocess.run([sys.executable, "scripts/jwt_keys.py", str(tmp_path / "signing")], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    kid = made.stdout.strip()
    assert (tmp_path / "signing" / f"{kid}.key.pem").stat().st_mode & 0o077 == 0  # the private half is private
    assert load_signing_key(tmp_path / "signing", None)[0] == kid
    public_only = tmp_path / "public"
    public_only.mkdir()
    (public_only / f"{kid}.pub.pem").write_bytes((tmp_path / "signing" / f"{kid}.pub.pem").read_bytes())
    assert PublicKeyRing(public_only).get(kid) is not None
