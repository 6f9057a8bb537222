"""Access-token verification: every token a service must refuse."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime, timezone

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.utils import base64url_encode

from meshkit.auth import PublicKeyRing, TokenVerifier, bearer_token
from meshkit.errors import Unauthenticated
from services.identity.domain import Role, User
from services.identity.tokens import AccessTokenIssuer, PRIVATE_KEY_SUFFIX, load_signing_key

USER = User("u1", "t1", "acme", "ann@example.com", "Ann", Role.MEMBER, datetime.now(timezone.utc))


@pytest.fixture
def keys_dir(tmp_path):
    return tmp_path / "jwt"


@pytest.fixture
def issuer(keys_dir) -> AccessTokenIssuer:
    kid, key = load_signing_key(keys_dir, None)
    return AccessTokenIssuer(kid, key, "sagemesh-identity", "sagemesh", ttl_seconds=60)


@pytest.fixture
def verifier(keys_dir) -> TokenVerifier:
    return TokenVerifier(PublicKeyRing(keys_dir), "sagemesh-identity", "sagemesh")


def test_a_valid_token_names_the_caller(issuer, verifier):
    principal = verifier.verify(issuer.issue(USER, "s1", time.time()))
    assert (principal.user_id, principal.tenant_id, principal.session_id, principal.role) == (
        "u1", "t1", "s1", "member",
    )


def claims(**overrides) -> dict:
    # Built when the tests are collected, which may be many minutes before they run.
    now = int(time.time())
    base = {"iss": "sagemesh-identity", "aud": "sagemesh", "sub": "u1", "tid": "t1",
            "iat": now, "nbf": now, "exp": now + 24 * 3600}
    return {**base, **overrides}


def signed(issuer: AccessTokenIssuer, payload: dict, **headers) -> str:
    return jwt.encode(payload, issuer.key, algorithm="EdDSA", headers={"kid": issuer.kid, **headers})


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (claims(iss="someone-else"), "invalid"),
        (claims(aud="another-app"), "invalid"),
        (claims(exp=int(time.time()) - 10), "expired"),
        (claims(nbf=int(time.time()) + 24 * 3600), "invalid"),
        ({k: v for k, v in claims().items() if k != "exp"}, "invalid"),
        ({k: v for k, v in claims().items() if k != "tid"}, "invalid"),
    ],
)
def test_bad_claims_are_refused(issuer, verifier, payload, reason):
    with pytest.raises(Unauthenticated, match=reason):
        verifier.verify(signed(issuer, payload))


def test_alg_none_is_refused(issuer, verifier):
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": issuer.kid})
    with pytest.raises(Unauthenticated):
        verifier.verify(unsigned)


def test_hmac_signed_with_the_public_key_is_refused(issuer, verifier):
    # Algorithm confusion: the public key used as an HMAC secret. PyJWT itself
    # refuses to sign with a PEM as HMAC secret, so the token is built by hand.
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = json.dumps({"alg": "HS256", "kid": issuer.kid, "typ": "JWT"}).encode()
    signing_input = b".".join(
        [base64url_encode(header), base64url_encode(json.dumps(claims()).encode())]
    )
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + base64url_encode(signature)).decode()
    with pytest.raises(Unauthenticated):
        verifier.verify(forged)


def test_a_token_from_an_unknown_key_is_refused(tmp_path, verifier):
    kid, key = load_signing_key(tmp_path / "elsewhere", None)
    stranger = AccessTokenIssuer(kid, key, "sagemesh-identity", "sagemesh", 60)
    with pytest.raises(Unauthenticated, match="unknown signing key"):
        verifier.verify(stranger.issue(USER, "s1", time.time()))


def test_a_verified_token_is_refused_once_it_expires(issuer, verifier):
    # Issued 59 s ago with a 60 s lifetime (in whole seconds): valid for at most one second more.
    token = issuer.issue(USER, "s1", time.time() - 59)
    assert verifier.verify(token).user_id == "u1"
    assert verifier.verify(token).user_id == "u1"  # remembered...
    time.sleep(1.05)
    with pytest.raises(Unauthenticated, match="expired"):  # ...but not past its expiry
        verifier.verify(token)


def test_keys_rotate_by_adding_and_removing_files(keys_dir, issuer):
    ring = PublicKeyRing(keys_dir, reload_interval=0, max_age=0)
    verifier = TokenVerifier(ring, "sagemesh-identity", "sagemesh")
    old_token = issuer.issue(USER, "s1", time.time())
    # A new key pair appears (the newest key signs from now on)...
    (keys_dir / "zz-new").mkdir()
    kid, key = load_signing_key(keys_dir / "zz-new", None)
    for path in (keys_dir / "zz-new").iterdir():
        path.rename(keys_dir / path.name)
    new_issuer = AccessTokenIssuer(kid, key, issuer.issuer, issuer.audience, 60)
    assert verifier.verify(new_issuer.issue(USER, "s1", time.time())).user_id == "u1"
    # ...the old key still verifies the tokens it signed...
    assert verifier.verify(old_token).user_id == "u1"
    # ...until its public key is removed.
    (keys_dir / f"{issuer.kid}.pub.pem").unlink()
    (keys_dir / f"{issuer.kid}{PRIVATE_KEY_SUFFIX}").unlink()
    with pytest.raises(Unauthenticated):
        verifier.verify(old_token)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Token abc", "abc"])
def test_malformed_authorization_headers_are_refused(header):
    with pytest.raises(Unauthenticated):
        bearer_token(header)


def test_bearer_scheme_is_case_insensitive():
    assert bearer_token("bearer abc") == "abc"
