"""A rollout's gates and its decisions without a server: a window too small waits (never a pass
or a fail), errors fail from 100 customers, drift from 500 answers, and a step that keeps
waiting past its deadline ends inconclusive and rolled back. The real stack's side is in
tests/integration/test_rollout.py."""

from __future__ import annotations

from typing import Any

import pytest

from tritonkit.drift.binning import PROBABILITY_EDGES
from tritonkit.gateway.versions import LATENCY_BUCKETS_S
from tritonkit.rollout.engine import Rollout, RolloutFailed, RolloutPlan
from tritonkit.rollout.gates import GateThresholds, Window, judge, quantile_ms

BINS = len(PROBABILITY_EDGES) + 1
#: the share of answers per probability bucket of a stable-looking model
SHAPE = [0.30, 0.15, 0.10, 0.08, 0.08, 0.08, 0.07, 0.06, 0.05, 0.03]


def _window(rows: int, *, failed: int = 0, shape: list[float] = SHAPE, high: float = 0.2,
            latency_bucket: int = 3) -> Window:
    answered = rows - failed
    counts = [round(answered * share) for share in shape]
    counts[0] += answered - sum(counts)
    latency = [0] * (len(LATENCY_BUCKETS_S) + 1)
    latency[latency_bucket] = rows
    return Window(rows={"ok": answered, "server": failed}, latency_buckets_s=LATENCY_BUCKETS_S,
                  latency_counts=tuple(latency), probability_counts=tuple(counts),
                  high_risk_rows=round(answered * high))


def test_a_window_too_small_waits_and_never_passes_or_fails() -> None:
    verdict = judge(_window(5000), _window(40, failed=40), GateThresholds())
    assert verdict.status == "wait"  # 40 customers, every one failed: still not judged
    assert any("100 needed" in r for r in verdict.reasons)


def test_errors_fail_the_gate_from_100_customers_and_drift_waits_for_500() -> None:
    failing = judge(_window(5000), _window(150, failed=30), GateThresholds())
    assert failing.status == "fail" and failing.reasons[0].startswith("errors: 20.0%")
    healthy = judge(_window(5000), _window(150), GateThresholds())
    assert healthy.status == "wait" and any("drift" in r for r in healthy.reasons)


def test_a_good_canary_passes_and_a_drifting_one_fails_once_500_answers_a_side() -> None:
    assert judge(_window(5000), _window(600), GateThresholds()).status == "pass"
    shifted = [0.05, 0.05, 0.05, 0.05, 0.05, 0.10, 0.15, 0.15, 0.15, 0.20]
    verdict = judge(_window(5000), _window(600, shape=shifted, high=0.6), GateThresholds())
    assert verdict.status == "fail"
    assert any(r.startswith("drift: critical") for r in verdict.reasons)


def test_a_slower_canary_fails_the_latency_check() -> None:
    slow = len(LATENCY_BUCKETS_S) - 3  # 0.5-1 s against 2-3 ms
    verdict = judge(_window(5000), _window(600, latency_bucket=slow), GateThresholds())
    assert verdict.status == "fail" and verdict.reasons[0].startswith("latency:")


def test_quantile_interpolates_within_its_bucket_like_histogram_quantile() -> None:
    bounds = (0.001, 0.002, 0.004)
    assert quantile_ms(0.5, bounds, [0, 10, 0, 0]) == pytest.approx(1.5)
    assert quantile_ms(0.95, bounds, [50, 50, 0, 0]) == pytest.approx(1.9)
    assert quantile_ms(0.99, bounds, [0, 0, 0, 5]) == pytest.approx(4.0)  # +Inf: its low edge
    assert quantile_ms(0.5, bounds, [0, 0, 0, 0]) is None


def test_window_between_two_snapshots_subtracts_and_a_missing_version_counts_zero() -> None:
    after = {"rows": {"ok": 30, "server": 2}, "latency_buckets_s": [0.001],
             "latency_counts": [20, 12], "probability_counts": [5] * BINS, "high_risk_rows": 4}
    before = {"rows": {"ok": 10}, "latency_buckets_s": [0.001], "latency_counts": [10, 0],
              "probability_counts": [1] * BINS, "high_risk_rows": 1}
    window = Window.between(before, after)
    assert window.total == 22 and window.failed == 2 and window.high_risk_rows == 3
    assert window.latency_counts == (10, 12) and window.probability_counts == (4,) * BINS
    assert Window.between(None, after).total == 32


class FakeAdmin:
    """The gateway's admin API as a rollout sees it, with counts that never grow: no customer
    reaches the canary."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.weights: dict[str, float] = {"1": 100.0}

    def state(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "stable": "1", "versions": {}, "replicas": [{}],
                "loaded": {"0": ["1"]}}

    def load(self, version: str, **options: Any) -> dict[str, Any]:
        self.calls.append(("load", version))
        return {"weights": {"weights": self.weights, "stable": "1"}}

    def set_weights(self, weights: dict[str, float], stable: str | None) -> None:
        self.calls.append(("weights", dict(weights)))
        self.weights = dict(weights)

    def rollback(self, version: str, reason: str) -> None:
        self.calls.append(("rollback", version))
        self.weights = {"1": 100.0}

    def unload(self, version: str, **options: Any) -> None:
        self.calls.append(("unload", version))


def test_a_step_that_never_gets_enough_customers_ends_inconclusive_and_rolled_back() -> None:
    admin, now = FakeAdmin(), [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    plan = RolloutPlan(version="2", soak_s=5, max_wait_s=30, poll_s=1)
    report = Rollout(admin, plan, say=lambda _: None, clock=lambda: now[0],  # type: ignore[arg-type]
                     sleep=sleep).run()
    assert report.outcome == "inconclusive" and report.exit_code == 3
    assert report.steps[0].status == "wait" and report.steps[0].seconds >= 30
    assert admin.calls == [("load", "2"), ("weights", {"2": 5.0, "1": 95.0}),
                           ("rollback", "2"), ("unload", "2")]


def test_a_rollout_refuses_to_start_over_another_one_or_the_version_already_stable() -> None:
    admin = FakeAdmin()
    admin.weights = {"1": 90.0, "3": 10.0}
    with pytest.raises(RolloutFailed, match="under way"):
        Rollout(admin, RolloutPlan(version="2")).run()  # type: ignore[arg-type]
    admin.weights = {"2": 100.0}
    with pytest.raises(RolloutFailed, match="already takes every customer"):
        Rollout(admin, RolloutPlan(version="2")).run()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rise from above 0 to 100"):
        RolloutPlan(version="2", steps=(25.0, 5.0, 100.0))
