"""Which version of the model answers a customer, and what each version's answers look like:
the gateway's side of a rollout (`tritonkit.rollout` drives it).

`VersionRouter` holds the weights (percent per Triton model version, summing to 100) and the
stable version. A customer's id hashes to one of 10,000 buckets; the versions other than the
stable one take the lowest buckets in version order and the stable one the rest, so a canary
that grows from 5 % to 25 % keeps every customer it already had (sticky), and a customer sees
one version for as long as the weights stand. With no weights the gateway names no version and
Triton answers with the one its version policy picks (the highest loaded): set the weights
before a second version is loaded.

`VersionStats` counts per version what the rollout's gates read: Triton requests by outcome,
customers, the latency of each Triton call, and the answers' probability histogram (the drift
profile's buckets) and high-risk count. Cumulative, like Prometheus counters: a gate diffs two
snapshots (`GET /admin/rollout`), and `/metrics` shows the same counts::

    router = VersionRouter()
    router.set({"1": 95, "2": 5}, stable="1")
    router.version_for("7590-VHVEG")          # "1" (or "2" for 5 % of customers, always the same)
    stats = VersionStats(); stats.record("2", "ok", 0.002, answers); stats.snapshot()["2"]
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from tritonkit.drift.binning import PROBABILITY_EDGES
from tritonkit.gateway.wire import Answer

BUCKETS = 10_000
#: The label and stats key of requests that name no version (Triton picks it).
UNVERSIONED = "latest"
#: Latency buckets of a Triton call (seconds): fine below 10 ms, where a p95 gate lives.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015,
                     0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5)
#: The outcomes a Triton call is counted under: "ok", or an `UpstreamError.kind`.
OUTCOMES = ("ok", "bad_request", "unavailable", "timeout", "server", "breaker_open")


class RolloutError(ValueError):
    """Weights the router cannot take: the message says what to change."""


def bucket(customer_id: str) -> int:
    """The customer's bucket in [0, BUCKETS): the same for the same id in every gateway."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % BUCKETS


def check_version(version: str) -> str:
    """A Triton model version: a positive whole number, as text."""
    if not version.isdigit() or int(version) < 1:
        raise RolloutError(f"a model version is a whole number from 1, not {version!r}")
    return str(int(version))


class VersionRouter:
    """The weights of the versions (percent), and the customer -> version rule."""

    def __init__(self) -> None:
        self.weights: dict[str, float] = {}
        self.stable: str | None = None
        self._bounds: list[tuple[int, str]] = []  # (first bucket past the version, version)

    def set(self, weights: Mapping[str, float], stable: str | None = None) -> None:
        """New weights (percent per version, summing to 100; {} for none). `stable` is the
        version measured against (default: the heaviest); it takes the highest buckets.

        Raises:
            RolloutError: a version that is no version, a negative weight, a sum not 100, or
                a stable version without weight.
        """
        cleaned = {check_version(str(v)): float(w) for v, w in weights.items()}
        if any(w < 0 for w in cleaned.values()):
            raise RolloutError(f"weights must be >= 0, got {weights}")
        if cleaned and abs(sum(cleaned.values()) - 100.0) > 1e-6:
            raise RolloutError(f"weights are percentages summing to 100, got "
                               f"{sum(cleaned.values()):g}: {weights}")
        if stable is not None:
            stable = check_version(stable)
            if stable not in cleaned:
                raise RolloutError(f"the stable version {stable} has no weight: {weights}")
        elif cleaned:
            stable = max(cleaned, key=lambda v: (cleaned[v], -int(v)))
        others = sorted((v for v in cleaned if v != stable), key=int)
        bounds, edge = [], 0.0
        for version in others:
            edge += cleaned[version] * BUCKETS / 100
            bounds.append((round(edge), version))
        if stable is not None:
            bounds.append((BUCKETS, stable))
        self.weights, self.stable, self._bounds = cleaned, stable, bounds

    def version_for(self, customer_id: str) -> str | None:
        """The version that answers this customer; None with no weights set."""
        if not self._bounds:
            return None
        b = bucket(customer_id)
        for edge, version in self._bounds:
            if b < edge:
                return version
        return self._bounds[-1][1]

    def as_dict(self) -> dict[str, Any]:
        return {"weights": {v: self.weights[v] for v in sorted(self.weights, key=int)},
                "stable": self.stable}


