"""Train a tabular classifier (scikit-learn) on the spec's dataset features, and evaluate it.

The source model is a scikit-learn Pipeline (StandardScaler + OneHotEncoder + LogisticRegression);
the serving side re-implements only its encoder, in `tritonkit.tabular.schema`, which the parity
checks hold to the Pipeline on every test row::

    result = train(splits, model.dataset, regularization_grid=(0.1, 1.0),
                   risk_thresholds=(0.3, 0.6))
    result.metrics["test"]["roc_auc"]
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tritonkit.spec import TabularDataset
from tritonkit.tabular.datasets import Splits
from tritonkit.tabular.schema import CategoricalFeature, FeatureSchema, NumericFeature

logger = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class TrainResult:
    """The fitted Pipeline, the schema extracted from it, and its evaluation."""

    pipeline: Pipeline
    schema: FeatureSchema
    metrics: dict[str, Any]


def build_pipeline(c: float, numeric: Sequence[str], categorical: Sequence[str]) -> Pipeline:
    transformers: list[tuple[str, Any, list[str]]] = [("num", StandardScaler(), list(numeric))]
    if categorical:
        transformers.append(("cat", OneHotEncoder(handle_unknown="error", dtype=np.float64),
                             list(categorical)))
    return Pipeline([("encode", ColumnTransformer(transformers)),
                     ("classify", LogisticRegression(C=c, max_iter=5000))])


def schema_from_pipeline(pipeline: Pipeline, dataset: TabularDataset) -> FeatureSchema:
    """The FeatureSchema that encodes exactly as the fitted Pipeline's ColumnTransformer, with
    the dataset's bounds and whole-number flags."""
    encoder: ColumnTransformer = pipeline.named_steps["encode"]
    scaler: StandardScaler = encoder.named_transformers_["num"]
    numeric = tuple(
        NumericFeature(name=name, mean=float(scaler.mean_[i]), scale=float(scaler.scale_[i]),
                       minimum=column.min, maximum=column.max, integer=column.integer)
        for i, (name, column) in enumerate(dataset.numeric.items())
    )
    categorical: tuple[CategoricalFeature, ...] = ()
    if dataset.categorical:
        onehot: OneHotEncoder = encoder.named_transformers_["cat"]
        categorical = tuple(
            CategoricalFeature(name=name, categories=tuple(str(c) for c in onehot.categories_[i]))
            for i, name in enumerate(dataset.categorical)
        )
    return FeatureSchema(numeric=numeric, categorical=categorical)


def evaluate(y_true: np.ndarray, p: np.ndarray, risk_thresholds: Sequence[float]) -> dict[str, Any]:
    """ROC-AUC, PR-AUC and precision/recall when the positive class means p >= each risk
    threshold."""
    at_threshold = {}
    for t in risk_thresholds:
        predicted = (p >= t).astype(int)
        at_threshold[f"{t:g}"] = {
            "precision": float(precision_score(y_true, predicted, zero_division=0)),
            "recall": float(recall_score(y_true, predicted)),
            "flagged_share": float(predicted.mean()),
        }
    return {
        "rows": len(y_true),
        "positive_rate": float(np.mean(y_true)),
        "roc_auc": float(roc_auc_score(y_true, p)),
        "pr_auc": float(average_precision_score(y_true, p)),
        "at_threshold": at_threshold,
    }


def train(
    splits: Splits, dataset: TabularDataset, regularization_grid: Sequence[float],
    risk_thresholds: Sequence[float],
) -> TrainResult:
    """Pick C on the validation split, then report every split's metrics (test last)."""
    features = list(dataset.features)
    target = dataset.target
    best: tuple[float, float, Pipeline] | None = None
    for c in regularization_grid:
        pipeline = build_pipeline(c, list(dataset.numeric), dataset.categorical).fit(
            splits.train[features], splits.train[target])
        p = pipeline.predict_proba(splits.validation[features])[:, 1]
        auc = float(roc_auc_score(splits.validation[target], p))
        logger.info("C=%g: validation ROC-AUC %.4f", c, auc)
        if best is None or auc > best[1]:
            best = (c, auc, pipeline)
    if best is None:
        raise ValueError("regularization_grid is empty")
    c, _, pipeline = best
    metrics: dict[str, Any] = {"model": "logistic_regression", "C": c}
    for name in ("train", "validation", "test"):
        frame: pd.DataFrame = getattr(splits, name)
        p = pipeline.predict_proba(frame[features])[:, 1]
        metrics[name] = evaluate(frame[target].to_numpy(), p, risk_thresholds)
    logger.info(
        "test split: ROC-AUC %.4f, PR-AUC %.4f on %d rows",
        metrics["test"]["roc_auc"], metrics["test"]["pr_auc"], metrics["test"]["rows"],
    )
    return TrainResult(pipeline=pipeline, schema=schema_from_pipeline(pipeline, dataset),
                       metrics=metrics)
