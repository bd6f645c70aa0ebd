"""What one window says: drift verdicts per feature and on the predictions, data quality, and the
serving numbers, as the alert engine's signals and the sidecar's exported gauges.

Drift comes from the python steps' binned counters, judged against the reference profile by
`drift_stats`; serving numbers come from Triton's counters of the ensemble (errors, requests)
and of its steps (queue time), and from the ensemble's latency summary::

    judge = WindowJudge(profile, model="churn", version="1", thresholds=DriftThresholds())
    signals = judge.judge(window, steps=("churn_fused",))
    engine.evaluate(now, signals.alert_signals(model_unavailable=0.0))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tritonkit.drift.binning import DriftLayout, DriftWindow
from tritonkit.monitor import drift_stats
from tritonkit.monitor.drift_stats import DriftThresholds, FeatureDrift
from tritonkit.monitor.exported import ENSEMBLE_FAILURE_MULTIPLICITY
from tritonkit.monitor.windows import Window

#: Triton's per-model series the serving numbers come from.
SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
REQUEST_DURATION = "nv_inference_request_duration_us"
QUEUE_DURATION = "nv_inference_queue_duration_us"
#: With `--metrics-config summary_latencies=true`; Triton's summaries cover about the last
#: minute (prometheus-cpp's default max age), whatever the sidecar's window.
LATENCY_SUMMARY = "nv_inference_request_summary_us"


@dataclasses.dataclass(frozen=True)
class Serving:
    """The ensemble's serving numbers in one window; None where the window cannot tell."""

    requests: float
    failures: float
    error_rate: float | None
    requests_per_minute: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    queue_time_share: float | None


@dataclasses.dataclass(frozen=True)
class WindowSignals:
    """Everything judged in one window, for the alert engine, the gauges and the report."""

    model: str
    start: float
    end: float
    rows: float
    min_rows: int
    counts: DriftWindow
    features: tuple[FeatureDrift, ...]
    prediction: FeatureDrift
    high_risk_rate: float | None
    reference_high_risk_rate: float
    drifted_share: float | None  # None while no feature has enough rows to be judged
    unseen_share: dict[str, float]  # categorical features; empty without rows
    out_of_range_share: dict[str, float]  # numeric features; empty without rows
    serving: Serving

    @property
    def judged(self) -> bool:
        """True when the window held enough rows for drift verdicts."""
        return self.rows >= self.min_rows

    def alert_signals(self, model_unavailable: float | None) -> dict[str, Any]:
        """The `signals` mapping of `AlertEngine.evaluate`; what the window cannot tell (too
        few rows, no requests, no latency summary) is None, which moves no alert."""
        levels = {v.feature: drift_stats.signal_level(v) for v in self.features}
        return {
            "error_rate": self.serving.error_rate,
            "latency_p95_ms": self.serving.latency_p95_ms,
            "requests_per_minute": self.serving.requests_per_minute,
            "queue_time_share": self.serving.queue_time_share,
            "feature_drift": {k: v for k, v in levels.items() if v is not None} or None,
            # Like the verdicts, a share of a few rows is noise: gated by min_rows too.
            "unseen_category_share": dict(self.unseen_share) if self.judged else None,
            "prediction_drift": drift_stats.signal_level(self.prediction),
            "drifted_feature_share": self.drifted_share,
            "model_unavailable": model_unavailable,
        }

    def drifted_features(self) -> list[str]:
        """Features whose verdict is warning or critical."""
        return [v.feature for v in self.features if v.severity in ("warning", "critical")]


