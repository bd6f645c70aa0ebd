"""The metrics the monitoring sidecar exports on its own `/metrics`: one definition of their
names, kinds and labels, read by the sidecar, the Prometheus rules and the Grafana dashboard's
test. And the Triton counters it reads, with the one quirk that bends them::

    from tritonkit.monitor import exported
    exported.SIDECAR_METRICS["tritonkit_monitor_error_rate"].labels   # ("model",)
"""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class Exported:
    kind: Literal["gauge", "counter", "histogram"]
    help: str
    labels: tuple[str, ...] = ()


SIDECAR_METRICS: dict[str, Exported] = {
    "tritonkit_monitor_window_rows": Exported(
        "gauge", "Rows the python steps received in the current window.", ("model",)),
    "tritonkit_monitor_feature_js_distance": Exported(
        "gauge", "Jensen-Shannon distance (base 2) of a feature, window vs reference.",
        ("model", "feature")),
    "tritonkit_monitor_feature_psi": Exported(
        "gauge", "Population stability index (counts +0.5) of a feature, window vs reference.",
        ("model", "feature")),
    "tritonkit_monitor_feature_drift_severity": Exported(
        "gauge", "Drift verdict of a feature: -1 too few rows, 0 ok, 1 warning, 2 critical.",
        ("model", "feature")),
    "tritonkit_monitor_unseen_category_share": Exported(
        "gauge", "Share of the window's rows whose feature held a category unseen in training.",
        ("model", "feature")),
    "tritonkit_monitor_out_of_range_share": Exported(
        "gauge", "Share of the window's rows whose feature lay outside the training range.",
        ("model", "feature")),
    "tritonkit_monitor_prediction_js_distance": Exported(
        "gauge", "Jensen-Shannon distance of the churn-probability histogram vs reference.",
        ("model",)),
    "tritonkit_monitor_prediction_drift_severity": Exported(
        "gauge", "Prediction drift verdict: -1 too few rows, 0 ok, 1 warning, 2 critical.",
        ("model",)),
    "tritonkit_monitor_high_risk_rate": Exported(
        "gauge", "Share of the window's predictions at the high risk level.", ("model",)),
    "tritonkit_monitor_drifted_feature_share": Exported(
        "gauge", "Share of the judged features whose verdict is warning or critical.",
        ("model",)),
    "tritonkit_monitor_error_rate": Exported(
        "gauge", "Failed share of the ensemble's requests in the window.", ("model",)),
    "tritonkit_monitor_latency_p95_ms": Exported(
        "gauge", "95th percentile of the ensemble's request latency (Triton's summary).",
        ("model",)),
    "tritonkit_monitor_latency_p99_ms": Exported(
        "gauge", "99th percentile of the ensemble's request latency (Triton's summary).",
        ("model",)),
    "tritonkit_monitor_requests_per_minute": Exported(
        "gauge", "Requests per minute the ensemble received in the window.", ("model",)),
    "tritonkit_monitor_queue_time_share": Exported(
        "gauge", "Share of the steps' request time spent queueing in the window.", ("model",)),
    "tritonkit_monitor_alert_firing": Exported(
        "gauge", "1 while an alert fires.", ("alertname", "severity", "feature")),
    "tritonkit_monitor_health_check_ok": Exported(
        "gauge", "1 when a health check passed at its last run.", ("check",)),
    "tritonkit_monitor_heals_total": Exported(
        "counter", "Models the sidecar reloaded because a real inference failed.", ("model",)),
    "tritonkit_monitor_evaluation_seconds": Exported(
        "histogram", "Time to judge one window: scrape excluded, drift and alerts included."),
    "tritonkit_monitor_scrape_errors_total": Exported(
        "counter", "Scrapes of Triton or Prometheus that failed.", ("source",)),
}

#: Triton 2.51 counts one failed request of an ensemble of python steps as this many failures
#: of the ensemble (`nv_inference_request_failure`, reason OTHER), and successes once
#: (tests/integration/test_batch_isolation.py pins it; docs/platform.md). Error rates divide
#: the ensemble's failure counter by it, in the sidecar and in the Prometheus rules alike.
ENSEMBLE_FAILURE_MULTIPLICITY = 2
