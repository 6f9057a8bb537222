"""Argon2id password hashing and the password policy."""

from __future__ import annotations

import asyncio

import argon2

from meshkit.errors import InvalidArgument

MIN_LENGTH = 8
# Argon2 cost grows with input length; the cap keeps one request cheap.
MAX_LENGTH = 128
# The most common leaked passwords of at least MIN_LENGTH characters.
COMMON_PASSWORDS = frozenset(
    {
        "password", "password1", "password123", "12345678", "123456789", "1234567890",
        "qwertyuiop", "qwerty123", "iloveyou", "sunshine", "princess", "football",
        "baseball", "welcome1", "abc12345", "11111111", "00000000", "88888888",
        "letmein1", "passw0rd", "trustno1", "superman", "1q2w3e4r", "zaq12wsx",
        "changeme", "administrator",
    }
)


def check_policy(password: str, email: str) -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidArgument(f"must be at least {MIN_LENGTH} characters", field="password")
    if len(password) > MAX_LENGTH:
        raise InvalidArgument(f"must be at most {MAX_LENGTH} characters", field="password")
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or lowered == email.lower() or len(set(password)) < 3:
        raise InvalidArgument("is too easy to guess", field="password")


class PasswordHasher:
    """argon2id; hashing runs in a worker thread to keep the event loop free."""

    def __init__(self, time_cost: int, memory_cost_kib: int, parallelism: int) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        # Compared against when the account does not exist, so an unknown
        # email costs as much time as a wrong password.
        self._decoy_hash = self._hasher.hash("decoy password for unknown accounts")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash or self._decoy_hash, password)
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                return False

        return await asyncio.to_thread(verify) and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
