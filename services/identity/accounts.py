"""Identity's domain logic: registration, login, token rotation and revocation."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection
from datetime import datetime, timedelta, timezone

from email_validator import EmailNotValidError, validate_email

from meshkit.auth import Principal, TokenVerifier
from meshkit.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from meshkit.revocations import Revocation, RevokedSessions
from services.identity import passwords
from services.identity.domain import IssuedTokens, Role, User
from services.identity.passwords import PasswordHasher
from services.identity.store import DuplicateEmail, DuplicateTenant, IdentityStore
from services.identity.tokens import AccessTokenIssuer, new_refresh_token, refresh_token_digest

log = logging.getLogger(__name__)

TENANT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_DISPLAY_NAME = 100
# Revoked sessions listed in one answer of ListRevokedSessions; the rest in the next.
REVOCATIONS_PAGE = 1000
# One message for every login failure: it must not tell which part was wrong.
BAD_CREDENTIALS = "incorrect email or password"


def normalize_email(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as error:
        raise InvalidArgument(str(error), field="email") from None


def normalize_tenant_name(name: str) -> str:
    name = name.strip().lower()
    if not TENANT_NAME.match(name):
        raise InvalidArgument(
            "use 1 to 63 lowercase letters, digits and hyphens, not starting or ending with a hyphen",
            field="tenant_name",
        )
    return name


class Accounts:
    def __init__(
        self,
        store: IdentityStore,
        hasher: PasswordHasher,
        access_tokens: AccessTokenIssuer,
        verifier: TokenVerifier,
        refresh_ttl_seconds: int,
        default_tenant: str,
        revoked_sessions: RevokedSessions,
        canary_testers: Collection[str] = (),
    ) -> None:
        self.store = store
        self.hasher = hasher
        self.access_tokens = access_tokens
        self.verifier = verifier
        self.refresh_ttl_seconds = refresh_ttl_seconds
        self.default_tenant = default_tenant
        # This process's own list, told at once; other services learn of it from revoked_since.
        self.revoked_sessions = revoked_sessions
        self.canary_testers = frozenset(email.strip().lower() for email in canary_testers)

    async def register(
        self, email: str, password: str, display_name: str, tenant_name: str
    ) -> User:
        email = normalize_email(email)
        passwords.check_policy(password, email)
        display_name = display_name.strip() or email.split("@")[0]
        if len(display_name) > MAX_DISPLAY_NAME:
            raise InvalidArgument(f"must be at most {MAX_DISPLAY_NAME} characters", field="display_name")
        joins_default = not tenant_name.strip()
        tenant_name = self.default_tenant if joins_default else normalize_tenant_name(tenant_name)
        # Every check that costs only a query comes before the hash, which costs argon2's memory and CPU.
        tenant = await self.store.tenant_by_name(tenant_name)
        if tenant is not None:
            self._may_join(tenant_name, joins_default)
            if await self.store.credentials(tenant_name, email) is not None:
                raise AlreadyExists(f"a user with email {email} already exists")
        password_hash = await self.hasher.hash(password)

        if tenant is None:
            try:
                # Whoever creates a tenant administers it.
                return await self.store.create_tenant_with_user(
                    tenant_name, email, display_name, password_hash
                )
            except DuplicateTenant:
                # Someone created it a moment ago.
                tenant = await self.store.tenant_by_name(tenant_name)
                if tenant is None:
                    raise
        self._may_join(tenant_name, joins_default)
        try:
            return await self.store.create_user(tenant, email, display_name, Role.MEMBER, password_hash)
        except DuplicateEmail:
            raise AlreadyExists(f"a user with email {email} already exists") from None

    @staticmethod
    def _may_join(tenant_name: str, joins_default: bool) -> None:
        if not joins_default:
            # Joining another team's tenant needs an invitation, not its name.
            raise AlreadyExists(f"tenant {tenant_name!r} already exists")

    async def login(self, email: str, password: str, tenant_name: str) -> IssuedTokens:
        try:
            email = normalize_email(email)
            tenant_name = normalize_tenant_name(tenant_name) if tenant_name.strip() else self.default_tenant
        except InvalidArgument:
            raise Unauthenticated(BAD_CREDENTIALS) from None
        found = await self.store.credentials(tenant_name, email)
        user, password_hash = found if found else (None, None)
        # verify() spends the same time on a decoy hash when the user is unknown.
        if not await self.hasher.verify(password_hash, password) or user is None:
            raise Unauthenticated(BAD_CREDENTIALS)
        if self.hasher.needs_rehash(password_hash):
            await self.store.set_password_hash(user.id, await self.hasher.hash(password))
        refresh_token = new_refresh_token()
        session_id = await self.store.create_session(
            user.id, refresh_token_digest(refresh_token), self._refresh_expiry()
        )
        return self._issue(user, session_id, refresh_token)

    async def refresh(self, refresh_token: str) -> IssuedTokens:
        record = await self.store.refresh_token(refresh_token_digest(refresh_token))
        if record is None:
            raise Unauthenticated("invalid refresh token")
        if record.session_revoked:
            raise Unauthenticated("refresh token revoked; log in again")
        if record.expires_at <= datetime.now(timezone.utc):
            raise Unauthenticated("refresh token expired; log in again")
        successor = new_refresh_token()
        rotated = not record.spent and await self.store.rotate_refresh_token(
            record.id, refresh_token_digest(successor), self._refresh_expiry()
        )
        if not rotated:
            # A spent token came back: it was stolen, or the client replayed it.
            # Either way nobody holding this family can be trusted any more.
            await self._revoke(record.session_id)
            log.warning("refresh token reuse; session revoked", extra={"session_id": record.session_id})
            raise Unauthenticated("refresh token already used; session revoked, log in again")
        user = await self.store.user_by_id(record.user_id)
        if user is None:
            raise Unauthenticated("invalid refresh token")
        return self._issue(user, record.session_id, successor)

    async def logout(self, refresh_token: str) -> None:
        record = await self.store.refresh_token(refresh_token_digest(refresh_token))
        if record is None:
            raise Unauthenticated("invalid refresh token")
        await self._revoke(record.session_id)

    async def validate(self, access_token: str) -> Principal:
        """Signature and times, as every service checks them, plus the session:
        a token of a logged-out session stops here before it expires."""
        principal = self.verifier.verify(access_token)
        if await self.store.session_revoked(principal.session_id):
            raise Unauthenticated("session revoked")
        return principal

    async def revoked_since(self, since: float | None) -> tuple[list[Revocation], bool]:
        """The sessions revoked at or after `since` whose access tokens may be unexpired, oldest
        first, a page at a time (meshkit.revocations.RevocationSource)."""
        ttl = self.access_tokens.ttl_seconds
        # Tokens last `ttl`: a session revoked longer ago has none left unexpired.
        oldest = time.time() - ttl
        since = oldest if since is None else max(since, oldest)
        rows = await self.store.revoked_sessions(datetime.fromtimestamp(since, timezone.utc), REVOCATIONS_PAGE)
        page = [Revocation(session_id, revoked_at.timestamp(), revoked_at.timestamp() + ttl)
                for session_id, revoked_at in rows]
        return page, len(page) == REVOCATIONS_PAGE

    async def _revoke(self, session_id: str) -> None:
        revoked_at = await self.store.revoke_session(session_id)
        if revoked_at is not None:
            self.revoked_sessions.add(Revocation(
                session_id, revoked_at.timestamp(), revoked_at.timestamp() + self.access_tokens.ttl_seconds))

    async def user(self, user_id: str) -> User:
        user = await self.store.user_by_id(user_id)
        if user is None:
            raise NotFound("user not found")
        return user

    def _refresh_expiry(self) -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=self.refresh_ttl_seconds)

    def _issue(self, user: User, session_id: str, refresh_token: str) -> IssuedTokens:
        return IssuedTokens(
            access_token=self.access_tokens.issue(user, session_id, time.time(),
                                                  canary_tester=user.email in self.canary_testers),
            expires_in=self.access_tokens.ttl_seconds,
            refresh_token=refresh_token,
            refresh_expires_in=self.refresh_ttl_seconds,
            user=user,
        )
