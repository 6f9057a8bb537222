"""A circuit breaker per tool: after `threshold` failures in a row the tool
is not called for `cool_down_seconds`; then one trial call decides whether it
closes again or stays open.

Small enough to own: the PyPI breakers either guard sync calls only
(pybreaker's async support needs Tornado) or are unmaintained.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(self, threshold: int = 3, cool_down_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cool_down = cool_down_seconds
        self.clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - self._opened_at >= self.cool_down else OPEN

    def allow(self) -> bool:
        """Whether a call may go ahead now; in half-open state, one at a time."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures = 0
        self._opened_at = None
        self._trial_running = False

    def failed(self) -> None:
        self.failures += 1
        if self._trial_running or self.failures >= self.threshold:
            self._opened_at = self.clock()
        self._trial_running = False

    def seconds_until_trial(self) -> float:
        return 0.0 if self._opened_at is None else max(0.0, self.cool_down - (self.clock() - self._opened_at))
