"""IdentityStore on SQLAlchemy: SQLite by default, PostgreSQL in production."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.identity.domain import RefreshTokenRecord, Role, Tenant, User
from services.identity.store import DuplicateEmail, DuplicateTenant
from services.identity.tables import RefreshTokenRow, SessionRow, TenantRow, UserRow


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _new_id() -> str:
    return str(uuid.uuid4())


def _user(row: UserRow, tenant_name: str) -> User:
    return User(
        id=row.id,
        tenant_id=row.tenant_id,
        tenant_name=tenant_name,
        email=row.email,
        display_name=row.display_name,
        role=Role(row.role),
        created_at=row.created_at,
    )


class SqlIdentityStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def tenant_by_name(self, name: str) -> Tenant | None:
        async with self.sessions() as db:
            row = await db.scalar(select(TenantRow).where(TenantRow.name == name))
        return Tenant(row.id, row.name, row.created_at) if row else None

    async def create_tenant_with_user(
        self, tenant_name: str, email: str, display_name: str, password_hash: str
    ) -> User:
        now = _now()
        tenant = TenantRow(id=_new_id(), name=tenant_name, created_at=now)
        user = UserRow(
            id=_new_id(), tenant_id=tenant.id, email=email, display_name=display_name,
            role=Role.ADMIN.value, password_hash=password_hash, created_at=now, updated_at=now,
        )
        try:
            async with self.sessions.begin() as db:
                db.add(tenant)
                await db.flush()
                db.add(user)
        except IntegrityError:
            raise DuplicateTenant(tenant_name) from None
        return _user(user, tenant_name)

    async def create_user(
        self, tenant: Tenant, email: str, display_name: str, role: Role, password_hash: str
    ) -> User:
        now = _now()
        user = UserRow(
            id=_new_id(), tenant_id=tenant.id, email=email, display_name=display_name,
            role=role.value, password_hash=password_hash, created_at=now, updated_at=now,
        )
        try:
            async with self.sessions.begin() as db:
                db.add(user)
        except IntegrityError:
            raise DuplicateEmail(email) from None
        return _user(user, tenant.name)

    async def user_by_id(self, user_id: str) -> User | None:
        async with self.sessions() as db:
            found = (
                await db.execute(
                    select(UserRow, TenantRow.name)
                    .join(TenantRow, TenantRow.id == UserRow.tenant_id)
                    .where(UserRow.id == user_id)
                )
            ).first()
        return _user(found[0], found[1]) if found else None

    async def credentials(self, tenant_name: str, email: str) -> tuple[User, str] | None:
        async with self.sessions() as db:
            found = await db.scalar(
                select(UserRow)
                .join(TenantRow, TenantRow.id == UserRow.tenant_id)
                .where(TenantRow.name == tenant_name, UserRow.email == email)
            )
        return (_user(found, tenant_name), found.password_hash) if found else None

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self.sessions.begin() as db:
            await db.execute(
                update(UserRow)
                .where(UserRow.id == user_id)
                .values(password_hash=password_hash, updated_at=_now())
            )

    async def create_session(self, user_id: str, refresh_digest: str, expires_at: datetime) -> str:
        now = _now()
        session = SessionRow(id=_new_id(), user_id=user_id, created_at=now, revoked_at=None)
        async with self.sessions.begin() as db:
            db.add(session)
            await db.flush()
            db.add(
                RefreshTokenRow(
                    id=_new_id(), session_id=session.id, digest=refresh_digest,
                    created_at=now, expires_at=expires_at, spent_at=None,
                )
            )
        return session.id

    async def refresh_token(self, digest: str) -> RefreshTokenRecord | None:
        async with self.sessions() as db:
            found = (
                await db.execute(
                    select(RefreshTokenRow, SessionRow)
                    .join(SessionRow, SessionRow.id == RefreshTokenRow.session_id)
                    .where(RefreshTokenRow.digest == digest)
                )
            ).first()
        if not found:
            return None
        token, session = found
        return RefreshTokenRecord(
            id=token.id,
            session_id=session.id,
            user_id=session.user_id,
            expires_at=token.expires_at,
            spent=token.spent_at is not None,
            session_revoked=session.revoked_at is not None,
        )

    async def rotate_refresh_token(self, token_id: str, new_digest: str, expires_at: datetime) -> bool:
        now = _now()
        async with self.sessions.begin() as db:
            # The conditional UPDATE is the arbiter between concurrent rotations.
            spent = await db.execute(
                update(RefreshTokenRow)
                .where(RefreshTokenRow.id == token_id, RefreshTokenRow.spent_at.is_(None))
                .values(spent_at=now)
                .returning(RefreshTokenRow.session_id)
            )
            session_id = spent.scalar_one_or_none()
            if session_id is None:
                return False
            db.add(
                RefreshTokenRow(
                    id=_new_id(), session_id=session_id, digest=new_digest,
                    created_at=now, expires_at=expires_at, spent_at=None,
                )
            )
        return True

    async def revoke_session(self, session_id: str) -> datetime | None:
        now = _now()
        async with self.sessions.begin() as db:
            result = await db.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return now if result.rowcount else None

    async def revoked_sessions(self, since: datetime, limit: int) -> list[tuple[str, datetime]]:
        async with self.sessions() as db:
            rows = await db.execute(
                select(SessionRow.id, SessionRow.revoked_at)
                .where(SessionRow.revoked_at >= since)
                .order_by(SessionRow.revoked_at, SessionRow.id)
                .limit(limit)
            )
            return [(session_id, revoked_at) for session_id, revoked_at in rows]

    async def session_revoked(self, session_id: str) -> bool:
        async with self.sessions() as db:
            session = await db.get(SessionRow, session_id)
        return session is None or session.revoked_at is not None
