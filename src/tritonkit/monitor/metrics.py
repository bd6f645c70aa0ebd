"""The sidecar's own `/metrics`: the series of `exported.SIDECAR_METRICS`, and nothing else of
ours, in a registry of their own (plus prometheus_client's process and platform collectors)::

    metrics = SidecarMetrics()
    metrics.publish(signals)                          # after each window
    generate_latest(metrics.registry)                 # what GET /metrics answers
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from tritonkit.monitor.alerts import Alert
from tritonkit.monitor.exported import SIDECAR_METRICS
from tritonkit.monitor.signals import Serving, WindowSignals

#: Evaluations take ~milliseconds (bench/monitor_eval.py); buckets around the 20 ms goal.
EVALUATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
#: Gauge value of each verdict (`tritonkit_monitor_*_drift_severity`).
SEVERITY_VALUE = {"insufficient": -1.0, "ok": 0.0, "warning": 1.0, "critical": 2.0}


class SidecarMetrics:
    """The exported series, created from their one definition in `exported.py`."""

    def __init__(self) -> None:
        # A counter's `_created` series would be a metric of its own on the text format:
        # export exactly the names in SIDECAR_METRICS.
        prometheus_client.disable_created_metrics()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._metrics: dict[str, Any] = {}
        for name, spec in SIDECAR_METRICS.items():
            if spec.kind == "histogram":
                metric: Any = Histogram(name, spec.help, spec.labels, registry=self.registry,
                                        buckets=EVALUATION_BUCKETS_S)
            else:
                kind = Gauge if spec.kind == "gauge" else Counter
                metric = kind(name, spec.help, spec.labels, registry=self.registry)
            self._metrics[name] = metric
        self._firing: set[tuple[str, str, str, str]] = set()

    def __getitem__(self, name: str) -> Any:
        return self._metrics[name]

    def publish(self, signals: WindowSignals) -> None:
        """Set the drift gauges from one window; what it cannot tell is NaN."""
        model = signals.model
        self._set("tritonkit_monitor_window_rows", signals.rows, model=model)
        for verdict in signals.features:
            labels = {"model": model, "feature": verdict.feature}
            self._set("tritonkit_monitor_feature_js_distance", verdict.js, **labels)
            self._set("tritonkit_monitor_feature_psi", verdict.psi, **labels)
            self._set("tritonkit_monitor_feature_drift_severity",
                      SEVERITY_VALUE[verdict.severity], **labels)
        for feature, share in _all(signals.unseen_share, signals.counts.unseen):
            self._set("tritonkit_monitor_unseen_category_share", share, model=model,
                      feature=feature)
        for feature, share in _all(signals.out_of_range_share, signals.counts.out_of_range):
            self._set("tritonkit_monitor_out_of_range_share", share, model=model,
                      feature=feature)
        self._set("tritonkit_monitor_prediction_js_distance", signals.prediction.js, model=model)
        self._set("tritonkit_monitor_prediction_drift_severity",
                  SEVERITY_VALUE[signals.prediction.severity], model=model)
        self._set("tritonkit_monitor_high_risk_rate", signals.high_risk_rate, model=model)
        self._set("tritonkit_monitor_drifted_feature_share", signals.drifted_share, model=model)

    def publish_serving(self, serving: Serving) -> None:
        """Set an entry point's serving gauges from one window; what it cannot tell is NaN."""
        model = serving.model
        self._set("tritonkit_monitor_error_rate", serving.error_rate, model=model)
        self._set("tritonkit_monitor_client_refusal_rate", serving.refusal_rate, model=model)
        self._set("tritonkit_monitor_latency_p95_ms", serving.latency_p95_ms, model=model)
        self._set("tritonkit_monitor_latency_p99_ms", serving.latency_p99_ms, model=model)
        self._set("tritonkit_monitor_requests_per_minute", serving.requests_per_minute,
                  model=model)
        self._set("tritonkit_monitor_queue_time_share", serving.queue_time_share, model=model)

    def set_alerts(self, firing: Iterable[Alert]) -> None:
        """1 for every alert firing now, 0 for those that fired before and stopped."""
        now = {(a.labels.get("alertname", ""), a.labels.get("severity", ""),
                a.labels.get("model", ""), a.labels.get("feature", "")) for a in firing}
        gauge = self._metrics["tritonkit_monitor_alert_firing"]
        for key in now | self._firing:
            gauge.labels(*key).set(1.0 if key in now else 0.0)
        self._firing |= now

    def set_health(self, checks: Mapping[str, bool]) -> None:
        gauge = self._metrics["tritonkit_monitor_health_check_ok"]
        for check, ok in checks.items():
            gauge.labels(check=check).set(1.0 if ok else 0.0)

    def count_probe(self, model: str, ok: bool) -> None:
        self._metrics["tritonkit_monitor_probe_requests_total"].labels(
            model=model, outcome="ok" if ok else "failed").inc()

    def set_source_fallback(self, falling_back: bool) -> None:
        self._metrics["tritonkit_monitor_source_fallback"].set(1.0 if falling_back else 0.0)

    def count_notification(self, receiver: str, status: str, at: float) -> None:
        self._metrics["tritonkit_monitor_notifications_received_total"].labels(
            receiver=receiver, status=status).inc()
        self._metrics["tritonkit_monitor_notification_last_received_timestamp_seconds"].labels(
            receiver=receiver).set(at)

    def count_heal(self, model: str) -> None:
        self._metrics["tritonkit_monitor_heals_total"].labels(model=model).inc()

    def count_scrape_error(self, source: str) -> None:
        self._metrics["tritonkit_monitor_scrape_errors_total"].labels(source=source).inc()

    def observe_evaluation(self, seconds: float) -> None:
        self._metrics["tritonkit_monitor_evaluation_seconds"].observe(seconds)

    def _set(self, name: str, value: float | None, **labels: str) -> None:
        self._metrics[name].labels(**labels).set(math.nan if value is None else float(value))


def _all(shares: Mapping[str, float], features: Mapping[str, float]
         ) -> list[tuple[str, float | None]]:
    """Every feature with its share, None (NaN) where the window had no rows."""
    return [(feature, shares.get(feature)) for feature in features]
