"""The drift report a person reads (`GET /report`): one HTML page, plots as inline SVG, no script.

Per feature: the reference (training) and live window shares per bin side by side, the scores
(JS, PSI, chi-square p-value and Cramér's V, binned KS) and the verdict with its reasons; then
the predictions, the serving numbers, the firing alerts and the health checks::

    html = render_report(signals, profile, firing=engine.firing(), health=monitor.latest)
"""

from __future__ import annotations

import html
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tritonkit.monitor.alerts import Alert
from tritonkit.monitor.drift_stats import FeatureDrift
from tritonkit.monitor.health import HealthReport
from tritonkit.monitor.signals import WindowSignals

_COLOURS = {"reference": "#9aa5b1", "window": "#1f6fb2"}
_SEVERITY_COLOURS = {"insufficient": "#7b8794", "ok": "#2f855a", "warning": "#b7791f",
                     "critical": "#c53030"}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1f2933; max-width: 70em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
section.feature { border-top: 1px solid #d9e2ec; padding: 0.5em 0; }
.row { display: flex; gap: 2em; align-items: flex-start; flex-wrap: wrap; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #eef2f6; }
.badge { color: white; padding: 0.1em 0.6em; border-radius: 0.8em; font-size: 0.9em; }
.legend span { display: inline-block; width: 0.8em; height: 0.8em; margin: 0 0.3em 0 1em; }
"""


def render_report(signals: WindowSignals | None, profile: Mapping[str, Any], *,
                  firing: Sequence[Alert] = (), health: HealthReport | None = None,
                  inbox: Mapping[str, Any] | None = None) -> str:
    """The whole page; before the first window it says so and shows health and alerts."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>Drift report</title><style>{_STYLE}</style></head><body>"]
    if signals is None:
        parts.append("<h1>Drift report</h1><p>No window yet: the sidecar needs two scrapes "
                     "of the counters before it can judge one.</p>")
    else:
        parts.append(_header(signals))
        parts.append(_serving(signals))
    parts.append(_alerts(firing))
    if inbox is not None:
        parts.append(_inbox(inbox))
    if health is not None:
        parts.append(_health(health))
    if signals is not None:
        parts.append("<h2>Features</h2><p class='legend'>"
                     f"<span style='background:{_COLOURS['reference']}'></span>reference "
                     "(training)"
                     f"<span style='background:{_COLOURS['window']}'></span>live window</p>")
        for verdict in signals.features:
            parts.append(_feature(verdict, *_bins(verdict.feature, signals, profile)))
        parts.append("<h2>Predictions</h2>")
        parts.append(_feature(signals.prediction, *_prediction_bins(signals, profile),
                              extra=[("high-risk rate", _pct(signals.high_risk_rate)),
                                     ("in training", _pct(signals.reference_high_risk_rate))]))
    parts.append("</body></html>")
    return "".join(parts)


def _header(signals: WindowSignals) -> str:
    span = signals.end - signals.start
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(signals.end))
    drifted = signals.drifted_features()
    return (f"<h1>Drift report: {_e(signals.model)}</h1>"
            f"<p>Window of {span:.0f} s ending {when} UTC: {signals.rows:.0f} rows "
            f"(features are judged from {signals.min_rows}). Drifted features: "
            f"{_e(', '.join(drifted)) if drifted else 'none'}; drifted share "
            f"{_pct(signals.drifted_share)}.</p>")


def _serving(signals: WindowSignals) -> str:
    s = signals.serving
    rows = [("requests", f"{s.requests:.0f}"), ("failed", f"{s.failures:.0f}"),
            ("error rate", _pct(s.error_rate)),
            ("requests per minute", _num(s.requests_per_minute, "{:.1f}")),
            ("latency p95", _num(s.latency_p95_ms, "{:.2f} ms")),
            ("latency p99", _num(s.latency_p99_ms, "{:.2f} ms")),
            ("queue-time share", _pct(s.queue_time_share))]
    return "<h2>Serving</h2>" + _table(rows)


def _alerts(firing: Sequence[Alert]) -> str:
    if not firing:
        return "<h2>Alerts</h2><p>None firing.</p>"
    rows = "".join(
        f"<tr><td>{_e(a.labels.get('alertname', ''))}</td><td>{_e(a.labels.get('severity', ''))}"
        f"</td><td>{_e(a.labels.get('model', ''))}</td><td>{_e(a.labels.get('feature', ''))}"
        f"</td><td>{_e(a.annotations.get('summary', ''))}</td></tr>" for a in firing)
    return ("<h2>Alerts</h2><table><tr><th>alert</th><th>severity</th><th>model</th>"
            f"<th>feature</th><th>summary</th></tr>{rows}</table>")


#: notifications shown on the page; GET /alerts/inbox has all the inbox keeps
_INBOX_ROWS = 20


def _inbox(inbox: Mapping[str, Any]) -> str:
    """What Alertmanager delivered to the sidecar's inbox, newest first."""
    notifications = inbox.get("notifications", [])
    if not notifications:
        return ("<h2>Delivered notifications</h2><p>None yet: Alertmanager's default receivers "
                "deliver to this sidecar's <code>/alerts/inbox</code>.</p>")
    rows = "".join(
        f"<tr><td>{_e(n['received_at'])}</td><td>{_e(n['receiver'])}</td>"
        f"<td>{_e(n['status'])}</td><td>{_e(_names(n['alerts']))}</td>"
        f"<td>{len(n['alerts'])}</td></tr>" for n in notifications[:_INBOX_ROWS])
    return ("<h2>Delivered notifications</h2><table><tr><th>received (UTC)</th>"
            "<th>receiver</th><th>status</th><th>alerts</th><th>count</th></tr>"
            f"{rows}</table>")


