from __future__ import annotations

from meshkit.settings import MeshSettings


class IdentitySettings(MeshSettings):
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    # Users who register without naming a tenant join this one.
    default_tenant: str = "default"
    # Key id of the signing key in the keys directory; unset, the only key
    # there signs (a new one is made if there is none, as on a laptop).
    jwt_signing_key_id: str | None = None
    # argon2id cost (RFC 9106's second recommended option by default).
    argon2_time_cost: int = 3
    argon2_memory_cost_kib: int = 64 * 1024
    argon2_parallelism: int = 4
