"""A circuit breaker with an injectable clock, shared by the gateway and the client library.

Closed: calls pass, consecutive failures are counted. `failure_threshold` failures in a row open
it: calls are refused (the caller answers with the fallback) until `reset_timeout_s` has passed.
Then it is half-open: exactly one call (the probe) passes; its success closes the breaker, its
failure opens it again for another cool-down. Only failures of the path count (5xx, timeouts,
connection errors): a request the server refuses as bad (4xx) is a success of the path::

    breaker = CircuitBreaker(failure_threshold=5, reset_timeout_s=2.0)
    if breaker.allow():
        try: answer = call(); breaker.record_success()
        except Unreachable: breaker.record_failure(); raise
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable


class BreakerState(enum.IntEnum):
    """The breaker's state; the value is what the `*_breaker_state` gauges show."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Thread-safe (the client's callers may share one); cheap enough for every request."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {failure_threshold}")
        if reset_timeout_s < 0:
            raise ValueError(f"reset_timeout_s must be >= 0, not {reset_timeout_s}")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_out = False

    @property
    def state(self) -> BreakerState:
        """The state now; an open breaker whose cool-down has passed reads as half-open."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._cooled_down():
                return BreakerState.HALF_OPEN
            return self._state

    @property
    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it is not open)."""
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())

    def allow(self) -> bool:
        """May a call go through now? In half-open, True for the one probe only."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.OPEN:
                if not self._cooled_down():
                    return False
                self._set(BreakerState.HALF_OPEN)
            if self._probe_out:
                return False
            self._probe_out = True
            return True

    def record_success(self) -> None:
        """A call that was allowed succeeded (or was refused as bad input: not the path's
        fault). Closes a half-open breaker; a late success while open changes nothing."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._probe_out = False
                self._set(BreakerState.CLOSED)
            if self._state is BreakerState.CLOSED:
                self._failures = 0

    def record_failure(self) -> None:
        """A call that was allowed failed on the path (5xx, timeout, connection error)."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._probe_out = False
                self._open()
            elif self._state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._open()

    def release(self) -> None:
        """An allowed call ended without telling anything about the path (cancelled by its
        caller): a half-open breaker lets the next probe through."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._probe_out = False

    def reset(self) -> None:
        """Close the breaker now (an operator knows the server is back)."""
        with self._lock:
            self._failures = 0
            self._probe_out = False
            self._set(BreakerState.CLOSED)

    # -- internals (lock held) ----------------------------------------------------------------
    def _cooled_down(self) -> bool:
        return self._clock() >= self._opened_at + self.reset_timeout_s

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