def _names(alerts: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(sorted({a["labels"].get("alertname", "") for a in alerts}))


def _health(report: HealthReport) -> str:
    rows = [(c.name, ("ok: " if c.ok else "FAILING: ") + c.detail) for c in report.checks]
    return "<h2>Health</h2>" + _table(rows)


def _feature(verdict: FeatureDrift, labels: Sequence[str], reference: np.ndarray,
             window: np.ndarray, extra: Sequence[tuple[str, str]] = ()) -> str:
    colour = _SEVERITY_COLOURS[verdict.severity]
    scores = [("rows", f"{verdict.rows}"), ("JS distance", _num(verdict.js, "{:.3f}")),
              ("PSI", _num(verdict.psi, "{:.3f}"))]
    if verdict.p_value is not None:
        scores.append(("chi-square p-value", f"{verdict.p_value:.3g}"))
    if verdict.effect_size is not None:
        scores.append(("Cramér's V", f"{verdict.effect_size:.3f}"))
    if verdict.ks is not None:
        scores.append(("binned KS (lower bound)", f"{verdict.ks:.3f}"))
    if verdict.unseen_share is not None:
        scores.append(("unseen categories", _pct(verdict.unseen_share)))
    if verdict.out_of_range_share is not None:
        scores.append(("out of training range", _pct(verdict.out_of_range_share)))
    scores.extend(extra)
    reasons = "".join(f"<li>{_e(r)}</li>" for r in verdict.reasons)
    return (f"<section class='feature' id='feature-{_e(verdict.feature)}'>"
            f"<h3>{_e(verdict.feature)} <span class='badge' style='background:{colour}'>"
            f"{_e(verdict.severity)}</span></h3>"
            f"<div class='row'>{bar_chart(verdict.feature, labels, reference, window)}"
            f"{_table(scores)}</div>{f'<ul>{reasons}</ul>' if reasons else ''}</section>")


def bar_chart(title: str, labels: Sequence[str], reference: np.ndarray, window: np.ndarray,
              width: int = 720, height: int = 200) -> str:
    """Reference and window shares per bin as grouped bars, an inline SVG."""
    ref = _shares(reference)
    win = _shares(window)
    top = max(float(ref.max(initial=0.0)), float(win.max(initial=0.0)), 0.01)
    plot_h, base_y, left = height - 60, height - 50, 40
    step = (width - left - 10) / max(len(labels), 1)
    bar = step * 0.38
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' class='plot' width='{width}' "
             f"height='{height}' role='img' aria-label='{_e(title)}: reference vs window'>",
             f"<line x1='{left}' y1='{base_y}' x2='{width - 10}' y2='{base_y}' "
             "stroke='#52606d'/>",
             f"<text x='4' y='16' font-size='11'>{top:.0%}</text>"]
    for i, label in enumerate(labels):
        x = left + i * step
        for offset, share, kind in ((0.1, ref[i], "reference"), (0.1 + 0.4, win[i], "window")):
            h = plot_h * float(share) / top
            parts.append(f"<rect class='{kind}' x='{x + step * offset:.1f}' "
                         f"y='{base_y - h:.1f}' width='{bar:.1f}' height='{h:.1f}' "
                         f"fill='{_COLOURS[kind]}'><title>{_e(label)} {kind}: "
                         f"{float(share):.1%}</title></rect>")
        parts.append(f"<text x='{x + step / 2:.1f}' y='{base_y + 14}' font-size='9' "
                     f"text-anchor='middle'>{_e(label[:16])}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _bins(feature: str, signals: WindowSignals, profile: Mapping[str, Any]
          ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labels, reference shares and window counts of a feature's bins."""
    counts = signals.counts
    if feature in profile["numeric"]:
        entry = profile["numeric"][feature]
        return (_edge_labels(entry["edges"]), np.asarray(entry["fractions"], dtype=float),
                np.asarray(counts.numeric[feature], dtype=float))
    entry = profile["categorical"][feature]
    labels = [*entry["frequencies"], "unseen", "missing"]
    reference = np.asarray([*entry["frequencies"].values(),
                            entry.get("unseen_fraction", 0.0),
                            entry.get("missing_fraction", 0.0)], dtype=float)
    window = np.asarray([*(counts.categorical[feature][c] for c in entry["frequencies"]),
                         counts.unseen[feature], counts.missing[feature]], dtype=float)
    return labels, reference, window


def _prediction_bins(signals: WindowSignals, profile: Mapping[str, Any]
                     ) -> tuple[list[str], np.ndarray, np.ndarray]:
    prediction = profile["prediction"]
    return (_edge_labels(prediction["probability_edges"]),
            np.asarray(prediction["probability_fractions"], dtype=float),
            np.asarray(signals.counts.prediction, dtype=float))


def _edge_labels(edges: Sequence[float]) -> list[str]:
    """Bin labels from upper edges: ≤e0, e0-e1, …, >e_last (bins hold "> lower, ≤ upper")."""
    values = [float(e) for e in edges]
    return ([f"≤{values[0]:.4g}"]
            + [f"{a:.4g}-{b:.4g}" for a, b in itertools.pairwise(values)]
            + [f">{values[-1]:.4g}"])


def _shares(values: np.ndarray) -> np.ndarray:
    total = float(values.sum())
    return values / total if total > 0 else np.zeros_like(values, dtype=float)


def _table(rows: Sequence[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>"
                               for k, v in rows) + "</table>"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
