"""The circuit breaker's states on an injected clock: no sleeping, no server."""

from __future__ import annotations

import pytest

from tritonkit.client.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _breaker(clock: Clock, changes: list[BreakerState] | None = None) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_timeout_s=2.0, clock=clock,
                          on_change=None if changes is None else changes.append)


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def _probing(clock: Clock, changes: list[BreakerState] | None = None) -> CircuitBreaker:
    """A breaker opened by three failures, cooled down, that has just let its probe through."""
    breaker = _breaker(clock, changes)
    _fail(breaker, 3)
    clock.now += 2.0
    assert breaker.allow()
    return breaker


def test_breaker_stays_closed_when_failures_are_fewer_than_the_threshold(clock: Clock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_breaker_forgets_failures_when_a_call_succeeds_in_between(clock: Clock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 2)
    breaker.record_success()
    _fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED


def test_breaker_opens_and_refuses_calls_when_failures_reach_the_threshold(clock: Clock) -> None:
    changes: list[BreakerState] = []
    breaker = _breaker(clock, changes)
    _fail(breaker, 3)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_after_s == pytest.approx(2.0)
    assert changes == [BreakerState.OPEN]


def test_breaker_lets_exactly_one_probe_through_when_cool_down_has_passed(clock: Clock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 1.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()        # the probe
    assert not breaker.allow()    # everyone else waits for its outcome
    assert not breaker.allow()


def test_breaker_closes_when_the_probe_succeeds(clock: Clock) -> None:
    changes: list[BreakerState] = []
    breaker = _probing(clock, changes)
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_breaker_reopens_for_another_cool_down_when_the_probe_fails(clock: Clock) -> None:
    breaker = _probing(clock)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 2.0
    assert breaker.allow()


def test_breaker_frees_the_probe_slot_when_the_probe_is_cancelled(clock: Clock) -> None:
    breaker = _probing(clock)
    breaker.release()
    assert breaker.allow()


def test_breaker_ignores_a_late_success_when_it_is_open(clock: Clock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 3)
    breaker.record_success()  # a call sent before it opened
    assert breaker.state is BreakerState.OPEN


def test_breaker_closes_at_once_when_reset(clock: Clock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 3)
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_breaker_refuses_settings_when_threshold_is_below_one() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
