"""grpc.health.v1 status that follows the service's dependencies.

Each check is an async callable that raises when its dependency is unusable
(a database that does not answer, say). They run every few seconds; the
service reports SERVING only while all pass, so Kubernetes and the gateway's
/readyz stop sending it work when a dependency is gone. The LIVENESS name
alone does not follow them. Every answer also names the version that gave it.

The client side, one Check and its version, is here too: for the gateway's
/readyz and /api/v1/health, the launcher, and the client SDK.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[object]]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Answers SERVING while the process can serve at all, whatever its
# dependencies: a liveness probe on it restarts a stuck process, never one
# whose database is down (restarting would not bring the database back).
LIVENESS = "liveness"
# Initial metadata of every grpc.health.v1 answer: which version of the
# service answered (a canary's differs from stable).
VERSION_METADATA = "sagemesh-version"


class VersionedHealthServicer(health.aio.HealthServicer):
    """grpc.health.v1 that also says, in `sagemesh-version` initial metadata,
    which version answers: the protocol has no field for it, and a probe or
    `sagemesh` CLI asking health is the one that wants to know."""

    def __init__(self, version: str) -> None:
        super().__init__()
        self._version = ((VERSION_METADATA, version),)

    async def Check(self, request, context):
        await context.send_initial_metadata(self._version)
        return await super().Check(request, context)

    async def Watch(self, request, context):
        await context.send_initial_metadata(self._version)
        await super().Watch(request, context)


class DependencyHealth:
    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        service_names: list[str],
        checks: Mapping[str, HealthCheck],
        interval: float,
        timeout: float = 2.0,
    ) -> None:
        self.servicer = servicer
        # "" is the server as a whole, as grpc.health.v1 defines it.
        self.service_names = ["", *service_names]
        self.checks = dict(checks)
        self.interval = interval
        self.timeout = timeout
        self.failing: dict[str, str] = {}
        self._status: int | None = None

    async def _run_check(self, name: str, check: HealthCheck) -> str | None:
        try:
            await asyncio.wait_for(check(), self.timeout)
        except Exception as error:  # any failure makes the dependency unusable
            return f"{type(error).__name__}: {error}"[:300]
        return None

    async def started(self) -> None:
        await self.servicer.set(LIVENESS, SERVING)

    async def check_once(self) -> bool:
        names = list(self.checks)
        results = await asyncio.gather(*(self._run_check(n, self.checks[n]) for n in names))
        self.failing = {name: error for name, error in zip(names, results) if error}
        await self._set(NOT_SERVING if self.failing else SERVING)
        return not self.failing

    async def _set(self, status: int) -> None:
        if status != self._status:
            if status == SERVING:
                log.info("health: SERVING")
            else:
                log.warning("health: NOT_SERVING", extra={"failing": self.failing})
            self._status = status
        for name in self.service_names:
            await self.servicer.set(name, status)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check_once()

    async def shutting_down(self) -> None:
        # Refuses further status changes and reports NOT_SERVING while draining.
        await self.servicer.enter_graceful_shutdown()


@dataclass(frozen=True)
class HealthReport:
    # SERVING, NOT_SERVING, ...; or, when the question failed, its status code
    # (UNAVAILABLE: not listening; UNIMPLEMENTED: no health service).
    status: str
    # "" when the server did not say.
    version: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"


async def check_health(channel: grpc.aio.Channel, service: str = "", timeout: float = 1.0) -> HealthReport:
    """One grpc.health.v1 Check of `service` ("" is the whole server) and the version that answered."""
    call = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    try:
        reply = await call
        metadata = await call.initial_metadata()
    except grpc.aio.AioRpcError as error:
        return HealthReport(error.code().name)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return HealthReport(status, str(metadata.get(VERSION_METADATA, "")))


async def wait_until_serving(channel: grpc.aio.Channel, alive: Callable[[], bool], timeout: float) -> bool:
    """Asks the server at the channel's end for its health until it reports
    SERVING (True), or its process is gone or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        if (await check_health(channel)).serving:
            return True
        await asyncio.sleep(0.2)  # not listening yet, or not ready
    return False
