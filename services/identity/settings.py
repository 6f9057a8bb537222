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
    # Users (by email) whose requests may ask for canaries with `x-canary: true`; for
    # anyone else the gateway drops the header, so a client cannot steer load onto a canary.
    canary_testers: list[str] = []
    # argon2id cost (RFC 9106's second recommended option by default).
    argon2_time_cost: int = 3
    argon2_memory_cost_kib: int = 64 * 1024
    argon2_parallelism: int = 4
    # Hashes at once, each taking argon2_memory_cost_kib and up to argon2_parallelism
    # cores, and how many more may wait; beyond, a sign-in is refused (429) at once.
    argon2_max_concurrent_hashes: int = 2
    argon2_max_waiting_hashes: int = 64
