"""A rollout step's gate: the canary against the stable version over the same window, from the
gateway's per-version counts (`GET /admin/rollout`, `gateway.versions.VersionStats`).

Three checks, each judged only once its window holds enough customers; until then the verdict
is `wait`, never a pass or a fail (an empty or small window says nothing):
- errors: the canary's share of customers Triton failed on (5xx, unreachable, timed out; the
  caller's 400s left out) at most the stable version's plus `error_margin`, judged from
  `min_rows` customers on each side;
- latency: the canary's p95 per Triton call at most `latency_ratio` x the stable one's (or the
  stable one's plus `latency_slack_ms`, whichever is larger), from `min_rows` too;
- drift: the canary's answers against the stable version's, with the drift statistics the
  monitoring uses (`monitor.drift_stats.judge_prediction`: Jensen-Shannon, PSI, high-risk rate)
  from `drift.min_rows` (500) customers on each side; critical fails, a warning is noted::

    window = Window.between(before["versions"]["2"], after["versions"]["2"])
    verdict = judge(stable_window, canary_window, GateThresholds())
    verdict.status, verdict.reasons          # "fail", ("errors: 41.2 % of customers failed ...")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tritonkit.monitor.drift_stats import DriftThresholds, judge_prediction

Status = Literal["wait", "pass", "fail"]
#: Outcomes that are the path's failure (`UpstreamError.kind`); "bad_request" is the caller's.
FAILED = ("server", "unavailable", "timeout", "breaker_open")


class GateThresholds(BaseModel):
    """When a step's gate passes; the defaults are the rollout CLI's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_rows: int = Field(100, ge=1, description="customers per side before errors and latency "
                                                 "are judged")
    error_margin: float = Field(0.01, ge=0, le=1, description="error-rate points the canary "
                                                              "may add to the stable version's")
    latency_ratio: float = Field(1.5, ge=1, description="canary p95 / stable p95 allowed")
    latency_slack_ms: float = Field(5.0, ge=0, description="or this many ms above the stable "
                                                           "p95, whichever is larger")
    drift: DriftThresholds = Field(default_factory=DriftThresholds)


@dataclasses.dataclass(frozen=True)
class Window:
    """One version's counts between two snapshots."""

    rows: dict[str, int]
    latency_buckets_s: tuple[float, ...]
    latency_counts: tuple[int, ...]
    probability_counts: tuple[int, ...]
    high_risk_rows: int

    @classmethod
    def between(cls, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
                ) -> Window:
        """`after - before` (a version absent from a snapshot counts zero)."""
        after = after or {}
        before = before or {}

        def minus(name: str) -> list[int]:
            now = list(after.get(name, []))
            then = list(before.get(name, [])) or [0] * len(now)
            return [a - b for a, b in zip(now, then, strict=True)]

        rows_after, rows_before = after.get("rows", {}), before.get("rows", {})
        return cls(
            rows={k: int(v) - int(rows_before.get(k, 0)) for k, v in rows_after.items()},
            latency_buckets_s=tuple(after.get("latency_buckets_s", ())),
            latency_counts=tuple(minus("latency_counts")),
            probability_counts=tuple(minus("probability_counts")),
            high_risk_rows=int(after.get("high_risk_rows", 0))
            - int(before.get("high_risk_rows", 0)))

    @property
    def total(self) -> int:
        """Customers sent, the caller's refused ones left out."""
        return sum(n for outcome, n in self.rows.items() if outcome != "bad_request")

    @property
    def failed(self) -> int:
        return sum(self.rows.get(outcome, 0) for outcome in FAILED)

    @property
    def answered(self) -> int:
        return self.rows.get("ok", 0)

    @property
    def error_rate(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def p95_ms(self) -> float | None:
        """The 95th percentile of the Triton calls' duration (linear within its bucket, as
        Prometheus' histogram_quantile); None without calls."""
        return quantile_ms(0.95, self.latency_buckets_s, self.latency_counts)


def quantile_ms(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The q-quantile in ms of a histogram: counts per bucket, `bounds` the upper edges (one
    fewer than the counts: the last bucket is +Inf and reads as its lower edge)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank, seen = q * total, 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(bounds):
                return 1e3 * bounds[-1]
            lower = bounds[i - 1] if i else 0.0
            return 1e3 * (lower + (bounds[i] - lower) * (rank - seen) / n)
        seen += n
    return 1e3 * bounds[-1]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A gate's outcome, what it measured, and why."""

    status: Status
    reasons: tuple[str, ...]
    measured: dict[str, Any]


def judge(stable: Window, canary: Window, thresholds: GateThresholds) -> Verdict:
    """The canary's gate over one window: fail at the first check that fails, pass once every
    check was judged and passed, else wait."""
    reasons: list[str] = []
    failed: list[str] = []
    waiting: list[str] = []
    measured: dict[str, Any] = {"stable_rows": stable.total, "canary_rows": canary.total,
                                "stable_error_rate": stable.error_rate,
                                "canary_error_rate": canary.error_rate}
    if min(stable.total, canary.total) < thresholds.min_rows:
        waiting.append(f"errors and latency: {canary.total} canary and {stable.total} stable "
                       f"customers, {thresholds.min_rows} needed on each side")
    else:
        limit = stable.error_rate + thresholds.error_margin
        text = (f"errors: {canary.error_rate:.1%} of the canary's customers failed, "
                f"{stable.error_rate:.1%} of the stable version's (limit {limit:.1%})")
        (failed if canary.error_rate > limit else reasons).append(text)
        stable_p95, canary_p95 = stable.p95_ms(), canary.p95_ms()
        measured.update(stable_p95_ms=stable_p95, canary_p95_ms=canary_p95)
        if stable_p95 is not None and canary_p95 is not None:
            allowed = max(stable_p95 * thresholds.latency_ratio,
                          stable_p95 + thresholds.latency_slack_ms)
            text = (f"latency: p95 {canary_p95:.1f} ms against {stable_p95:.1f} ms "
                    f"(limit {allowed:.1f} ms)")
            (failed if canary_p95 > allowed else reasons).append(text)
    drift = _drift(stable, canary, thresholds)
    measured["drift"] = drift
    if drift["severity"] == "insufficient":
        waiting.append(f"drift: {canary.answered} canary and {stable.answered} stable answers, "
                       f"{thresholds.drift.min_rows} needed on each side")
    else:
        text = f"drift: {drift['severity']} ({'; '.join(drift['reasons']) or 'no finding'})"
        (failed if drift["severity"] == "critical" else reasons).append(text)
    if failed:
        return Verdict("fail", tuple(failed + reasons), measured)
    if waiting:
        return Verdict("wait", tuple(waiting + reasons), measured)
    return Verdict("pass", tuple(reasons), measured)


def _drift(stable: Window, canary: Window, thresholds: GateThresholds) -> dict[str, Any]:
    rows = min(stable.answered, canary.answered)
    if rows < thresholds.drift.min_rows or not sum(stable.probability_counts):
        return {"severity": "insufficient", "reasons": []}
    reference = [n / sum(stable.probability_counts) for n in stable.probability_counts]
    verdict = judge_prediction(
        reference, int(sum(stable.probability_counts)), list(canary.probability_counts),
        stable.high_risk_rows / stable.answered, canary.high_risk_rows / canary.answered,
        thresholds.drift, feature="prediction")
    return {"severity": verdict.severity, "reasons": list(verdict.reasons), "js": verdict.js,
            "psi": verdict.psi}
