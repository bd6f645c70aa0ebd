"""Drift verdicts on simulated counter windows: false-alarm rate, the effect-size gate, real shifts,
new categories, small windows, and the statistics recomputed by hand on tiny examples."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.stats import chi2_contingency
from scipy.stats.contingency import association

from tritonkit.monitor.drift_stats import (
    DriftInputError,
    DriftThresholds,
    FeatureDrift,
    dataset_severity,
    drifted_share,
    judge_categorical,
    judge_numeric,
    judge_prediction,
    signal_level,
)

REFERENCE_ROWS = 5000
THRESHOLDS = DriftThresholds()
#: `contract` in the Telco training data, roughly.
CONTRACT = {"Month-to-month": 0.55, "One year": 0.21, "Two year": 0.24}
HIGH = 0.6
PROBABILITY_EDGES = np.round(np.arange(0.1, 1.0, 0.1), 1)


def _bin(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bucket with Prometheus' rule: bucket i holds edge[i-1] < v <= edge[i]."""
    return np.bincount(np.searchsorted(edges, values, side="left"),
                       minlength=len(edges) + 1).astype(float)


class NumericFeature:
    """A numeric feature's reference profile (decile edges) and windows drawn against it."""

    def __init__(self, reference: np.ndarray) -> None:
        self.edges = np.unique(np.quantile(reference, np.linspace(0.1, 0.9, 9)))
        self.fractions = (_bin(reference, self.edges) / len(reference)).tolist()
        self.minimum, self.maximum = reference.min(), reference.max()

    def judge(self, window: np.ndarray, thresholds: DriftThresholds = THRESHOLDS) -> FeatureDrift:
        out_of_range = float(np.sum((window < self.minimum) | (window > self.maximum)))
        return judge_numeric("tenure", self.fractions, REFERENCE_ROWS,
                             _bin(window, self.edges).tolist(), out_of_range, 0.0, thresholds)


class CategoricalFeature:
    """A categorical feature's reference frequencies, counted from sampled training rows."""

    def __init__(self, rng: np.random.Generator, probabilities: dict[str, float]) -> None:
        counts = rng.multinomial(REFERENCE_ROWS, list(probabilities.values()))
        self.frequencies = dict(zip(probabilities, (counts / REFERENCE_ROWS).tolist(),
                                    strict=True))

    def judge(self, rng: np.random.Generator, probabilities: dict[str, float], rows: int,
              unseen: float = 0.0, thresholds: DriftThresholds = THRESHOLDS) -> FeatureDrift:
        counts = rng.multinomial(rows, list(probabilities.values())).astype(float)
        window = dict(zip(probabilities, counts.tolist(), strict=True))
        return judge_categorical("contract", self.frequencies, REFERENCE_ROWS, window, unseen,
                                 0.0, thresholds)


class Prediction:
    """The reference probability histogram and high-risk rate of a model's training scores."""

    def __init__(self, probabilities: np.ndarray) -> None:
        self.fractions = (_bin(probabilities, PROBABILITY_EDGES) / len(probabilities)).tolist()
        self.high_risk = float(np.mean(probabilities >= HIGH))

    def judge(self, probabilities: np.ndarray) -> FeatureDrift:
        return judge_prediction(self.fractions, REFERENCE_ROWS,
                                _bin(probabilities, PROBABILITY_EDGES).tolist(), self.high_risk,
                                float(np.mean(probabilities >= HIGH)), THRESHOLDS)


