"""What one window says: drift verdicts per feature and on the predictions, data quality, and the
serving numbers, as the alert engine's signals and the sidecar's exported gauges.

Drift comes from the python steps' binned counters, judged against the reference profile by
`drift_stats`; serving numbers come from Triton's counters of the ensemble (errors, requests)
and of its steps (queue time), and from the ensemble's latency summary::

    judge = WindowJudge(profile, model="churn", version="1", thresholds=DriftThresholds())
    signals = judge.judge(window, EntryPoint("churn", ("churn_fused",), cached=True))
    engine.evaluate(now, signals.alert_signals(model_unavailable=0.0))
    serving(window, EntryPoint("minilm", ("minilm_fused",), cached=False))   # any entry point
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from tritonkit.drift.binning import DriftLayout, DriftWindow
from tritonkit.monitor import drift_stats
from tritonkit.monitor.drift_stats import DriftThresholds, FeatureDrift
from tritonkit.monitor.windows import Window
from tritonkit.repository.entry_points import EntryPoint
from tritonkit.repository.step_contract import REFUSED_REQUESTS

#: Triton's per-model series the serving numbers come from.
SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
REQUEST_DURATION = "nv_inference_request_duration_us"
QUEUE_DURATION = "nv_inference_queue_duration_us"
#: With `--metrics-config summary_latencies=true`; Triton's summaries cover about the last
#: minute (prometheus-cpp's default max age), whatever the sidecar's window.
LATENCY_SUMMARY = "nv_inference_request_summary_us"
#: The sidecar's own probes, which it adds to each scrape (`MonitorService`).
PROBES = "tritonkit_monitor_probe_requests_total"


@dataclasses.dataclass(frozen=True)
class Serving:
    """An entry point's serving numbers in one window, the clients' alone (the sidecar's probes
    left out); None where the window cannot tell. `failures` are the server's: requests the
    first step refused as the caller's mistake are `refusals`."""

    model: str
    requests: float
    failures: float
    refusals: float
    probes: float
    error_rate: float | None
    refusal_rate: float | None
    requests_per_minute: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    queue_time_share: float | None

    def alert_signals(self, model_unavailable: float | None) -> dict[str, Any]:
        """The serving part of `AlertEngine.evaluate`'s signals."""
        return {
            "error_rate": self.error_rate,
            "latency_p95_ms": self.latency_p95_ms,
            "requests_per_minute": self.requests_per_minute,
            "queue_time_share": self.queue_time_share,
            "model_unavailable": model_unavailable,
        }


def serving(window: Window, entry: EntryPoint) -> Serving:
    """The serving numbers of `entry` in `window`, as the Prometheus rules compute them
    (tritonkit.monitor.rules): Triton's counts minus the probes, failures minus refusals."""
    model = entry.name
    successes = window.total(SUCCESS, model=model)
    # Workaround (Triton 2.51): a failed ensemble request is counted this many times.
    failed = window.total(FAILURE, model=model) / entry.failure_multiplicity
    probes = window.total(PROBES, model=model)
    failed_probes = window.total(PROBES, model=model, outcome="failed")
    refusals = window.total(REFUSED_REQUESTS, model=entry.refusing_step)
    requests = max(successes + failed - probes, 0.0)
    failures = max(failed - refusals - failed_probes, 0.0)
    span_s = window.span_s
    timed = entry.timed_models
    queued = sum(window.total(QUEUE_DURATION, model=m) for m in timed)
    spent = sum(window.total(REQUEST_DURATION, model=m) for m in timed)
    # Triton's quantiles count the probes too: judged only while the clients' requests are at
    # least as many, so that the probes alone never make the latency signal.
    timed_by_clients = requests > 0 and requests >= probes
    return Serving(
        model=model, requests=requests, failures=failures, refusals=refusals, probes=probes,
        error_rate=failures / requests if requests else None,
        refusal_rate=refusals / requests if requests else None,
        requests_per_minute=requests / span_s * 60.0 if span_s > 0 else None,
        latency_p95_ms=(_quantile_ms(window, model, entry.steps, "0.95")
                        if timed_by_clients else None),
        latency_p99_ms=(_quantile_ms(window, model, entry.steps, "0.99")
                        if timed_by_clients else None),
        queue_time_share=queued / spent if spent > 0 else None,
    )


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
            **self.serving.alert_signals(model_unavailable),
            "feature_drift": {k: v for k, v in levels.items() if v is not None} or None,
            # Like the verdicts, a share of a few rows is noise: gated by min_rows too.
            "unseen_category_share": dict(self.unseen_share) if self.judged else None,
            "prediction_drift": drift_stats.signal_level(self.prediction),
            "drifted_feature_share": self.drifted_share,
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

    def judge(self, window: Window, entry: EntryPoint) -> WindowSignals:
        """Verdicts of `window`, and the serving numbers of `entry` (the model's ensemble)."""
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
            serving=serving(window, entry),
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


def _quantile_ms(window: Window, model: str, steps: Sequence[str], quantile: str
                 ) -> float | None:
    """The slowest replica's quantile from Triton's latency summary, in ms (None: no summary,
    or no request in the summary's own window).

    Workaround (Triton 2.51): an ensemble with `response_cache` on exports no summary of its
    own, only its steps do; then the sum of the steps' quantiles stands in for it (requests
    that missed the cache), as in the Prometheus rule TritonModelLatencyP95High. A model idle
    in the summary's window exports NaN: it is left out, as the rule's `>= 0` leaves it out.
    """
    def known(name: str) -> list[float]:
        return [v for v in window.values(LATENCY_SUMMARY, model=name, quantile=quantile)
                if not math.isnan(v)]

    values = known(model)
    if values:
        return max(values) / 1000.0
    per_step = [known(step) for step in steps]
    if steps and all(per_step):
        return sum(max(v) for v in per_step) / 1000.0
    return None
