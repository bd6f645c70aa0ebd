"""Drift statistics on binned counters: a verdict per feature from a reference profile and a window.

A window is the difference of two scrapes of the drift counters (float counts); the reference is
the training profile of `tritonkit.tabular.profile` (fractions per bin, category frequencies)::

    verdict = judge_numeric("tenure", fractions, 5000, window_counts, out_of_range=0.0,
                            missing=0.0, thresholds=DriftThresholds())
    verdict.severity, verdict.reasons        # "critical", ("PSI 0.412 >= 0.25", ...)

Statistics: Jensen-Shannon distance (base 2) on the raw fractions; PSI with `psi_smoothing`
(0.5) added to every count of both sides first; for categorical features a two-way contingency
chi-square (reference counts vs window counts) that counts only together with an effect size;
the binned KS statistic, reported and never judged (on bins it is only a lower bound).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency

from tritonkit.errors import TritonKitError

Kind = Literal["numeric", "categorical", "prediction"]
Severity = Literal["insufficient", "ok", "warning", "critical"]
Finding = tuple[Literal["warning", "critical"], str]

_LEVEL: dict[str, int] = {"ok": 0, "warning": 1, "critical": 2}


class DriftInputError(TritonKitError):
    """Counts handed to a judge are malformed (negative, not finite, lengths that disagree)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DriftThresholds(_Frozen):
    """When a window is judged, and the figures that make it a warning or critical.

    Defaults are those of the drift notes: a feature is judged from 500 rows (below that, JS and
    PSI fire on noise alone); shares and rates are fractions (0.02 = 2 points).
    """

    min_rows: int = Field(500, ge=1, description="a window with fewer rows is `insufficient`")
    js_warning: float = Field(0.10, gt=0, le=1, description="Jensen-Shannon distance, base 2")
    js_critical: float = Field(0.20, gt=0, le=1)
    psi_warning: float = Field(0.10, gt=0)
    psi_critical: float = Field(0.25, gt=0)
    psi_smoothing: float = Field(0.5, gt=0, description="count added to every bin before PSI")
    p_value: float = Field(0.01, gt=0, lt=1, description="chi-square significance (categorical)")
    effect_size: float = Field(
        0.1, gt=0, le=1,
        description="Cramér's V the chi-square needs as well before it counts as drift",
    )
    unseen_warning: float = Field(0.005, ge=0, le=1, description="share of unseen categories")
    unseen_critical: float = Field(0.02, ge=0, le=1)
    missing_change: float = Field(0.02, gt=0, le=1, description="missing-rate change, a warning")
    out_of_range: float = Field(0.01, ge=0, le=1, description="share outside the training range")
    high_risk_warning: float = Field(0.05, gt=0, le=1, description="high-risk rate shift")
    high_risk_critical: float = Field(0.10, gt=0, le=1)
    drifted_share_warning: float = Field(0.3, gt=0, le=1, description="share of drifted features")
    drifted_share_critical: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _warning_below_critical(self) -> DriftThresholds:
        for name in ("js", "psi", "unseen", "high_risk", "drifted_share"):
            warning, critical = getattr(self, f"{name}_warning"), getattr(self, f"{name}_critical")
            if not warning < critical:
                raise ValueError(
                    f"{name}_warning ({warning}) must be below {name}_critical ({critical})"
                )
        return self


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict on one feature (or the prediction) for one window.

    Statistics that do not apply to the kind are None (`p_value` and `effect_size` exist for
    categorical features only, `ks` for ordered bins only); `reasons` say what set the severity.
    """

    feature: str
    kind: Kind
    rows: int
    js: float | None
    psi: float | None
    p_value: float | None
    effect_size: float | None
    ks: float | None
    unseen_share: float | None
    out_of_range_share: float | None
    severity: Severity
    reasons: tuple[str, ...]


def judge_numeric(
    feature: str,
    reference_fractions: Sequence[float],
    reference_rows: int,
    window_counts: Sequence[float],
    out_of_range: float,
    missing: float,
    thresholds: DriftThresholds,
    *,
    reference_missing: float = 0.0,
) -> FeatureDrift:
    """Judge a numeric feature from its histogram window.

    Args:
        feature: the feature's name, copied into the verdict.
        reference_fractions: the training share of each bucket (the profile's `fractions`).
        reference_rows: the number of training rows the fractions come from.
        window_counts: rows per bucket in the window, the same buckets; rows whose value lies
            outside the training range are counted here too (in the open end buckets).
        out_of_range: how many of those rows lie outside the training minimum and maximum.
        missing: rows of the window without a value (not in `window_counts`).
        thresholds: when the window is judged and what makes it a warning or critical.
        reference_missing: the training missing rate (a fraction).
    """
    reference = _counts(feature, "reference_fractions", reference_fractions) * reference_rows
    window = _counts(feature, "window_counts", window_counts)
    if reference.shape != window.shape:
        raise DriftInputError(
            f"{feature}: {window.size} window buckets but {reference.size} reference buckets: "
            "bin the window with the profile's edges"
        )
    _check_reference_rows(feature, reference_rows)
    out_of_range = _count(feature, "out_of_range", out_of_range)
    missing = _count(feature, "missing", missing)
    rows = float(window.sum()) + missing
    js, psi = _distances(reference, window, thresholds.psi_smoothing)
    ks = _binned_ks(reference, window)
    out_of_range_share = out_of_range / rows if rows else None
    findings = [*_distance_findings(js, psi, thresholds),
                *_missing_findings(missing, rows, reference_missing, thresholds)]
    if out_of_range_share is not None and out_of_range_share > thresholds.out_of_range:
        findings.append(("warning", f"out-of-range share {out_of_range_share:.1%} > "
                                    f"{thresholds.out_of_range:.1%}"))
    return _verdict(feature, "numeric", rows, thresholds, findings, js=js, psi=psi, ks=ks,
                    out_of_range_share=out_of_range_share)


def judge_categorical(
    feature: str,
    reference_frequencies: Mapping[str, float],
    reference_rows: int,
    window_counts: Mapping[str, float],
    unseen: float,
    missing: float,
    thresholds: DriftThresholds,
    *,
    reference_missing: float = 0.0,
) -> FeatureDrift:
    """Judge a categorical feature from its per-category counters.

    The chi-square runs over the union of categories plus an `unseen` and a `missing` column
    (columns empty on both sides are dropped). Its p-value counts as drift (a warning) only
    together with Cramér's V >= `effect_size`, where V is that of the table with the reference
    scaled to the window's rows: V then measures how far the two distributions lie apart
    (V = sqrt(sum((p - q)² / (p + q)) / 2)) and does not shrink as the training set grows, while
    the p-value still uses the real counts. At large windows the p-value alone is tiny for
    shifts nobody acts on (a 5-point shift at 3,000 rows), hence the gate.

    Args:
        feature: the feature's name, copied into the verdict.
        reference_frequencies: the training share of each training category.
        reference_rows: the number of training rows the shares come from.
        window_counts: rows per category in the window; a category the reference lacks
            counts as unseen.
        unseen: rows of the window with a category the training data did not have.
        missing: rows of the window without a value.
        thresholds: when the window is judged and what makes it a warning or critical.
        reference_missing: the training missing rate (a fraction).
    """
    _check_reference_rows(feature, reference_rows)
    known = list(reference_frequencies)
    new = [c for c in window_counts if c not in reference_frequencies]
    categories = known + new
    reference = _counts(feature, "reference_frequencies",
                        [reference_frequencies.get(c, 0.0) for c in categories]
                        + [0.0, reference_missing]) * reference_rows
    window = _counts(feature, "window_counts", [window_counts.get(c, 0.0) for c in categories])
    unseen, missing = _count(feature, "unseen", unseen), _count(feature, "missing", missing)
    window = np.append(window, (unseen, missing))
    keep = (reference > 0) | (window > 0)
    reference, window = reference[keep], window[keep]
    rows = float(window.sum())
    js, psi = _distances(reference, window, thresholds.psi_smoothing)
    p_value, effect_size = _contingency(reference, window)
    unseen_share = (unseen + sum(window_counts[c] for c in new)) / rows if rows else None

    findings = [*_distance_findings(js, psi, thresholds),
                *_missing_findings(missing, rows, reference_missing, thresholds)]
    if (p_value is not None and effect_size is not None and p_value < thresholds.p_value
            and effect_size >= thresholds.effect_size):
        findings.append(("warning", f"chi-square p={p_value:.2g} < {thresholds.p_value} with "
                                    f"Cramér's V {effect_size:.3f} >= {thresholds.effect_size}"))
    if unseen_share is not None:
        for level, limit in _tiers(thresholds.unseen_warning, thresholds.unseen_critical):
            if unseen_share > limit:
                findings.append((level, f"unseen-category share {unseen_share:.2%} > {limit:.1%}"))
                break
    return _verdict(feature, "categorical", rows, thresholds, findings, js=js, psi=psi,
                    p_value=p_value, effect_size=effect_size, unseen_share=unseen_share)


def judge_prediction(
    reference_fractions: Sequence[float],
    reference_rows: int,
    window_counts: Sequence[float],
    reference_high_risk: float,
    window_high_risk: float,
    thresholds: DriftThresholds,
    *,
    feature: str = "prediction",
) -> FeatureDrift:
    """Judge the model's output: its probability histogram and its high-risk rate.

    Args:
        reference_fractions: the training share of each probability bucket.
        reference_rows: the number of training rows the fractions come from.
        window_counts: predictions per probability bucket in the window.
        reference_high_risk: the training high-risk rate (the profile's `high_risk_fraction`).
        window_high_risk: the window's high-risk rate, a fraction: the high-risk counter's
            delta divided by the window's predictions.
        thresholds: when the window is judged and what makes it a warning or critical.
        feature: the name the verdict carries.
    """
    _check_reference_rows(feature, reference_rows)
    reference = _counts(feature, "reference_fractions", reference_fractions) * reference_rows
    window = _counts(feature, "window_counts", window_counts)
    if reference.shape != window.shape:
        raise DriftInputError(f"{feature}: {window.size} window buckets but {reference.size} "
                              "reference buckets: bin with the profile's probability edges")
    for name, rate in (("reference_high_risk", reference_high_risk),
                       ("window_high_risk", window_high_risk)):
        if not 0.0 <= rate <= 1.0:
            raise DriftInputError(f"{feature}: {name} must be a rate between 0 and 1, got "
                                  f"{rate}: divide the counter delta by the window's rows")
    rows = float(window.sum())
    js, psi = _distances(reference, window, thresholds.psi_smoothing)
    findings = list(_distance_findings(js, psi, thresholds))
    shift = window_high_risk - reference_high_risk
    for level, limit in _tiers(thresholds.high_risk_warning, thresholds.high_risk_critical):
        if abs(shift) >= limit:
            findings.append((level, f"high-risk rate {window_high_risk:.1%} vs "
                                    f"{reference_high_risk:.1%} in training ({shift:+.1%})"))
            break
    return _verdict(feature, "prediction", rows, thresholds, findings, js=js, psi=psi,
                    ks=_binned_ks(reference, window))


def drifted_share(verdicts: Sequence[FeatureDrift]) -> tuple[float, int]:
    """The share of judged features at warning or critical, and how many were judged.

    The prediction and `insufficient` features are left out; no judged feature gives (0.0, 0).
    """
    judged = [v for v in verdicts if v.kind != "prediction" and v.severity != "insufficient"]
    if not judged:
        return 0.0, 0
    return sum(v.severity in ("warning", "critical") for v in judged) / len(judged), len(judged)


def dataset_severity(verdicts: Sequence[FeatureDrift], thresholds: DriftThresholds) -> Severity:
    """The verdict on the whole data set from the share of drifted features."""
    share, judged = drifted_share(verdicts)
    if judged == 0:
        return "insufficient"
    if share >= thresholds.drifted_share_critical:
        return "critical"
    return "warning" if share >= thresholds.drifted_share_warning else "ok"


def signal_level(verdict: FeatureDrift) -> float | None:
    """The verdict as an alert signal value: 0 ok, 1 warning, 2 critical, None if insufficient.

    This is what the `feature_drift` and `prediction_drift` alert signals carry; None means
    "no signal", which neither fires nor resolves an alert.
    """
    level = _LEVEL.get(verdict.severity)
    return None if level is None else float(level)


def _counts(feature: str, name: str, values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise DriftInputError(f"{feature}: {name} must be a non-empty list of numbers")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise DriftInputError(
            f"{feature}: {name} must be finite and >= 0, got {array.tolist()} "
            "(a negative window count means a counter reset was not handled)"
        )
    return array


def _count(feature: str, name: str, value: float) -> float:
    if not (np.isfinite(value) and value >= 0):
        raise DriftInputError(f"{feature}: {name} must be a finite count >= 0, got {value}")
    return float(value)


def _check_reference_rows(feature: str, reference_rows: int) -> None:
    if reference_rows < 1:
        raise DriftInputError(f"{feature}: reference_rows must be >= 1, got {reference_rows}")


def _distances(reference: np.ndarray, window: np.ndarray, smoothing: float
               ) -> tuple[float | None, float | None]:
    """(JS distance base 2, PSI with `smoothing` added to every count); None for an empty window."""
    if window.sum() == 0 or reference.sum() == 0:
        return None, None
    js = float(jensenshannon(reference, window, base=2))  # normalises both sides itself
    p = reference + smoothing
    q = window + smoothing
    p /= p.sum()
    q /= q.sum()
    return js, float(np.sum((q - p) * np.log(q / p)))


def _binned_ks(reference: np.ndarray, window: np.ndarray) -> float | None:
    if window.sum() == 0 or reference.sum() == 0:
        return None
    gap = np.cumsum(reference) / reference.sum() - np.cumsum(window) / window.sum()
    return float(np.max(np.abs(gap)))


def _contingency(reference: np.ndarray, window: np.ndarray) -> tuple[float | None, float | None]:
    """(chi-square p-value on the real counts, Cramér's V of the size-balanced table)."""
    if reference.size < 2 or window.sum() == 0:
        return None, None
    # No Yates correction: it would apply to two-category features only, making them harder to
    # flag than the rest for the same shift.
    result = chi2_contingency(np.vstack((reference, window)), correction=False)
    p = reference / reference.sum()
    q = window / window.sum()
    cramers_v = float(np.sqrt(0.5 * np.sum((p - q) ** 2 / (p + q))))
    return float(result.pvalue), cramers_v


def _tiers(warning: float, critical: float
           ) -> tuple[tuple[Literal["critical"], float], tuple[Literal["warning"], float]]:
    """The limits, the worst first, for a loop that stops at the first one exceeded."""
    return ("critical", critical), ("warning", warning)


def _distance_findings(js: float | None, psi: float | None, thresholds: DriftThresholds
                       ) -> list[Finding]:
    findings: list[Finding] = []
    for name, value, warning, critical in (
        ("JS", js, thresholds.js_warning, thresholds.js_critical),
        ("PSI", psi, thresholds.psi_warning, thresholds.psi_critical),
    ):
        if value is None:
            continue
        if value >= critical:
            findings.append(("critical", f"{name} {value:.3f} >= {critical:.2f}"))
        elif value >= warning:
            findings.append(("warning", f"{name} {value:.3f} >= {warning:.2f}"))
    return findings


def _missing_findings(missing: float, rows: float, reference_missing: float,
                      thresholds: DriftThresholds) -> list[Finding]:
    if not rows:
        return []
    change = missing / rows - reference_missing
    if abs(change) >= thresholds.missing_change:
        return [("warning", f"missing rate {missing / rows:.1%} vs {reference_missing:.1%} "
                            f"in training ({change * 100:+.1f} points)")]
    return []


def _verdict(
    feature: str, kind: Kind, rows: float, thresholds: DriftThresholds,
    findings: Sequence[Finding], *, js: float | None = None, psi: float | None = None,
    p_value: float | None = None, effect_size: float | None = None, ks: float | None = None,
    unseen_share: float | None = None, out_of_range_share: float | None = None,
) -> FeatureDrift:
    severity: Severity
    if rows < thresholds.min_rows:
        severity = "insufficient"
        reasons: tuple[str, ...] = (
            f"{rows:.0f} rows in the window, fewer than min_rows {thresholds.min_rows}",)
    else:
        severity = max(("ok", *(level for level, _ in findings)), key=_LEVEL.__getitem__)
        reasons = tuple(reason for _, reason in findings)
    return FeatureDrift(
        feature=feature, kind=kind, rows=round(rows), js=js, psi=psi, p_value=p_value,
        effect_size=effect_size, ks=ks, unseen_share=unseen_share,
        out_of_range_share=out_of_range_share, severity=severity, reasons=reasons,
    )
