"""Train the fallback model: a logistic regression on a handful of features, saved as JSON.

The gateway and the client answer with it while Triton cannot (`tritonkit.client.fallback`
evaluates it with numpy alone, no onnxruntime). It is trained on the same training split as the
main model and its test ROC-AUC is recorded beside its coefficients::

    document = train_fallback(splits, model.dataset, model.fallback_features,
                              risk_thresholds=(0.3, 0.6), version="1-fallback")
    Path("artifacts/churn/1/fallback.json").write_text(json.dumps(document))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tritonkit.spec import TabularDataset
from tritonkit.tabular.datasets import Splits

logger = logging.getLogger(__name__)


def train_fallback(
    splits: Splits, dataset: TabularDataset, features: Sequence[str],
    risk_thresholds: Sequence[float], version: str, c: float = 1.0
) -> dict[str, Any]:
    """Fit the fallback model on the training split; returns its JSON document.

    Args:
        splits: the id-disjoint splits the main model was trained on.
        dataset: the spec's dataset (which features are numeric, the target).
        features: what the fallback reads (the spec's `fallback_features`; empty: all).
        risk_thresholds: (medium, high) probability thresholds of the risk levels.
        version: the `model_version` its answers carry, e.g. "1-fallback".
        c: inverse L2 regularisation strength of the logistic regression.

    Returns:
        version, features, intercept, numeric {name: {mean, scale, coef}}, categorical
        {name: {category: coef}}, risk_thresholds, and test metrics.
    """
    numeric_names = [n for n in features or dataset.features if n in dataset.numeric]
    categorical_names = [n for n in features or dataset.features if n not in dataset.numeric]
    target = dataset.target
    columns = [*numeric_names, *categorical_names]
    transformers: list[tuple[str, Any, list[str]]] = [("num", StandardScaler(), numeric_names)]
    if categorical_names:
        transformers.append(("cat", OneHotEncoder(handle_unknown="ignore"), categorical_names))
    pipeline = Pipeline([
        ("encode", ColumnTransformer(transformers)),
        ("classify", LogisticRegression(C=c, max_iter=5000)),
    ]).fit(splits.train[columns], splits.train[target])
    encoder: ColumnTransformer = pipeline.named_steps["encode"]
    scaler: StandardScaler = encoder.named_transformers_["num"]
    model: LogisticRegression = pipeline.named_steps["classify"]
    weights = model.coef_[0]
    numeric = {
        name: {"mean": float(scaler.mean_[i]), "scale": float(scaler.scale_[i]),
               "coef": float(weights[i])}
        for i, name in enumerate(numeric_names)
    }
    categorical: dict[str, dict[str, float]] = {}
    offset = len(numeric_names)
    onehot: Any = encoder.named_transformers_["cat"] if categorical_names else None
    for i, name in enumerate(categorical_names):
        categories = [str(value) for value in onehot.categories_[i]]
        categorical[name] = {cat: float(weights[offset + k]) for k, cat in enumerate(categories)}
        offset += len(categories)
    test: pd.DataFrame = splits.test
    p = pipeline.predict_proba(test[columns])[:, 1]
    medium, high = risk_thresholds
    document: dict[str, Any] = {
        "version": version,
        "model": "logistic_regression",
        "features": columns,
        "intercept": float(model.intercept_[0]),
        "numeric": numeric,
        "categorical": categorical,
        "risk_thresholds": {"medium": float(medium), "high": float(high)},
        "metrics": {
            "test_roc_auc": float(roc_auc_score(test[target], p)),
            "test_rows": len(test),
            "positive_rate": float(np.mean(test[target])),
        },
    }
    logger.info("fallback model %s: test ROC-AUC %.4f on %d customers from %d features",
                version, document["metrics"]["test_roc_auc"], len(test), len(columns))
    return document
