"""The gateway's routing rules without a server: which replica takes a call and what a failure
does (`gateway.replicas`), and which version answers a customer (`gateway.versions`). The real
servers' side is in tests/integration/test_replicas.py and test_rollout.py."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tritonkit.gateway.replicas import ReplicaSet, ReplicaState, parse_urls
from tritonkit.gateway.transport import UpstreamError
from tritonkit.gateway.versions import (
    BUCKETS,
    RolloutError,
    VersionRouter,
    VersionStats,
    bucket,
)


class FakeTransport:
    """A replica whose answers the test scripts: "ok", "down" (connection refused), "500",
    "404", "slow" (waits on an event before answering)."""

    def __init__(self, url: str, behaviour: str = "ok") -> None:
        self.url = url
        self.behaviour = behaviour
        self.calls: list[tuple[int, str | None, bool]] = []
        self.ready_answer = True
        self.release = asyncio.Event()

    async def infer(self, rows: Sequence[Mapping[str, Any]], timeout_s: float,
                    version: str | None = None, probe: bool = False) -> list[Any]:
        self.calls.append((len(rows), version, probe))
        if self.behaviour == "down":
            raise UpstreamError("unavailable", f"cannot reach {self.url}", connection=True)
        if self.behaviour == "500":
            raise UpstreamError("server", f"{self.url}: stub died")
        if self.behaviour == "404":
            raise UpstreamError("unavailable", f"{self.url}: version not found")
        if self.behaviour == "slow":
            await self.release.wait()
        return [(0.5, "medium", version or "1")] * len(rows)

    async def ready(self, timeout_s: float, version: str | None = None) -> bool:
        return self.ready_answer and self.behaviour != "down"

    async def close(self) -> None:
        pass


def _set(*behaviours: str, **options: Any) -> tuple[ReplicaSet, list[FakeTransport]]:
    replicas = ReplicaSet([f"10.0.0.{i}:8000" for i in range(len(behaviours))], "http",
                          timeout_s=1.0, **options)
    fakes = []
    for replica, behaviour in zip(replicas.replicas, behaviours, strict=True):
        fake = FakeTransport(replica.url, behaviour)
        replica.transport = fake
        fakes.append(fake)
    return replicas, fakes


ROW = {"tenure": 1.0}


def test_parse_urls_takes_a_comma_list_and_refuses_none_or_a_repeat() -> None:
    assert parse_urls(" a:1, b:2 ,") == ["a:1", "b:2"]
    with pytest.raises(ValueError, match="at least one"):
        parse_urls(" , ")
    with pytest.raises(ValueError, match="listed twice"):
        parse_urls("a:1,a:1")


def test_replica_set_sends_each_call_to_the_replica_with_the_fewest_outstanding() -> None:
    async def run() -> list[int]:
        replicas, fakes = _set("slow", "slow", "slow")
        pending = [asyncio.ensure_future(replicas.infer([ROW])) for _ in range(6)]
        await asyncio.sleep(0)
        outstanding = [r.outstanding for r in replicas.replicas]
        for fake in fakes:
            fake.release.set()
        await asyncio.gather(*pending)
        return outstanding

    assert asyncio.run(run()) == [2, 2, 2]


def test_replica_set_retries_a_refused_connection_elsewhere_and_ejects_the_replica() -> None:
    retries: list[UpstreamError] = []

    async def run() -> tuple[list[Any], ReplicaSet, list[FakeTransport]]:
        replicas, fakes = _set("down", "ok", "ok", eject_failures=2, on_retry=retries.append)
        answers = [await replicas.infer([ROW]) for _ in range(12)]
        return answers, replicas, fakes

    answers, replicas, fakes = asyncio.run(run())
    assert len(retries) == 2 and all(r.connection for r in retries)
    assert all(a == [(0.5, "medium", "1")] for a in answers)  # no caller saw the dead one
    assert replicas.replicas[0].state is ReplicaState.EJECTED
    assert "unreachable" in replicas.replicas[0].reason
    assert len(fakes[0].calls) == 2  # two refusals, then out of rotation


def test_replica_set_blames_a_500_on_the_replica_only_when_another_answers() -> None:
    async def run() -> tuple[ReplicaSet, ReplicaSet, list[Any]]:
        one_bad, _ = _set("500", "ok", eject_failures=2)
        for _ in range(8):
            await one_bad.infer([ROW])
        all_bad, fakes = _set("500", "500", eject_failures=1)
        errors = []
        for _ in range(4):
            with pytest.raises(UpstreamError) as caught:
                await all_bad.infer([ROW])
            errors.append(caught.value.kind)
        return one_bad, all_bad, [errors, sum(len(f.calls) for f in fakes)]

    one_bad, all_bad, (errors, calls) = asyncio.run(run())
    assert one_bad.replicas[0].state is ReplicaState.EJECTED
    assert "fails where other replicas answer" in one_bad.replicas[0].reason
    # a version that fails everywhere (a broken canary) ejects nobody, and is tried twice
    assert [r.state for r in all_bad.replicas] == [ReplicaState.UP, ReplicaState.UP]
    assert errors == ["server"] * 4 and calls == 8


def test_replica_set_tries_every_replica_for_a_missing_version_but_never_retries_a_400(
        ) -> None:
    async def run() -> tuple[str, list[int], str, list[int]]:
        missing, fakes = _set("404", "404", "404")
        with pytest.raises(UpstreamError) as first:
            await missing.infer([ROW], version="3")
        refused, refused_fakes = _set("ok", "ok")

        async def bad(rows: Any, timeout_s: float, version: Any = None,
                      probe: bool = False) -> Any:
            raise UpstreamError("bad_request", "contract: unknown category")

        for fake in refused_fakes:
            fake.infer = bad  # type: ignore[method-assign]
        with pytest.raises(UpstreamError) as second:
            await refused.infer([ROW])
        return (first.value.kind, [len(f.calls) for f in fakes], second.value.kind,
                [r.state for r in missing.replicas])

    kind, calls, refused_kind, states = asyncio.run(run())
    assert kind == "unavailable" and calls == [1, 1, 1]
    assert states == [ReplicaState.UP] * 3  # a version not loaded is no fault of the replica
    assert refused_kind == "bad_request"


def test_replica_set_keeps_the_last_replica_in_rotation_and_counts_no_retry_alone() -> None:
    retries: list[UpstreamError] = []

    async def run() -> ReplicaSet:
        replicas, _ = _set("down", eject_failures=1, on_retry=retries.append)
        for _ in range(3):
            with pytest.raises(UpstreamError):
                await replicas.infer([ROW])
        return replicas

    assert asyncio.run(run()).replicas[0].state is ReplicaState.UP
    assert retries == []  # nothing was sent again: there is no other replica


def test_health_check_ejects_a_replica_not_ready_and_brings_it_back_after_a_probe() -> None:
    async def run() -> list[Any]:
        replicas, fakes = _set("ok", "ok", eject_failures=2, probe_row=ROW)
        replicas.check_version = "1"
        fakes[1].ready_answer = False
        await replicas.check()
        seen = [replicas.replicas[1].state]
        await replicas.check()
        seen.append(replicas.replicas[1].state)
        fakes[1].ready_answer = True
        fakes[1].behaviour = "500"  # ready again, but its answers fail: stays out
        await replicas.check()
        seen.append(replicas.replicas[1].state)
        fakes[1].behaviour = "ok"
        await replicas.check()
        seen.append(replicas.replicas[1].state)
        seen.append(fakes[1].calls[-1])
        return seen

    assert asyncio.run(run()) == [ReplicaState.UP, ReplicaState.EJECTED, ReplicaState.EJECTED,
                                  ReplicaState.UP, (1, "1", True)]


def test_drain_waits_for_calls_in_flight_and_refuses_the_last_replica() -> None:
    async def run() -> list[Any]:
        replicas, fakes = _set("slow", "ok")
        call = asyncio.ensure_future(replicas.infer([ROW]))
        await asyncio.sleep(0)
        busy = replicas.replicas[0].outstanding
        drain = asyncio.ensure_future(replicas.drain(0, timeout_s=5))
        await asyncio.sleep(0.05)
        waiting = not drain.done()
        after = await replicas.infer([ROW])  # while draining, replica 1 answers
        fakes[0].release.set()
        drained = await drain
        await call
        with pytest.raises(ValueError, match="last one in rotation"):
            await replicas.drain(1, timeout_s=1)
        replicas.enable(0)
        return [busy, waiting, drained, after, len(fakes[1].calls),
                replicas.replicas[0].state]

    assert asyncio.run(run()) == [1, True, True, [(0.5, "medium", "1")], 1, ReplicaState.UP]


def test_router_is_sticky_per_customer_and_a_growing_canary_keeps_its_customers() -> None:
    customers = [f"{n:04d}-CUST" for n in range(20_000)]
    router = VersionRouter()
    assert router.version_for(customers[0]) is None  # no weights: Triton's choice
    split = {}
    previous: set[str] = set()
    for canary in (5, 25, 100):
        router.set({"1": 100 - canary, "2": canary} if canary < 100 else {"2": 100})
        chosen = {c: router.version_for(c) for c in customers}
        assert chosen == {c: router.version_for(c) for c in customers}  # sticky
        on_canary = {c for c, v in chosen.items() if v == "2"}
        assert previous <= on_canary  # nobody who had version 2 goes back
        previous = on_canary
        split[canary] = 100 * len(on_canary) / len(customers)
    assert split[5] == pytest.approx(5, abs=0.6) and split[25] == pytest.approx(25, abs=1.2)
    assert split[100] == 100
    assert router.stable == "2"
    assert 0 <= bucket("x") < BUCKETS and bucket("x") == bucket("x")


@pytest.mark.parametrize(("weights", "stable", "message"), [
    ({"1": 90, "2": 5}, None, "summing to 100"),
    ({"1": 105, "2": -5}, None, ">= 0"),
    ({"one": 100}, None, "whole number"),
    ({"1": 100}, "2", "has no weight"),
])
def test_router_refuses_weights_it_cannot_route_and_keeps_the_old_ones(
        weights: dict[str, float], stable: str | None, message: str) -> None:
    router = VersionRouter()
    router.set({"1": 100})
    with pytest.raises(RolloutError, match=message):
        router.set(weights, stable)
    assert router.weights == {"1": 100.0} and router.stable == "1"


def test_version_stats_count_outcomes_latency_and_the_answers_histogram() -> None:
    stats = VersionStats()
    stats.record("2", "ok", 0.0012, 3, [(0.05, "low", "2"), (0.65, "high", "2"),
                                         (0.1, "low", "2")])
    stats.record("2", "server", 0.2, 1)
    stats.record(None, "ok", 0.001, 1, [(0.3, "medium", "1")])
    snapshot = stats.snapshot()
    two = snapshot["2"]
    assert two["requests"] == {"ok": 1, "server": 1} and two["rows"] == {"ok": 3, "server": 1}
    assert two["high_risk_rows"] == 1
    # 0.05 and 0.1 fall in the first bucket (<= 0.1: Prometheus' le), 0.65 in (0.6, 0.7]
    assert two["probability_counts"][0] == 2 and two["probability_counts"][6] == 1
    assert sum(two["latency_counts"]) == 2 and set(snapshot) == {"2", "latest"}
    names = collections.Counter(f.name for f in stats.collect())
    assert names["gateway_version_requests"] == 1 and \
        names["gateway_version_triton_duration_seconds"] == 1
