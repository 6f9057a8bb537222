"""Fails a backend's calls fast while it cannot take them.

A backend that is down or stuck must cost only its own routes: its calls are
refused at once (503) instead of each waiting out its deadline while the
gateway's other routes and its readiness carry on. A call is refused when the
backend's channel is still connecting after `connect_timeout`; and at most
`max_waiting` calls may wait on one backend's answer at once, so a
backend that accepts calls and never answers cannot pile requests up without
bound (a streamed reply stops counting once its first message has arrived).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

_CONNECTING = (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING)


class BackendUnavailable(Exception):
    def __init__(self, backend: str) -> None:
        super().__init__(backend)
        self.backend = backend


class BackendGate:
    def __init__(self, backend: str, connect_timeout: float, max_waiting: int) -> None:
        self.backend = backend
        self.connect_timeout = connect_timeout
        self.max_waiting = max_waiting
        self.waiting = 0

    @asynccontextmanager
    async def answer(self, channel: grpc.aio.Channel) -> AsyncIterator[None]:
        """Held while a call waits for the backend's answer; BackendUnavailable if it cannot be made."""
        if self.waiting >= self.max_waiting:
            raise BackendUnavailable(self.backend)
        self.waiting += 1
        try:
            if not await self._connected(channel):
                raise BackendUnavailable(self.backend)
            yield
        finally:
            self.waiting -= 1

    async def _connected(self, channel: grpc.aio.Channel) -> bool:
        """False while a connection is being made and not made in time (a backend that accepts
        connections and never answers stays there). A connection that failed outright is left to
        gRPC: its call fails at once, and is retried per the channel's policy."""
        deadline = time.monotonic() + self.connect_timeout
        state = channel.get_state(try_to_connect=True)
        while state in _CONNECTING:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                return False
            state = channel.get_state(try_to_connect=True)
        return True
