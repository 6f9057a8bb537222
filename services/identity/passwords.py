"""Argon2id password hashing and the password policy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import argon2

from meshkit.errors import InvalidArgument, ResourceExhausted
from services.identity import metrics

T = TypeVar("T")

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
    """argon2id, in a pool of its own off the event loop.

    A hash costs `memory_cost_kib` of memory and tens of milliseconds of `parallelism` cores,
    so at most `max_concurrent` run at once (the default thread pool is sized from the host's
    CPUs, not the pod's limit, and would let a burst of sign-ins take the pod's memory), and at
    most `max_waiting` wait for a turn: beyond that a sign-in is refused at once with
    RESOURCE_EXHAUSTED (429 over REST), since a queue without bound only makes every caller
    time out instead of some."""

    def __init__(self, time_cost: int, memory_cost_kib: int, parallelism: int,
                 max_concurrent: int = 2, max_waiting: int = 64) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="argon2")
        self._admitted = max_concurrent + max_waiting
        self._in_flight = 0
        # Compared against when the account does not exist, so an unknown
        # email costs as much time as a wrong password.
        self._decoy_hash = self._hasher.hash("decoy password for unknown accounts")

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash or self._decoy_hash, password)
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                return False

        return await self._run(verify) and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        if self._in_flight >= self._admitted:
            metrics.PASSWORD_CHECKS_REFUSED.inc()
            raise ResourceExhausted("too many sign-ins are being checked at once; retry in a few seconds")
        self._in_flight += 1
        metrics.PASSWORD_CHECKS_IN_FLIGHT.inc()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)
        finally:
            self._in_flight -= 1
            metrics.PASSWORD_CHECKS_IN_FLIGHT.dec()
