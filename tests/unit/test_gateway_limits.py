"""The gateway's limits without a server: rate limits in customers, the global limit that costs
a key nothing, the per-address limit of requests without a key, the coalescer's bound, and
their settings."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from typing import Any

import pytest
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from tritonkit.gateway.batcher import Coalescer, QueueFull
from tritonkit.gateway.ratelimit import ProcessWindows, RateLimits
from tritonkit.gateway.settings import GatewaySettings


def test_process_windows_count_costs_like_limits_when_hits_of_several_sizes_arrive(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.25]
    monkeypatch.setattr(time, "time", lambda: now[0])
    ours = ProcessWindows(clock=lambda: now[0])
    item = parse("40/second")
    generator = random.Random(11)

    async def run() -> tuple[list[Any], list[Any]]:
        theirs = SlidingWindowCounterRateLimiter(MemoryStorage())
        mine, reference = [], []
        for _ in range(400):
            now[0] += generator.choice([0.01, 0.05, 0.2, 0.7, 1.3])
            cost = generator.choice([1, 1, 3, 16, 39, 41])
            tested = await theirs.test(item, "key", "billing", cost=cost)
            reference.append((tested, await theirs.hit(item, "key", "billing", cost=cost)))
            tested = ours.test(item, "key/billing", cost)
            mine.append((tested, ours.hit(item, "key/billing", cost)))
        return mine, reference

    mine, reference = asyncio.run(run())
    assert mine == reference
    assert {allowed for _, allowed in mine} == {True, False}


def test_process_windows_refund_gives_back_what_was_counted_when_asked() -> None:
    now = [1_700_000_000.0]
    windows = ProcessWindows(clock=lambda: now[0])
    item = parse("10/minute")
    assert windows.hit(item, "k", 10) and not windows.test(item, "k")
    windows.refund(item, "k", 4)
    assert windows.hit(item, "k", 4) and not windows.test(item, "k")


def _limits(**changes: Any) -> RateLimits:
    values: dict[str, Any] = {"per_key": "300/minute", "overall": "400/minute",
                              "unauthenticated": "3/minute"}
    values.update(changes)
    return RateLimits(**values)


def test_rate_limits_charge_a_batch_per_customer_when_it_fits() -> None:
    limits = _limits()

    async def run() -> list[Any]:
        return [await limits.admit("billing"), await limits.admit("billing", 255, paid=1),
                await limits.admit("billing"), await limits.admit("billing", 255, paid=1)]

    first, rest, single, second_rest = asyncio.run(run())
    assert first is None and rest is None and single is None
    assert second_rest is not None and second_rest.status == 429
    assert "this API key's rate limit of 300 per 1 minute" in second_rest.message
    assert second_rest.retry_after_s is not None and second_rest.retry_after_s >= 1


def test_rate_limits_refuse_a_batch_without_retry_after_when_no_wait_would_let_it_fit() -> None:
    scopes: list[str] = []
    limits = _limits(per_key="100/minute", on_reject=scopes.append)
    refusal = asyncio.run(limits.admit("billing", 100, paid=1))
    assert refusal is not None and refusal.status == 429 and refusal.retry_after_s is None
    assert "costs 101 hits" in refusal.message and "more than it allows at all" in refusal.message
    assert "send at most 100 customers per request" in refusal.message
    assert scopes == ["key"]
    assert asyncio.run(limits.admit("billing", 99, paid=1)) is None  # nothing was charged


def test_rate_limits_charge_the_key_nothing_when_the_global_limit_refuses() -> None:
    now = [1_700_000_000.0]
    scopes: list[str] = []
    limits = _limits(per_key="50/hour", overall="100/second", on_reject=scopes.append,
                     clock=lambda: now[0])

    async def run() -> list[Any]:
        assert await limits.admit("a", 50) is None and await limits.admit("b", 50) is None
        for _ in range(5):  # refused on arrival
            assert await limits.admit("billing") is not None
        now[0] += 2.0  # the global window has passed, the keys' hour has not
        assert await limits.admit("c", 50) is None and await limits.admit("d", 45) is None
        for _ in range(2):  # a batch of 50: its first customer fits, the other 49 do not
            assert await limits.admit("billing") is None
            assert await limits.admit("billing", 49, paid=1) is not None
        assert scopes == ["global"] * 7
        now[0] += 2.0
        return [await limits.admit("billing", 50), await limits.admit("billing")]

    whole_quota, one_more = asyncio.run(run())
    assert whole_quota is None  # the key's 50 an hour are all there
    assert one_more is not None and "this API key's rate limit" in one_more.message


def test_rate_limits_refuse_an_address_before_counting_when_requests_without_a_key_flood(
        ) -> None:
    scopes: list[str] = []
    limits = _limits(on_reject=scopes.append)
    assert [limits.charge_address("192.0.2.1") for _ in range(3)] == [None] * 3
    refused = limits.refuse_address("192.0.2.1")
    assert refused is not None and refused.status == 429 and refused.retry_after_s
    assert "without a valid API key from this address" in refused.message
    assert limits.charge_address("192.0.2.1") is not None
    assert limits.refuse_address("192.0.2.2") is None  # another address has its own budget
    assert scopes == ["unauthenticated"] * 2
    assert asyncio.run(limits.admit("billing")) is None  # and no key paid for any of it


def test_rate_limits_forget_idle_addresses_when_many_have_called() -> None:
    now = [1_700_000_000.0]
    windows = ProcessWindows(clock=lambda: now[0])
    item = parse("20/second")
    for n in range(100):
        windows.hit(item, f"198.51.100.{n}")
    now[0] += 1.5
    windows.hit(item, "203.0.113.1")
    windows.forget_idle(item)
    assert len(windows) == 101  # the previous window still weighs
    now[0] += 1.0
    windows.forget_idle(item)
    assert len(windows) == 1


def test_coalescer_refuses_a_caller_beyond_its_bound_and_answers_those_it_holds() -> None:
    release = asyncio.Event()

    async def infer(rows: Any) -> list[Any]:
        await release.wait()
        return [(float(row["n"]), "low", "1") for row in rows]

    async def run() -> tuple[list[Any], Any, int]:
        coalescer = Coalescer(infer, max_rows=64, max_wait_s=0.002, max_in_flight=1,
                              max_pending_rows=3)
        held = [asyncio.ensure_future(coalescer.submit([{"n": n}])) for n in range(3)]
        await asyncio.sleep(0.05)  # one in flight, two queued; or all in flight after max_wait
        assert coalescer.pending_rows == 3
        with pytest.raises(QueueFull) as refused:
            await coalescer.submit([{"n": 3}])
        release.set()
        answers = await asyncio.gather(*held)
        return answers, refused.value, coalescer.pending_rows

    answers, refused, pending = asyncio.run(run())
    assert answers == [[(float(n), "low", "1")] for n in range(3)]
    assert refused.bound == 3 and "queue to Triton is full" in str(refused)
    assert pending == 0


@pytest.mark.parametrize(("field", "value", "message"), [
    ("rate_limit_per_key", "lots", "rate_limit_per_key must be a rate"),
    ("rate_limit_unauthenticated", "20/fortnight", "rate_limit_unauthenticated must be a rate"),
    ("coalesce_max_pending_rows", 0, "coalesce_max_pending_rows must be at least 1"),
])
def test_gateway_settings_name_the_field_when_a_limit_is_invalid(
        field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatewaySettings(**{field: value})


def test_gateway_cli_lists_the_limits_with_their_environment_variables_when_asked_for_help(
        ) -> None:
    done = subprocess.run([sys.executable, "-m", "tritonkit.gateway.cli", "serve", "--help"],
                          capture_output=True, text=True, timeout=60, check=True)
    text = " ".join(done.stdout.split())
    for flag, env, default in [
        ("--rate-limit-unauthenticated", "TRITONKIT_GATEWAY_RATE_LIMIT_UNAUTHENTICATED",
         "20/second"),
        ("--coalesce-max-pending-rows", "TRITONKIT_GATEWAY_COALESCE_MAX_PENDING_ROWS", "512"),
        ("--rate-limit-per-key", "TRITONKIT_GATEWAY_RATE_LIMIT_PER_KEY", "500/second"),
    ]:
        assert flag in text and f"env {env}; default: {default})" in text, flag


def test_rate_limits_with_a_shared_store_test_the_global_limit_before_charging_the_key(
        ) -> None:
    """The path a Redis store takes (`limits`' own strategy and storage), here on `limits`'
    async memory storage: no Redis in the unit tests."""
    limits = _limits(per_key="10/hour", overall="15/hour", storage="async+memory://")
    limits._local = None  # the shared path, on a storage at hand
    limits._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    async def run() -> list[Any]:
        assert await limits.admit("other", 10) is None
        refused = [await limits.admit("billing", 6) for _ in range(5)]
        return [*refused, await limits.admit("billing", 5), await limits.admit("billing")]

    *refused, fits, over = asyncio.run(run())
    assert all(r is not None and "overall" in r.message for r in refused)
    assert fits is None  # the five refusals cost the key nothing
    assert over is not None and "overall" in over.message
