"""Identity's domain types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    MEMBER = "member"
    ADMIN = "admin"


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class User:
    id: str
    tenant_id: str
    tenant_name: str
    email: str
    display_name: str
    role: Role
    created_at: datetime


@dataclass(frozen=True)
class RefreshTokenRecord:
    id: str
    session_id: str
    user_id: str
    expires_at: datetime
    spent: bool
    session_revoked: bool


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    user: User
