"""Signing keys, access tokens (EdDSA JWTs) and refresh tokens (opaque)."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshkit.auth import ALGORITHM, CANARY_TESTER_CLAIM, PUBLIC_KEY_SUFFIX
from services.identity.domain import User

PRIVATE_KEY_SUFFIX = ".key.pem"


class SigningKeyAmbiguous(ValueError):
    """Several keys could sign and none is named."""


def load_signing_key(directory: Path, kid: str | None) -> tuple[str, Ed25519PrivateKey]:
    """The named key, else the only key in `directory`, else a new one.

    With several keys and none named, it refuses rather than guess: a
    Secret's files all have the mount's modification time, so "the newest"
    would be whichever the file system lists last, and replicas could sign
    with different keys. A new key is written with its public half beside
    it, where every service's PublicKeyRing finds it."""
    directory.mkdir(parents=True, exist_ok=True)
    candidates = sorted(directory.glob(f"*{PRIVATE_KEY_SUFFIX}"))
    if kid:
        path = directory / f"{kid}{PRIVATE_KEY_SUFFIX}"
        if not path.exists():
            raise FileNotFoundError(f"signing key {path} not found")
    elif len(candidates) == 1:
        path = candidates[0]
    elif candidates:
        names = ", ".join(p.name.removesuffix(PRIVATE_KEY_SUFFIX) for p in candidates)
        raise SigningKeyAmbiguous(f"{len(candidates)} signing keys in {directory} ({names}): "
                                  "name the one that signs with SAGEMESH_JWT_SIGNING_KEY_ID")
    else:
        return create_signing_key(directory)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return path.name.removesuffix(PRIVATE_KEY_SUFFIX), key


def create_signing_key(directory: Path) -> tuple[str, Ed25519PrivateKey]:
    """A new key pair in `directory`: <kid>.key.pem (readable by its owner only) and <kid>.pub.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    kid = f"{time.strftime('%Y%m%d')}-{secrets.token_hex(4)}"
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    descriptor = os.open(directory / f"{kid}{PRIVATE_KEY_SUFFIX}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as private_file:
        private_file.write(private_pem)
    (directory / f"{kid}{PUBLIC_KEY_SUFFIX}").write_bytes(public_pem)
    return kid, key


class AccessTokenIssuer:
    def __init__(
        self, kid: str, key: Ed25519PrivateKey, issuer: str, audience: str, ttl_seconds: int
    ) -> None:
        self.kid = kid
        self.key = key
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds

    def issue(self, user: User, session_id: str, now: float, canary_tester: bool = False) -> str:
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user.id,
            "tid": user.tenant_id,
            "email": user.email,
            "role": user.role.value,
            "sid": session_id,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now) + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        if canary_tester:
            # Lets the request ask for canaries (x-canary): the gateway forwards the header for no one else.
            claims[CANARY_TESTER_CLAIM] = True
        return jwt.encode(claims, self.key, algorithm=ALGORITHM, headers={"kid": self.kid})


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def refresh_token_digest(token: str) -> str:
    # 256 random bits need no slow hash: SHA-256 cannot be brute-forced back.
    return hashlib.sha256(token.encode()).hexdigest()
