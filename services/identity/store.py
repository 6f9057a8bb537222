"""What identity needs from its storage. store_sql.py implements it."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from services.identity.domain import RefreshTokenRecord, Role, Tenant, User


class DuplicateEmail(Exception):
    pass


class DuplicateTenant(Exception):
    pass


class IdentityStore(Protocol):
    async def tenant_by_name(self, name: str) -> Tenant | None: ...

    async def create_tenant_with_user(
        self, tenant_name: str, email: str, display_name: str, password_hash: str
    ) -> User:
        """Creates the tenant and its first user (an admin) in one transaction.
        Raises DuplicateTenant."""

    async def create_user(
        self, tenant: Tenant, email: str, display_name: str, role: Role, password_hash: str
    ) -> User:
        """Raises DuplicateEmail."""

    async def user_by_id(self, user_id: str) -> User | None: ...

    async def credentials(self, tenant_name: str, email: str) -> tuple[User, str] | None:
        """The user and their password hash."""

    async def set_password_hash(self, user_id: str, password_hash: str) -> None: ...

    async def create_session(
        self, user_id: str, refresh_digest: str, expires_at: datetime
    ) -> str:
        """Starts a session (a refresh-token family) with its first token; returns its id."""

    async def refresh_token(self, digest: str) -> RefreshTokenRecord | None: ...

    async def rotate_refresh_token(
        self, token_id: str, new_digest: str, expires_at: datetime
    ) -> bool:
        """Spends the token and adds its successor to the same session, in one
        transaction. False, with nothing written, if it was already spent."""

    async def revoke_session(self, session_id: str) -> datetime | None:
        """Ends the session; returns when, or None if it had ended already."""

    async def revoked_sessions(self, since: datetime, limit: int) -> list[tuple[str, datetime]]:
        """Sessions revoked at or after `since` with when, oldest first, at most `limit`."""

    async def session_revoked(self, session_id: str) -> bool: ...