@dataclasses.dataclass
class _Counts:
    requests: dict[str, int] = dataclasses.field(default_factory=dict)  # by outcome
    rows: dict[str, int] = dataclasses.field(default_factory=dict)  # by outcome
    latency: list[int] = dataclasses.field(
        default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_s: float = 0.0
    probability: list[int] = dataclasses.field(
        default_factory=lambda: [0] * (len(PROBABILITY_EDGES) + 1))
    high_risk: int = 0


class VersionStats(Collector):
    """Per-version counts of the gateway's Triton calls (also a prometheus_client collector)."""

    def __init__(self) -> None:
        self._counts: dict[str, _Counts] = {}

    def record(self, version: str | None, outcome: str, seconds: float,
               rows: int, answers: Sequence[Answer] = ()) -> None:
        """One Triton call of `rows` customers for `version`, its outcome and duration."""
        counts = self._counts.get(version or UNVERSIONED)
        if counts is None:
            counts = self._counts[version or UNVERSIONED] = _Counts()
        counts.requests[outcome] = counts.requests.get(outcome, 0) + 1
        counts.rows[outcome] = counts.rows.get(outcome, 0) + rows
        counts.latency[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        counts.latency_sum_s += seconds
        probability = counts.probability
        for p, risk, _ in answers:
            # bin i holds edge[i-1] < p <= edge[i]: Prometheus' `le`, as the drift profile bins
            probability[bisect.bisect_left(PROBABILITY_EDGES, p)] += 1
            if risk == "high":
                counts.high_risk += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every version's cumulative counts (JSON-ready)."""
        return {version: {"requests": dict(c.requests), "rows": dict(c.rows),
                          "latency_buckets_s": list(LATENCY_BUCKETS_S),
                          "latency_counts": list(c.latency),
                          "latency_sum_s": c.latency_sum_s,
                          "probability_edges": list(PROBABILITY_EDGES),
                          "probability_counts": list(c.probability),
                          "high_risk_rows": c.high_risk}
                for version, c in self._counts.items()}

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "gateway_version_requests", "Triton requests per model version and outcome (ok, "
            "or the failure's kind)", labels=["version", "outcome"])
        rows = CounterMetricFamily(
            "gateway_version_rows", "Customers sent to Triton per model version and outcome",
            labels=["version", "outcome"])
        latency = HistogramMetricFamily(
            "gateway_version_triton_duration_seconds", "Duration of each Triton call (retries "
            "included) per model version", labels=["version"])
        probability = CounterMetricFamily(
            "gateway_version_prediction_bin", "Answers per churn-probability bucket (the drift "
            "profile's edges; `upper` is the bucket's upper edge, not cumulative) per model "
            "version", labels=["version", "upper"])
        high = CounterMetricFamily(
            "gateway_version_high_risk_rows", "Answers with risk_level high per model version",
            labels=["version"])
        edges = [f"{e:g}" for e in PROBABILITY_EDGES] + ["+Inf"]
        for version, c in list(self._counts.items()):
            for outcome, n in c.requests.items():
                requests.add_metric([version, outcome], n)
                rows.add_metric([version, outcome], c.rows.get(outcome, 0))
            cumulative, buckets = 0, []
            for le, n in zip([*map(str, LATENCY_BUCKETS_S), "+Inf"], c.latency, strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            latency.add_metric([version], buckets, c.latency_sum_s)
            for upper, n in zip(edges, c.probability, strict=True):
                probability.add_metric([version, upper], n)
            high.add_metric([version], c.high_risk)
        yield from (requests, rows, latency, probability, high)
