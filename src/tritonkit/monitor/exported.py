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
        "gauge", "Share of the clients' requests to an entry point the server failed in the "
        "window (the caller's refusals and the sidecar's probes left out).", ("model",)),
    "tritonkit_monitor_client_refusal_rate": Exported(
        "gauge", "Share of the clients' requests to an entry point refused as the caller's "
        "mistake (HTTP 400) in the window.", ("model",)),
    "tritonkit_monitor_latency_p95_ms": Exported(
        "gauge", "95th percentile of the ensemble's request latency (Triton's summary).",
        ("model",)),
    "tritonkit_monitor_latency_p99_ms": Exported(
        "gauge", "99th percentile of the ensemble's request latency (Triton's summary).",
        ("model",)),
    "tritonkit_monitor_requests_per_minute": Exported(
        "gauge", "Requests per minute clients sent an entry point in the window (the "
        "sidecar's probes left out).", ("model",)),
    "tritonkit_monitor_probe_requests_total": Exported(
        "counter", "Health probes the sidecar sent an entry point, by outcome (ok, failed); "
        "subtracted from Triton's request counters by the sidecar and the Prometheus rules.",
        ("model", "outcome")),
    "tritonkit_monitor_source_fallback": Exported(
        "gauge", "1 while the sidecar reads Triton's /metrics directly because the Prometheus "
        "it is told to read cannot be reached.", ()),
    "tritonkit_monitor_notifications_received_total": Exported(
        "counter", "Notifications Alertmanager delivered to the sidecar's inbox "
        "(POST /alerts/inbox/<receiver>), by receiver and status (firing, resolved).",
        ("receiver", "status")),
    "tritonkit_monitor_notification_last_received_timestamp_seconds": Exported(
        "gauge", "Unix time of the newest notification in the sidecar's inbox, by receiver "
        "(the dead-man receiver's Watchdog arrives every 5 minutes).", ("receiver",)),
    "tritonkit_monitor_queue_time_share": Exported(
        "gauge", "Share of the steps' request time spent queueing in the window.", ("model",)),
    "tritonkit_monitor_alert_firing": Exported(
        "gauge", "1 while an alert fires.", ("alertname", "severity", "model", "feature")),
    "tritonkit_monitor_health_check_ok": Exported(
        "gauge", "1 when a health check passed at its last run.", ("check",)),
    "tritonkit_monitor_heals_total": Exported(
        "counter", "Models the sidecar reloaded because a real inference failed.", ("model",)),
    "tritonkit_monitor_evaluation_seconds": Exported(
        "histogram", "Time to judge one window: scrape excluded, drift and alerts included."),
    "tritonkit_monitor_scrape_errors_total": Exported(
        "counter", "Scrapes of Triton or Prometheus that failed.", ("source",)),
}

