"""The reference profile for drift: what the training data and its predictions looked like.

Made at build time and saved beside the model, for the monitoring sidecar to compare live
counters with. Binning: numeric bucket edges at the training deciles 10 % … 90 % (tied edges
removed, open end bins below the first and above the last edge), rows counted with Prometheus'
"value <= upper edge" rule; one frequency per training category; the predicted probability in
ten 0.1-wide bins::

    profile = reference_profile(train_frame, schema, train_probabilities, high=0.6,
                                target="churn")
    profile["numeric"]["tenure"]["edges"]      # upper edges of all bins but the +Inf one
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tritonkit.drift.binning import PROBABILITY_EDGES, bin_index
from tritonkit.tabular.schema import FeatureSchema


def decile_edges(values: np.ndarray) -> list[float]:
    """Upper bucket edges at the deciles 10 % … 90 %, ties removed.

    The bins are (-inf, e1], (e1, e2], …, (e_last, inf).
    """
    edges = np.quantile(values.astype(np.float64), np.linspace(0.1, 0.9, 9))
    return [float(e) for e in np.unique(edges)]


def bin_fractions(values: np.ndarray, edges: list[float] | tuple[float, ...]) -> list[float]:
    """Share of values per bucket with Prometheus' rule: bucket i holds edge[i-1] < v <= edge[i]."""
    index = bin_index(values, edges)
    counts = np.bincount(index, minlength=len(edges) + 1)
    return [float(c) for c in counts / max(len(values), 1)]


def reference_profile(
    frame: pd.DataFrame, schema: FeatureSchema, probabilities: np.ndarray, high: float,
    target: str,
) -> dict[str, Any]:
    """Profile of the training rows: per-feature bins/frequencies and the prediction's shape."""
    numeric = {}
    for feature in schema.numeric:
        values = frame[feature.name].to_numpy()
        edges = decile_edges(values)
        numeric[feature.name] = {
            "edges": edges,
            "fractions": bin_fractions(values, edges),
            "missing_fraction": 0.0,
            "minimum": float(values.min()),
            "maximum": float(values.max()),
        }
    categorical = {}
    for cat in schema.categorical:
        shares = frame[cat.name].value_counts(normalize=True)
        categorical[cat.name] = {
            "frequencies": {c: float(shares.get(c, 0.0)) for c in cat.categories},
            "unseen_fraction": 0.0,
            "missing_fraction": 0.0,
        }
    return {
        "rows": len(frame),
        "numeric": numeric,
        "categorical": categorical,
        "prediction": {
            "probability_edges": list(PROBABILITY_EDGES),
            "probability_fractions": bin_fractions(probabilities, PROBABILITY_EDGES),
            "mean_probability": float(np.mean(probabilities)),
            "high_risk_fraction": float(np.mean(probabilities >= high)),
        },
        "label_positive_rate": float(frame[target].mean()),
    }
