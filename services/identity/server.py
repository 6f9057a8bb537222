"""The identity service: `python -m services.identity.server`."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from meshkit import db, server
from meshkit.revocations import RevokedSessions
from meshkit.topology import SERVICES
from sagemesh.identity.v1 import identity_pb2_grpc
from services.identity.accounts import Accounts
from services.identity.passwords import PasswordHasher
from services.identity.servicer import IdentityServicer
from services.identity.settings import IdentitySettings
from services.identity.store_sql import SqlIdentityStore
from services.identity.tokens import AccessTokenIssuer, load_signing_key

MIGRATIONS = Path(__file__).parent / "migrations"


async def build(settings: IdentitySettings) -> server.ServiceApp:
    engine = db.create_engine(settings.database_url_for("identity"))
    await db.migrate(engine, MIGRATIONS, version_table="alembic_version_identity")
    kid, signing_key = load_signing_key(settings.keys_dir, settings.jwt_signing_key_id)
    revoked_sessions = RevokedSessions()
    hasher = PasswordHasher(
        settings.argon2_time_cost, settings.argon2_memory_cost_kib, settings.argon2_parallelism,
        settings.argon2_max_concurrent_hashes, settings.argon2_max_waiting_hashes,
    )
    accounts = Accounts(
        store=SqlIdentityStore(engine),
        hasher=hasher,
        access_tokens=AccessTokenIssuer(
            kid, signing_key, settings.jwt_issuer, settings.jwt_audience,
            settings.access_token_ttl_seconds,
        ),
        verifier=server.token_verifier(settings),
        refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
        default_tenant=settings.default_tenant,
        revoked_sessions=revoked_sessions,
        canary_testers=settings.canary_testers,
    )
    return server.ServiceApp(
        info=SERVICES["identity"],
        register=partial(
            identity_pb2_grpc.add_IdentityServiceServicer_to_server, IdentityServicer(accounts)
        ),
        health_checks={"database": partial(db.ping, engine)},
        on_shutdown=[engine.dispose, partial(asyncio.to_thread, hasher.close)],
        # Its own revocations at once, other replicas' from the database.
        revocation_source=accounts,
        revoked_sessions=revoked_sessions,
    )


def main() -> None:
    server.run("identity", build, IdentitySettings())


if __name__ == "__main__":
    main()
