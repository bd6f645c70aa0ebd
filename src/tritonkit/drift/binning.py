"""The drift metrics: names, labels and bins, one definition for the publisher and the reader.

The python step counts every batch it gets into the series of a `DriftLayout` and flushes the
counts into Triton's `/metrics` now and then (each metric call costs ~23 µs, docs/platform.md);
the monitoring sidecar reads the same series back, from Triton or from a Prometheus that sums
them across replicas, and compares windows of them with the reference profile. The bins are the
profile's: numeric features in the training deciles ("value <= upper edge", Prometheus' rule),
categorical features per training category plus `unseen` and `missing` series (never a raw input
string in a label), the churn probability in its histogram bins. numpy only: the repository
builder copies this file beside the step (the NGC container has numpy, not this package)::

    layout = DriftLayout.from_profile(json.load(open("reference_profile.json")), "churn", "1")
    counter = DriftCounter(layout)
    counter.count_features(numbers, codes, missing)         # per batch, vectorised
    for index, delta in counter.take():                      # per flush
        metrics[index].increment(delta)
    window = layout.window(layout.vector(samples))           # the reader's side
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

#: Every series carries these labels; the step adds `model_instance`, which readers sum over.
BASE_LABELS = ("model", "version")
FEATURE_BIN = "tritonkit_feature_bin_total"
FEATURE_CATEGORY = "tritonkit_feature_category_total"
FEATURE_UNSEEN = "tritonkit_feature_unseen_total"
FEATURE_MISSING = "tritonkit_feature_missing_total"
FEATURE_OUT_OF_RANGE = "tritonkit_feature_out_of_range_total"
PREDICTION_BIN = "tritonkit_prediction_bin_total"
RISK_LEVEL = "tritonkit_risk_level_total"
REJECTED = "tritonkit_rejected_rows_total"
ROWS = "tritonkit_rows_total"

#: name -> help text of every drift metric (all are counters).
METRICS: dict[str, str] = {
    FEATURE_BIN: "Rows per reference-decile bin of a numeric feature (bin 0 is lowest).",
    FEATURE_CATEGORY: "Rows per training category of a categorical feature.",
    FEATURE_UNSEEN: "Rows whose categorical feature holds a category unseen in training.",
    FEATURE_MISSING: "Rows whose feature is missing (NaN number, blank category).",
    FEATURE_OUT_OF_RANGE: "Rows whose numeric feature lies outside the training range.",
    PREDICTION_BIN: "Predictions per churn-probability bin of the reference histogram.",
    RISK_LEVEL: "Predictions per risk level.",
    REJECTED: "Rows refused by the step, by reason.",
    ROWS: "Rows the step received (accepted or refused).",
}
RISK_LEVELS = ("low", "medium", "high")
#: Upper edges of the predicted probability's histogram (a last +Inf bucket is implied): the
#: reference profile's and the gateway's per-version counts.
PROBABILITY_EDGES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))
#: Why the step refused rows; a row is counted once per reason it has.
REJECT_REASONS = ("unknown_category", "missing_value", "non_finite", "out_of_bounds",
                  "malformed_request", "internal_error")


@dataclasses.dataclass(frozen=True)
class NumericBins:
    name: str
    edges: np.ndarray  # upper edges of every bin but the last (+Inf)
    minimum: float  # the training range; values outside are counted as out of range
    maximum: float
    first: int  # index of bin 0 in the layout's vector
    out_of_range: int
    missing: int


@dataclasses.dataclass(frozen=True)
class CategoryBins:
    name: str
    categories: tuple[str, ...]
    first: int  # index of the first category's series
    unseen: int
    missing: int


@dataclasses.dataclass(frozen=True)
class DriftWindow:
    """Counts of one window (or of all time), by feature, as the sidecar judges them."""

    rows: float
    numeric: dict[str, np.ndarray]  # feature -> counts per bin
    out_of_range: dict[str, float]
    categorical: dict[str, dict[str, float]]  # feature -> category -> count
    unseen: dict[str, float]
    missing: dict[str, float]
    prediction: np.ndarray  # counts per probability bin
    risk: dict[str, float]
    rejected: dict[str, float]


class DriftLayout:
    """The series of one model version: their metric names and labels, in a fixed order."""

    def __init__(self, profile: Mapping[str, Any], model: str, version: str) -> None:
        self.model = model
        self.version = str(version)
        self.series: list[tuple[str, dict[str, str]]] = []
        self.numeric: list[NumericBins] = []
        self.categorical: list[CategoryBins] = []
        for name, entry in profile["numeric"].items():
            edges = np.asarray(entry["edges"], dtype=np.float64)
            first = len(self.series)
            for i in range(len(edges) + 1):
                self._add(FEATURE_BIN, feature=name, bin=str(i))
            self.numeric.append(NumericBins(
                name=name, edges=edges, minimum=float(entry["minimum"]),
                maximum=float(entry["maximum"]), first=first,
                out_of_range=self._add(FEATURE_OUT_OF_RANGE, feature=name),
                missing=self._add(FEATURE_MISSING, feature=name),
            ))
        for name, entry in profile["categorical"].items():
            categories = tuple(entry["frequencies"])
            first = len(self.series)
            for category in categories:
                self._add(FEATURE_CATEGORY, feature=name, category=category)
            self.categorical.append(CategoryBins(
                name=name, categories=categories, first=first,
                unseen=self._add(FEATURE_UNSEEN, feature=name),
                missing=self._add(FEATURE_MISSING, feature=name),
            ))
        self.probability_edges = np.asarray(profile["prediction"]["probability_edges"],
                                            dtype=np.float64)
        self.prediction_first = len(self.series)
        for i in range(len(self.probability_edges) + 1):
            self._add(PREDICTION_BIN, bin=str(i))
        self.risk_first = len(self.series)
        for level in RISK_LEVELS:
            self._add(RISK_LEVEL, level=level)
        self.rejected_first = len(self.series)
        for reason in REJECT_REASONS:
            self._add(REJECTED, reason=reason)
        self.rows = self._add(ROWS)
        self._index = {_key(name, labels): i for i, (name, labels) in enumerate(self.series)}
        # One bincount serves every categorical feature: its codes shifted to its series.
        self.category_offsets = np.array([c.first for c in self.categorical], dtype=np.int64)

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any], model: str, version: str) -> DriftLayout:
        return cls(profile, model, version)

    def _add(self, metric: str, **labels: str) -> int:
        self.series.append((metric, {"model": self.model, "version": self.version, **labels}))
        return len(self.series) - 1

    def __len__(self) -> int:
        return len(self.series)

    # -- the reader's side ------------------------------------------------------------------
    def vector(self, samples: Iterable[tuple[str, Mapping[str, str], float]]) -> np.ndarray:
        """Values of the layout's series from scraped samples (name, labels, value).

        Samples of other metrics, models or versions are ignored; samples that differ only in
        labels the layout does not use (`model_instance`, Prometheus' `instance`, `job`) are
        summed, so replicas and instances add up.
        """
        out = np.zeros(len(self.series), dtype=np.float64)
        wanted = set(METRICS)
        for name, labels, value in samples:
            if name not in wanted or labels.get("model") != self.model \
                    or labels.get("version") != self.version:
                continue
            index = self._index.get(_key(name, labels))
            if index is not None:
                out[index] += value
        return out

    def window(self, counts: np.ndarray) -> DriftWindow:
        """The counts of a vector (e.g. a difference of two scrapes), by feature."""
        numeric = {b.name: counts[b.first:b.first + len(b.edges) + 1] for b in self.numeric}
        categorical = {
            c.name: {cat: float(counts[c.first + i]) for i, cat in enumerate(c.categories)}
            for c in self.categorical
        }
        missing = {b.name: float(counts[b.missing]) for b in self.numeric}
        missing.update({c.name: float(counts[c.missing]) for c in self.categorical})
        bins = len(self.probability_edges) + 1
        return DriftWindow(
            rows=float(counts[self.rows]),
            numeric=numeric,
            out_of_range={b.name: float(counts[b.out_of_range]) for b in self.numeric},
            categorical=categorical,
            unseen={c.name: float(counts[c.unseen]) for c in self.categorical},
            missing=missing,
            prediction=counts[self.prediction_first:self.prediction_first + bins],
            risk={lv: float(counts[self.risk_first + i]) for i, lv in enumerate(RISK_LEVELS)},
            rejected={r: float(counts[self.rejected_first + i])
                      for i, r in enumerate(REJECT_REASONS)},
        )


def _key(name: str, labels: Mapping[str, str]) -> tuple[str, ...]:
    return (name, labels.get("feature", ""), labels.get("bin", ""), labels.get("category", ""),
            labels.get("level", ""), labels.get("reason", ""))


def bin_index(values: np.ndarray, edges: np.ndarray | Sequence[float]) -> np.ndarray:
    """Bin of each value: bin i holds edge[i-1] < v <= edge[i] (Prometheus' `le` rule)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64),
                           np.asarray(values, dtype=np.float64), side="left")


#: Rows a counter keeps uncounted before it counts them on the caller's thread after all.
MAX_PENDING_ROWS = 200_000


class DriftCounter:
    """Counts of a layout's series since the last `take()`; safe across threads.

    The serving thread only queues each batch's arrays (about a microsecond); `take()`, called
    from the flush thread, counts everything queued in one vectorised pass. Counting a batch as
    it came cost ~50 µs per batch, a tenth of a request's latency at concurrency 1.
    """

    def __init__(self, layout: DriftLayout) -> None:
        self.layout = layout
        self._counts = np.zeros(len(layout), dtype=np.int64)
        self._lock = threading.Lock()
        self._features: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._predictions: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def count_features(self, numbers: np.ndarray, codes: np.ndarray,
                       missing: np.ndarray | None = None) -> None:
        """Queue a batch's inputs for counting (the arrays must not change afterwards).

        Args:
            numbers: float [rows, numeric features] in the layout's order; NaN is missing.
            codes: int [categorical features, rows], the index of each value in the feature's
                categories, -1 when it is not one of them.
            missing: bool [categorical features, rows], values that were blank (else they
                count as unseen); None when no code is -1.
        """
        with self._lock:
            self._features.append((numbers, codes, missing))
            self._pending_rows += numbers.shape[0]
            drain = self._pending_rows > MAX_PENDING_ROWS
        if drain:
            self._drain()

    def _count_features(self, numbers: np.ndarray, codes: np.ndarray,
                        missing: np.ndarray | None) -> np.ndarray:
        layout = self.layout
        delta = np.zeros(len(layout), dtype=np.int64)
        delta[layout.rows] = numbers.shape[0]
        for j, bins in enumerate(layout.numeric):
            column = numbers[:, j]
            finite = np.isfinite(column)
            values = column[finite] if not finite.all() else column
            delta[bins.missing] = column.shape[0] - values.shape[0]
            delta[bins.out_of_range] = np.count_nonzero(
                (values < bins.minimum) | (values > bins.maximum))
            delta[bins.first:bins.first + len(bins.edges) + 1] = np.bincount(
                bin_index(values, bins.edges), minlength=len(bins.edges) + 1)
        known = codes >= 0
        shifted = (codes + layout.category_offsets[:, None])[known]
        delta += np.bincount(shifted, minlength=len(layout))
        if not known.all():
            blank = missing if missing is not None else np.zeros_like(known)
            for k, category in enumerate(layout.categorical):
                delta[category.missing] = np.count_nonzero(blank[k])
                delta[category.unseen] = np.count_nonzero(~known[k] & ~blank[k])
        return delta

    def count_predictions(self, probabilities: np.ndarray, risk_levels: np.ndarray) -> None:
        """Queue the answers of a batch for counting: probability bins and risk levels."""
        with self._lock:
            self._predictions.append((probabilities, risk_levels))
            self._pending_rows += probabilities.shape[0]
            drain = self._pending_rows > MAX_PENDING_ROWS
        if drain:
            self._drain()

    def _count_predictions(self, probabilities: np.ndarray, risk_levels: np.ndarray
                           ) -> np.ndarray:
        layout = self.layout
        delta = np.zeros(len(layout), dtype=np.int64)
        bins = len(layout.probability_edges) + 1
        delta[layout.prediction_first:layout.prediction_first + bins] = np.bincount(
            bin_index(probabilities.reshape(-1), layout.probability_edges), minlength=bins)
        levels = risk_levels.reshape(-1)
        for i, level in enumerate(RISK_LEVELS):
            delta[layout.risk_first + i] = np.count_nonzero(
                (levels == level) | (levels == level.encode()))
        return delta

    def count_rejected(self, reason: str, rows: int) -> None:
        """Count `rows` refused for `reason` (one of REJECT_REASONS)."""
        index = self.layout.rejected_first + REJECT_REASONS.index(reason)
        with self._lock:
            self._counts[index] += rows

    def _drain(self) -> None:
        """Count every queued batch in one pass per kind, outside the lock."""
        with self._lock:
            features, self._features = self._features, []
            predictions, self._predictions = self._predictions, []
            self._pending_rows = 0
        delta = np.zeros(len(self.layout), dtype=np.int64)
        if features:
            numbers = np.concatenate([f[0] for f in features])
            codes = np.concatenate([f[1] for f in features], axis=1)
            missing = None
            if any(f[2] is not None for f in features):
                missing = np.concatenate(
                    [f[2] if f[2] is not None else np.zeros_like(f[1], dtype=bool)
                     for f in features], axis=1)
            delta += self._count_features(numbers, codes, missing)
        if predictions:
            delta += self._count_predictions(
                np.concatenate([p[0].reshape(-1) for p in predictions]),
                np.concatenate([p[1].reshape(-1) for p in predictions]))
        with self._lock:
            self._counts += delta

    def take(self) -> list[tuple[int, int]]:
        """(series index, count) of every series counted since the last call; resets them."""
        self._drain()
        with self._lock:
            counts, self._counts = self._counts, np.zeros_like(self._counts)
        return [(int(i), int(counts[i])) for i in np.flatnonzero(counts)]
