"""How often each caller may call the API, checked at the gateway before a
request reaches a service: per user and per tenant (from a verified access
token), per client address for requests without one, and, for logins, per
account and per address so that passwords cannot be guessed at speed, and registrations
per address.

The counting is the `limits` library's sliding window counter: O(1) state per
key, in Redis when REDIS_URL is set (every gateway replica shares the counts),
in this process otherwise. Like a token bucket, it lets a caller use a burst up
to the limit and then holds it to the rate. If Redis cannot be reached the
request goes ahead: the limits protect the services, they must not take the
API down with them.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from meshkit.auth import TokenVerifier
from meshkit.errors import Unauthenticated

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RateLimitConfig:
    """Limits as `limits` writes them ("20/second;600/minute"); "" turns one off."""

    per_user: str = "20/second;600/minute"
    per_tenant: str = "200/second"
    per_address: str = "20/second"
    logins_per_account: str = "10/minute"
    logins_per_address: str = "30/minute"
    registrations_per_address: str = "10/minute;100/hour"


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused, and when to try again."""

    limit: str
    retry_after_seconds: int

    @property
    def message(self) -> str:
        return f"too many requests: the limit is {self.limit}; retry in {self.retry_after_seconds} s"


@dataclass(frozen=True)
class Caller:
    user_id: str = ""
    tenant_id: str = ""
    address: str = ""


def identify(verifier: TokenVerifier | None, authorization: str | None, address: str) -> Caller:
    """Who is calling: the token's user and tenant when it verifies, else only the address."""
    if authorization and verifier and authorization[:7].lower() == "bearer ":
        try:
            principal = verifier.verify(authorization[7:].strip())
            return Caller(principal.user_id, principal.tenant_id, address)
        except Unauthenticated:
            pass  # the service refuses it; here it counts against its address
    return Caller(address=address)


def storage_for(redis_url: str | None) -> Storage:
    if not redis_url:
        return MemoryStorage()
    scheme, _, rest = redis_url.partition("://")
    return RedisStorage(f"async+{scheme}://{rest}", implementation="redispy", wrap_exceptions=True,
                        key_prefix="sagemesh-ratelimit")


class RateLimiter:
    def __init__(self, config: RateLimitConfig, storage: Storage, verifier: TokenVerifier | None) -> None:
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.verifier = verifier
        self._limits = {name: parse_many(value) if value else [] for name, value in vars(config).items()}

    def caller(self, authorization: str | None, address: str) -> Caller:
        return identify(self.verifier, authorization, address)

    async def check(self, caller: Caller) -> Refusal | None:
        """Counts a request against its caller's limits: user and tenant, or address."""
        if caller.user_id:
            return await self._hit(("per_user", caller.user_id), ("per_tenant", caller.tenant_id))
        return await self._hit(("per_address", caller.address))

    async def check_login(self, caller: Caller, account: str) -> Refusal | None:
        """Counts a login attempt against its address and the account it names."""
        return await self._hit(("logins_per_address", caller.address),
                               ("logins_per_account", account.strip().lower()))

    async def check_registration(self, caller: Caller) -> Refusal | None:
        """Counts a registration against its address: each one costs a password hash and a user."""
        return await self._hit(("registrations_per_address", caller.address))

    async def _hit(self, *keys: tuple[str, str]) -> Refusal | None:
        # The first limit exceeded refuses the request; the ones after it are not counted.
        try:
            for name, key in keys:
                for item in self._limits[name]:
                    if not await self.limiter.hit(item, name, key):
                        return Refusal(str(item), await self._retry_after(item, name, key))
        except StorageError as error:
            log.warning("rate limits not checked: their storage failed: %s", error)
        return None

    async def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = await self.limiter.get_window_stats(item, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))