class WindowJudge:
    """Judges windows of one model version against its reference profile."""

    def __init__(self, profile: Mapping[str, Any], *, model: str, version: str,
                 thresholds: DriftThresholds) -> None:
        self.profile = profile
        self.model = model
        self.version = str(version)
        self.thresholds = thresholds
        self.layout = DriftLayout.from_profile(profile, model, self.version)
        self.reference_rows = int(profile["rows"])

    def judge(self, window: Window, steps: Sequence[str]) -> WindowSignals:
        """Verdicts and serving numbers of `window`; `steps` are the ensemble's step models."""
        counts = self.layout.window(self.layout.vector(window.samples()))
        features = self._features(counts)
        predictions = float(counts.prediction.sum())
        high_risk = counts.risk["high"] / predictions if predictions else None
        reference_high = float(self.profile["prediction"]["high_risk_fraction"])
        prediction = drift_stats.judge_prediction(
            self.profile["prediction"]["probability_fractions"], self.reference_rows,
            counts.prediction, reference_high, high_risk if high_risk is not None else 0.0,
            self.thresholds)
        share, judged = drift_stats.drifted_share(features)
        rows = counts.rows
        return WindowSignals(
            model=self.model, start=window.start, end=window.end, rows=rows,
            min_rows=self.thresholds.min_rows, counts=counts, features=features,
            prediction=prediction, high_risk_rate=high_risk,
            reference_high_risk_rate=reference_high,
            drifted_share=share if judged else None,
            unseen_share={f: n / rows for f, n in counts.unseen.items()} if rows else {},
            out_of_range_share=({f: n / rows for f, n in counts.out_of_range.items()}
                                if rows else {}),
            serving=self._serving(window, steps),
        )

    def _features(self, counts: DriftWindow) -> tuple[FeatureDrift, ...]:
        verdicts = []
        for name, entry in self.profile["numeric"].items():
            verdicts.append(drift_stats.judge_numeric(
                name, entry["fractions"], self.reference_rows, counts.numeric[name],
                out_of_range=counts.out_of_range[name], missing=counts.missing[name],
                thresholds=self.thresholds,
                reference_missing=float(entry.get("missing_fraction", 0.0))))
        for name, entry in self.profile["categorical"].items():
            verdicts.append(drift_stats.judge_categorical(
                name, entry["frequencies"], self.reference_rows, counts.categorical[name],
                unseen=counts.unseen[name], missing=counts.missing[name],
                thresholds=self.thresholds,
                reference_missing=float(entry.get("missing_fraction", 0.0))))
        return tuple(verdicts)

    def _serving(self, window: Window, steps: Sequence[str]) -> Serving:
        model = self.model
        successes = window.total(SUCCESS, model=model)
        # Workaround (Triton 2.51): a failed ensemble request is counted this many times.
        failures = window.total(FAILURE, model=model) / ENSEMBLE_FAILURE_MULTIPLICITY
        requests = successes + failures
        span_s = window.span_s
        queued = sum(window.total(QUEUE_DURATION, model=step) for step in steps)
        spent = sum(window.total(REQUEST_DURATION, model=step) for step in steps)
        return Serving(
            requests=requests, failures=failures,
            error_rate=failures / requests if requests else None,
            requests_per_minute=requests / span_s * 60.0 if span_s > 0 else None,
            latency_p95_ms=_quantile_ms(window, model, steps, "0.95"),
            latency_p99_ms=_quantile_ms(window, model, steps, "0.99"),
            queue_time_share=queued / spent if spent > 0 else None,
        )


def _quantile_ms(window: Window, model: str, steps: Sequence[str], quantile: str
                 ) -> float | None:
    """The slowest replica's quantile from Triton's latency summary, in ms (None: no summary,
    or no request in the summary's own window).

    Workaround (Triton 2.51): an ensemble with `response_cache` on exports no summary of its
    own, only its steps do; then the sum of the steps' quantiles stands in for it (requests
    that missed the cache), as in the Prometheus rule TritonChurnLatencyP95High.
    """
    values = window.values(LATENCY_SUMMARY, model=model, quantile=quantile)
    if values:
        return max(values) / 1000.0
    per_step = [window.values(LATENCY_SUMMARY, model=step, quantile=quantile) for step in steps]
    if steps and all(per_step):
        return sum(max(v) for v in per_step) / 1000.0
    return None
