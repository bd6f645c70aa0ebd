"""The fallback model, evaluated where it is needed: a logistic regression read from JSON.

While Triton cannot answer (breaker open, connection refused, timeout) the gateway and the
client answer with it. It needs numpy alone, so it costs nothing to keep loaded, and its answers
carry their own `model_version` ("1-fallback") so no caller mixes them up with the model's::

    fallback = FallbackModel.load(TabularArtifacts.for_version(1).fallback)
    probability, risk = fallback.predict_one({"tenure": 2, "contract": "Month-to-month", ...})
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tritonkit.errors import ArtifactMissingError


@dataclasses.dataclass(frozen=True)
class FallbackModel:
    """A logistic regression on a few features: standardised numbers and one-hot categories."""

    version: str
    intercept: float
    #: name -> (mean, scale, coefficient)
    numeric: Mapping[str, tuple[float, float, float]]
    #: name -> {category: coefficient}; an unknown category adds nothing
    categorical: Mapping[str, Mapping[str, float]]
    medium: float
    high: float
    test_roc_auc: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FallbackModel:
        return cls(
            version=str(data["version"]),
            intercept=float(data["intercept"]),
            numeric={name: (float(v["mean"]), float(v["scale"]), float(v["coef"]))
                     for name, v in data["numeric"].items()},
            categorical={name: {str(k): float(w) for k, w in table.items()}
                         for name, table in data["categorical"].items()},
            medium=float(data["risk_thresholds"]["medium"]),
            high=float(data["risk_thresholds"]["high"]),
            test_roc_auc=float(data["metrics"]["test_roc_auc"]),
        )

    @classmethod
    def load(cls, path: Path) -> FallbackModel:
        """Read `fallback.json`; a missing file names its fix."""
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ArtifactMissingError(
                f"fallback model {path} not found: run `make build-engines`"
            ) from None

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)

    def probability(self, customer: Mapping[str, Any]) -> float:
        """Churn probability of one customer (a mapping with at least `features`)."""
        z = self.intercept
        for name, (mean, scale, coef) in self.numeric.items():
            z += coef * (float(customer[name]) - mean) / scale
        for name, table in self.categorical.items():
            z += table.get(str(customer[name]), 0.0)
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def risk_level(self, probability: float) -> str:
        """The same rule as the main model's: p >= threshold is the higher level."""
        if probability >= self.high:
            return "high"
        return "medium" if probability >= self.medium else "low"

    def predict_one(self, customer: Mapping[str, Any]) -> tuple[float, str]:
        """(probability, risk level) of one customer."""
        p = self.probability(customer)
        return p, self.risk_level(p)

    def predict(self, customers: Sequence[Mapping[str, Any]]) -> list[tuple[float, str]]:
        """(probability, risk level) of each customer, in order."""
        return [self.predict_one(c) for c in customers]
