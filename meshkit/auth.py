"""Access-token verification and the caller's identity.

Identity signs access tokens with an Ed25519 key; every service verifies them
locally with the public keys in the keys directory (<kid>.pub.pem), so a
request needs no call to identity. Keys rotate by adding a new key pair:
tokens name their key in the `kid` header and old public keys stay valid
until their files are removed.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

import jwt
from cachetools import TLRUCache
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from meshkit.errors import ACCESS_TOKEN_EXPIRED, PermissionDenied, Unauthenticated
from meshkit.topology import INTERNAL_METHODS, PUBLIC_METHODS

log = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
# An access token's claim that its user may send requests to canaries (x-canary).
CANARY_TESTER_CLAIM = "canary_tester"
SESSION_ENDED = "the session has ended (logged out or revoked); log in again"
PUBLIC_KEY_SUFFIX = ".pub.pem"


def needs_token(method: str) -> bool:
    """Whether `method` ("/package.Service/Method") needs a user's access token: the public and
    internal RPCs, listed with the services in meshkit.topology, do not."""
    return method not in PUBLIC_METHODS and method not in INTERNAL_METHODS


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of the current request."""

    user_id: str
    tenant_id: str
    email: str
    role: str
    session_id: str
    expires_at: float
    token: str
    # May ask for canary versions of the services (x-canary), as identity's settings name them.
    canary_tester: bool = False


_principal: ContextVar[Principal | None] = ContextVar("principal", default=None)


def current_principal() -> Principal:
    """The caller; raises if the RPC runs without an authenticated user."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("this call needs an access token")
    return principal


def principal_or_none() -> Principal | None:
    return _principal.get()


def set_principal(principal: Principal | None) -> None:
    _principal.set(principal)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing access token: send 'authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("malformed authorization header: expected 'Bearer <token>'")
    return token.strip()


class PublicKeyRing:
    """Public keys by key id, read from a directory. Re-read when a token names
    a key not seen yet (at most once per `reload_interval`), and at least every
    `max_age` seconds so that a removed key stops being trusted."""

    def __init__(self, directory: Path, reload_interval: float = 5.0, max_age: float = 60.0) -> None:
        self.directory = directory
        self.reload_interval = reload_interval
        self.max_age = max_age
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._loaded_at = float("-inf")

    def reload(self) -> None:
        keys: dict[str, Ed25519PublicKey] = {}
        for path in sorted(self.directory.glob(f"*{PUBLIC_KEY_SUFFIX}")):
            key = load_pem_public_key(path.read_bytes())
            if isinstance(key, Ed25519PublicKey):
                keys[path.name.removesuffix(PUBLIC_KEY_SUFFIX)] = key
            else:
                log.warning("ignoring non-Ed25519 public key %s", path)
        self._keys = keys
        self._loaded_at = time.monotonic()

    def get(self, kid: str) -> Ed25519PublicKey | None:
        age = time.monotonic() - self._loaded_at
        if age > self.max_age or (kid not in self._keys and age > self.reload_interval):
            self.reload()
        return self._keys.get(kid)


class TokenVerifier:
    def __init__(self, keys: PublicKeyRing, issuer: str, audience: str, remembered_tokens: int = 4096,
                 revoked_sessions: Container[str] = frozenset()) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        # Sessions ended before their tokens expire (meshkit.revocations): checked on every
        # call, after the cache, so a remembered token stops working as soon as its session ends.
        self.revoked_sessions = revoked_sessions
        # PyJWT's checks cost about a millisecond of CPU a token, and each hop of a request checks the
        # same one: a verified token is remembered until it expires, and no longer than the key ring
        # trusts a key unread (max_age), so a removed key's tokens stop working as soon as before.
        self._verified: TLRUCache[str, Principal] = TLRUCache(
            maxsize=remembered_tokens, timer=time.time,
            ttu=lambda _token, principal, now: min(principal.expires_at, now + self.keys.max_age))

    def verify(self, token: str) -> Principal:
        """Checks signature, algorithm, issuer, audience, validity times and the session."""
        principal = self._verified.get(token)
        if principal is None:
            principal = self._verify(token)
            self._verified[token] = principal
        if principal.session_id in self.revoked_sessions:
            raise Unauthenticated(SESSION_ENDED)
        return principal

    def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid access token") from None
        # Checked before any key is touched: `alg: none` and HMAC tricks end here.
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated("invalid access token")
        key = self.keys.get(str(header.get("kid", "")))
        if key is None:
            raise Unauthenticated("invalid access token: unknown signing key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "iat", "nbf", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(ACCESS_TOKEN_EXPIRED) from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid access token") from None
        try:
            return Principal(
                user_id=claims["sub"],
                tenant_id=claims["tid"],
                email=claims.get("email", ""),
                role=claims.get("role", ""),
                session_id=claims.get("sid", ""),
                expires_at=float(claims["exp"]),
                token=token,
                canary_tester=claims.get(CANARY_TESTER_CLAIM) is True,
            )
        except KeyError:
            raise Unauthenticated("invalid access token") from None


def require_role(principal: Principal, role: str) -> None:
    if principal.role != role:
        raise PermissionDenied(f"this call needs the {role} role")