def _tenure(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.gamma(1.5, 20.0, rows)


def _scores(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.beta(1.2, 3.0, rows)


def _no_drift_windows(kind: str, rng: np.random.Generator) -> Callable[[], FeatureDrift]:
    """A function drawing one no-drift window of 1,000 rows of `kind` and judging it."""
    if kind == "numeric":
        numeric = NumericFeature(_tenure(rng, REFERENCE_ROWS))
        return lambda: numeric.judge(_tenure(rng, 1000))
    if kind == "categorical":
        categorical = CategoricalFeature(rng, CONTRACT)
        return lambda: categorical.judge(rng, CONTRACT, 1000)
    prediction = Prediction(_scores(rng, REFERENCE_ROWS))
    return lambda: prediction.judge(_scores(rng, 1000))


@pytest.mark.parametrize("kind", ["numeric", "categorical", "prediction"])
def test_judges_say_ok_for_99_percent_of_windows_when_nothing_drifted_at_1000_rows(
    kind: str,
) -> None:
    judge = _no_drift_windows(kind, np.random.default_rng(2024))
    verdicts = [judge() for _ in range(200)]
    assert all(v.rows == 1000 for v in verdicts)
    false_alarms = sum(v.severity != "ok" for v in verdicts)
    assert false_alarms / len(verdicts) <= 0.01, [v.reasons for v in verdicts if v.reasons]


def test_judge_categorical_stays_ok_when_a_category_shifts_5_points_at_3000_rows() -> None:
    rng = np.random.default_rng(7)
    feature = CategoricalFeature(rng, CONTRACT)
    shifted = {"Month-to-month": 0.60, "One year": 0.21, "Two year": 0.19}
    verdicts = [feature.judge(rng, shifted, 3000) for _ in range(50)]

    significant = [v for v in verdicts if v.p_value is not None and v.p_value < 0.01]
    assert len(significant) >= 48  # the p-value alone would alert on nearly every window
    assert all(v.severity == "ok" for v in verdicts), [v.reasons for v in verdicts]
    assert max(v.effect_size or 0.0 for v in verdicts) < THRESHOLDS.effect_size
    assert max(v.psi or 0.0 for v in verdicts) < THRESHOLDS.psi_warning


def test_judge_categorical_warns_on_the_p_value_alone_when_the_effect_size_gate_is_off() -> None:
    rng = np.random.default_rng(7)
    feature = CategoricalFeature(rng, CONTRACT)
    shifted = {"Month-to-month": 0.60, "One year": 0.21, "Two year": 0.19}
    no_gate = DriftThresholds(effect_size=1e-6)
    verdict = feature.judge(rng, shifted, 3000, thresholds=no_gate)
    assert verdict.severity == "warning"
    assert any("chi-square" in r for r in verdict.reasons)


def test_judge_categorical_warns_when_the_distribution_moves_well_beyond_noise() -> None:
    rng = np.random.default_rng(11)
    feature = CategoricalFeature(rng, CONTRACT)
    moved = {"Month-to-month": 0.75, "One year": 0.15, "Two year": 0.10}
    verdict = feature.judge(rng, moved, 3000)
    assert verdict.severity in ("warning", "critical")
    assert verdict.effect_size is not None and verdict.effect_size >= THRESHOLDS.effect_size


def test_judge_numeric_says_critical_when_values_move_up_two_deciles() -> None:
    rng = np.random.default_rng(3)
    feature = NumericFeature(rng.uniform(0.0, 1.0, REFERENCE_ROWS))
    verdict = feature.judge(rng.uniform(0.2, 1.2, 1000))  # every value two deciles higher
    assert verdict.severity == "critical"
    assert verdict.psi is not None and verdict.psi >= THRESHOLDS.psi_critical
    assert verdict.js is not None and verdict.js >= THRESHOLDS.js_critical
    assert verdict.ks == pytest.approx(0.2, abs=0.04)
    assert verdict.out_of_range_share == pytest.approx(0.2, abs=0.04)


def test_judge_numeric_says_ok_when_values_move_by_noise_only() -> None:
    rng = np.random.default_rng(3)
    feature = NumericFeature(rng.uniform(0.0, 1.0, REFERENCE_ROWS))
    assert feature.judge(rng.uniform(0.0, 1.0, 1000)).severity == "ok"


@pytest.mark.parametrize(("unseen_share", "severity"), [(0.03, "critical"), (0.01, "warning")])
def test_judge_categorical_flags_the_unseen_share_when_a_new_category_appears(
    unseen_share: float, severity: str,
) -> None:
    rng = np.random.default_rng(5)
    feature = CategoricalFeature(rng, CONTRACT)
    rows = 1000
    unseen = rows * unseen_share
    verdict = feature.judge(rng, CONTRACT, round(rows - unseen), unseen=unseen)
    assert verdict.unseen_share == pytest.approx(unseen_share)
    assert verdict.severity == severity
    assert any(r.startswith("unseen-category share") for r in verdict.reasons)


def test_judge_categorical_counts_a_category_the_reference_lacks_as_unseen() -> None:
    verdict = judge_categorical("contract", {"a": 0.5, "b": 0.5}, REFERENCE_ROWS,
                                {"a": 485.0, "b": 485.0, "c": 30.0}, 0.0, 0.0, THRESHOLDS)
    assert verdict.unseen_share == pytest.approx(0.03)
    assert verdict.severity == "critical"


def test_judges_say_insufficient_when_the_window_holds_100_rows() -> None:
    rng = np.random.default_rng(1)
    numeric = NumericFeature(rng.uniform(0.0, 1.0, REFERENCE_ROWS))
    categorical = CategoricalFeature(rng, CONTRACT)
    prediction = Prediction(_scores(rng, REFERENCE_ROWS))
    verdicts = [
        numeric.judge(rng.uniform(0.5, 1.5, 100)),  # drifted, but too few rows to say so
        categorical.judge(rng, CONTRACT, 97, unseen=3.0),
        prediction.judge(rng.beta(3.0, 1.2, 100)),
    ]
    for verdict in verdicts:
        assert verdict.severity == "insufficient", verdict
        assert verdict.rows == 100
        assert verdict.js is not None  # still reported
        assert "fewer than min_rows 500" in verdict.reasons[0]


def test_judge_numeric_adds_half_a_count_to_every_bucket_before_psi_when_a_bucket_is_empty(
) -> None:
    judged = DriftThresholds(min_rows=1)
    verdict = judge_numeric("x", [0.5, 0.5, 0.0], 100, [45.0, 45.0, 10.0], 0.0, 0.0, judged)
    # Counts 50, 50, 0 and 45, 45, 10, each plus 0.5, over 101.5 on both sides.
    psi = (2 * (45.5 - 50.5) / 101.5 * math.log(45.5 / 50.5)
           + (10.5 - 0.5) / 101.5 * math.log(10.5 / 0.5))
    assert verdict.psi == pytest.approx(psi, rel=1e-12)
    # JS on the raw fractions, no smoothing: p = (.5, .5, 0), q = (.45, .45, .1), m = their mean.
    kl_p = 2 * 0.5 * math.log2(0.5 / 0.475)
    kl_q = 2 * 0.45 * math.log2(0.45 / 0.475) + 0.1 * math.log2(0.1 / 0.05)
    assert verdict.js == pytest.approx(math.sqrt((kl_p + kl_q) / 2), rel=1e-12)
    assert verdict.ks == pytest.approx(0.1)  # cumulative (.5, 1, 1) vs (.45, .9, 1)


def test_judge_categorical_psi_depends_on_the_smoothing_when_a_category_is_new_at_1_percent(
) -> None:
    reference, window = {"a": 0.5, "b": 0.5}, {"a": 495.0, "b": 495.0}

    def psi(smoothing: float) -> float:
        p = np.array([5000.0, 5000.0, 0.0]) + smoothing
        q = np.array([495.0, 495.0, 10.0]) + smoothing
        p, q = p / p.sum(), q / q.sum()
        return float(np.sum((q - p) * np.log(q / p)))

    for smoothing in (0.5, 0.001):
        thresholds = DriftThresholds(psi_smoothing=smoothing)
        verdict = judge_categorical("x", reference, 10_000, window, 10.0, 0.0, thresholds)
        assert verdict.psi == pytest.approx(psi(smoothing), rel=1e-12)
    # The constant alone decides whether 1 % of new values is a warning (PSI >= 0.10).
    assert psi(0.5) < THRESHOLDS.psi_warning < psi(0.001)


def test_judge_categorical_tests_the_real_counts_and_sizes_the_effect_on_a_balanced_table(
) -> None:
    reference = {"a": 0.6, "b": 0.3, "c": 0.1, "never": 0.0}
    window = {"a": 500.0, "b": 300.0, "c": 150.0, "never": 0.0}
    verdict = judge_categorical("x", reference, 4000, window, 30.0, 20.0, THRESHOLDS)
    # Columns a, b, c, unseen, missing; `never` is empty on both sides and dropped.
    real = np.array([[2400.0, 1200.0, 400.0, 0.0, 0.0], [500.0, 300.0, 150.0, 30.0, 20.0]])
    assert verdict.p_value == pytest.approx(chi2_contingency(real, correction=False).pvalue)
    balanced = np.vstack((real[0] / real[0].sum() * 1000, real[1])).astype(int)  # exact here
    assert verdict.effect_size == pytest.approx(association(balanced, method="cramer"))
    assert verdict.rows == 1000


def test_judge_numeric_warns_when_the_missing_rate_or_out_of_range_share_rises() -> None:
    counts = [100.0] * 10
    missing = judge_numeric("x", [0.1] * 10, REFERENCE_ROWS, counts, 0.0, 25.0, THRESHOLDS)
    assert missing.severity == "warning"
    assert missing.reasons == ("missing rate 2.4% vs 0.0% in training (+2.4 points)",)
    outside = judge_numeric("x", [0.1] * 10, REFERENCE_ROWS, counts, 11.0, 0.0, THRESHOLDS)
    assert outside.severity == "warning"
    assert outside.out_of_range_share == pytest.approx(0.011)
    quiet = judge_numeric("x", [0.1] * 10, REFERENCE_ROWS, counts, 10.0, 15.0, THRESHOLDS,
                          reference_missing=0.01)
    assert quiet.severity == "ok"


@pytest.mark.parametrize(("window_high_risk", "severity"),
                         [(0.29, "ok"), (0.32, "warning"), (0.20, "warning"), (0.37, "critical")])
def test_judge_prediction_grades_the_high_risk_shift_when_the_histogram_is_unchanged(
    window_high_risk: float, severity: str,
) -> None:
    verdict = judge_prediction([0.1] * 10, REFERENCE_ROWS, [100.0] * 10, 0.265,
                               window_high_risk, THRESHOLDS)
    assert verdict.severity == severity
    assert verdict.kind == "prediction"


def test_drifted_share_leaves_out_the_prediction_and_insufficient_features() -> None:
    def verdict(kind: str, severity: str) -> FeatureDrift:
        return FeatureDrift("f", kind, 1000, None, None, None, None, None, None, None,  # type: ignore[arg-type]
                            severity, ())  # type: ignore[arg-type]

    verdicts = [verdict("numeric", "critical"), verdict("categorical", "warning"),
                verdict("numeric", "ok"), verdict("categorical", "ok"),
                verdict("numeric", "insufficient"), verdict("prediction", "critical")]
    assert drifted_share(verdicts) == (0.5, 4)
    assert dataset_severity(verdicts, THRESHOLDS) == "critical"
    assert dataset_severity(verdicts[1:4], THRESHOLDS) == "warning"  # 1 of 3
    assert dataset_severity(verdicts[2:4], THRESHOLDS) == "ok"
    assert drifted_share(verdicts[4:]) == (0.0, 0)
    assert dataset_severity(verdicts[4:], THRESHOLDS) == "insufficient"
    assert [signal_level(v) for v in verdicts] == [2.0, 1.0, 0.0, 0.0, None, 2.0]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: judge_numeric("tenure", [0.5, 0.5], 100, [1.0, -3.0], 0, 0, THRESHOLDS),
     r"tenure: window_counts must be finite and >= 0.*counter reset"),
    (lambda: judge_numeric("tenure", [0.5, 0.5], 100, [1.0, 2.0, 3.0], 0, 0, THRESHOLDS),
     r"tenure: 3 window buckets but 2 reference buckets"),
    (lambda: judge_categorical("contract", {"a": 1.0}, 0, {"a": 1.0}, 0, 0, THRESHOLDS),
     r"contract: reference_rows must be >= 1"),
    (lambda: judge_prediction([1.0], 100, [5.0], 0.2, 312.0, THRESHOLDS),
     r"window_high_risk must be a rate between 0 and 1, got 312"),
])
def test_judges_raise_naming_the_feature_when_counts_are_malformed(
    call: Callable[[], FeatureDrift], message: str,
) -> None:
    with pytest.raises(DriftInputError, match=message):
        call()


def test_drift_thresholds_refuse_a_warning_above_its_critical_and_unknown_fields() -> None:
    with pytest.raises(ValidationError, match=r"psi_warning \(0.3\) must be below psi_critical"):
        DriftThresholds(psi_warning=0.3)
    with pytest.raises(ValidationError, match="js_warn"):
        DriftThresholds.model_validate({"js_warn": 0.1})
