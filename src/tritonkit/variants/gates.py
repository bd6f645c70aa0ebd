"""Accuracy gates: a variant enters the repository only if it stays close to its source model.

A classifier variant is compared on held-out rows by max |Δp|, ΔROC-AUC (variant - source) and
risk-level agreement; an embedding variant by the cosine similarity of its embeddings to the
source's (mean, minimum and 1st percentile). A failure says by how much::

    result = classifier_gate("int8_static", reference_p, variant_p, labels, (0.3, 0.6))
    result.message  # "int8_static: ΔROC-AUC -0.0043 exceeds the limit 0.002 by 0.0023"
    embedding_gate("int8_dynamic", fp32_vectors, int8_vectors).metrics["mean_cosine"]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassifierLimits:
    """How far a classifier variant's probabilities may stray from its source's."""

    #: Largest |Δp| on any row.
    max_abs_delta_p: float = 0.02
    #: Largest fall of ROC-AUC (source - variant); a rise is not a failure (max |Δp| bounds it).
    max_roc_auc_drop: float = 0.002
    #: Smallest share of rows whose risk level (low/medium/high) is the source's.
    min_risk_agreement: float = 0.97


#: Limits per variant kind. FP32 and the optimized graph only reorder float32 arithmetic:
#: 1e-5 is the parity tolerance of the export itself, and a row that changes level would have
#: to lie within 1e-5 of a threshold. FP16 keeps ~3 significant digits of a logit, so p moves
#: by ~1e-3 at most (2e-3 leaves room). INT8 moves p by up to a few 1e-3 on a linear model
#: (8-bit features and weights); 0.02 flags anything systematic while staying far below the
#: 0.3 gap between the risk thresholds, and the issue's ΔROC-AUC ≤ 0.002 and 97 % agreement
#: (customers within ~0.01 of a threshold may change level) bound what customers see.
DEFAULT_CLASSIFIER_LIMITS: dict[str, ClassifierLimits] = {
    "fp32": ClassifierLimits(max_abs_delta_p=1e-5, max_roc_auc_drop=1e-4,
                             min_risk_agreement=0.999),
    "optimized": ClassifierLimits(max_abs_delta_p=1e-5, max_roc_auc_drop=1e-4,
                                  min_risk_agreement=0.999),
    "fp16": ClassifierLimits(max_abs_delta_p=2e-3, max_roc_auc_drop=1e-3,
                             min_risk_agreement=0.99),
    "tensorrt_fp16": ClassifierLimits(max_abs_delta_p=2e-3, max_roc_auc_drop=1e-3,
                                      min_risk_agreement=0.99),
    "int8_static": ClassifierLimits(),
    "int8_dynamic": ClassifierLimits(),
    "tensorrt_int8": ClassifierLimits(),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbeddingLimits:
    """How far a variant's embeddings may stray from its source's (cosine similarity)."""

    #: The issue's bar: mean cosine to the source's embedding over held-out texts.
    min_mean_cosine: float = 0.99
    #: The worst single text; None reports it without gating on it.
    min_cosine: float | None = None


@dataclasses.dataclass(frozen=True)
class GateResult:
    """The verdict on one variant, its figures and the limits they were held to."""

    variant: str
    passed: bool
    metrics: dict[str, float]
    limits: dict[str, float | None]
    message: str
    failures: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: plain floats, the message and each failure."""
        return {
            "variant": self.variant,
            "passed": self.passed,
            "metrics": dict(self.metrics),
            "limits": dict(self.limits),
            "message": self.message,
            "failures": list(self.failures),
        }


def _verdict(variant: str, checks: Sequence[tuple[bool, str]], summary: str,
             metrics: dict[str, float], limits: dict[str, float | None]) -> GateResult:
    failures = tuple(text for ok, text in checks if not ok)
    message = f"{variant}: " + ("; ".join(failures) if failures else f"passed ({summary})")
    return GateResult(variant, not failures, metrics, limits, message, failures)


def classifier_gate(
    variant: str,
    reference_p: np.ndarray,
    variant_p: np.ndarray,
    labels: np.ndarray,
    thresholds: tuple[float, float],
    limits: ClassifierLimits | None = None,
) -> GateResult:
    """Compare a variant's probabilities with its source's on the same held-out rows.

    Args:
        variant: the variant's name, for the message ("int8_static").
        reference_p: the source model's positive-class probability per row.
        variant_p: the variant's, same rows and order.
        labels: the true 0/1 label per row (for ROC-AUC).
        thresholds: (medium, high): p >= high is "high", p >= medium "medium", else "low".
        limits: defaults to `DEFAULT_CLASSIFIER_LIMITS[variant]`, else `ClassifierLimits()`.
    """
    limits = limits or DEFAULT_CLASSIFIER_LIMITS.get(variant, ClassifierLimits())
    reference = np.asarray(reference_p, dtype=np.float64).reshape(-1)
    got = np.asarray(variant_p, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if not reference.shape == got.shape == y.shape:
        raise ValueError(f"{variant}: {reference.size} reference, {got.size} variant "
                         f"probabilities and {y.size} labels: pass the same rows to each")
    medium, high = thresholds

    def levels(p: np.ndarray) -> np.ndarray:
        return np.where(p >= high, 2, np.where(p >= medium, 1, 0))

    finite = bool(np.isfinite(got).all())
    delta = np.abs(got - reference) if finite else np.full_like(got, np.inf)
    worst = float(delta.max())
    auc_reference = float(roc_auc_score(y, reference))
    auc_variant = float(roc_auc_score(y, got)) if finite else float("nan")
    d_auc = auc_variant - auc_reference
    agreement = float((levels(got) == levels(reference)).mean())
    metrics = {
        "rows": float(y.size),
        "max_abs_delta_p": worst,
        "mean_abs_delta_p": float(delta.mean()),
        "roc_auc_reference": auc_reference,
        "roc_auc": auc_variant,
        "delta_roc_auc": d_auc,
        "risk_agreement": agreement,
    }
    drop = -d_auc if not math.isnan(d_auc) else math.inf
    checks = [
        (finite, "probabilities are NaN or infinite"),
        (worst <= limits.max_abs_delta_p,
         f"max |Δp| {worst:.3g} exceeds the limit {limits.max_abs_delta_p:g} by "
         f"{worst - limits.max_abs_delta_p:.3g}"),
        (drop <= limits.max_roc_auc_drop,
         f"ΔROC-AUC {d_auc:+.4f} exceeds the limit {limits.max_roc_auc_drop:g} by "
         f"{drop - limits.max_roc_auc_drop:.4f}"),
        (agreement >= limits.min_risk_agreement,
         f"risk-level agreement {agreement:.2%} is below the limit "
         f"{limits.min_risk_agreement:.2%} by {(limits.min_risk_agreement - agreement):.2%}"),
    ]
    summary = (f"max |Δp| {worst:.3g} ≤ {limits.max_abs_delta_p:g}, ΔROC-AUC {d_auc:+.4f} "
               f"(drop limit {limits.max_roc_auc_drop:g}), risk-level agreement "
               f"{agreement:.2%} ≥ {limits.min_risk_agreement:.2%}, {y.size} rows")
    return _verdict(variant, checks, summary, metrics, dataclasses.asdict(limits))


def cosine_similarity(reference: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [rows, dim] arrays (float64)."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(got, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embeddings of shapes {a.shape} and {b.shape}: pass [rows, dim] "
                         "arrays of the same texts")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos: np.ndarray = (a * b).sum(axis=1) / np.where(norms == 0, np.inf, norms)
    return cos


def embedding_gate(
    variant: str,
    reference: np.ndarray,
    embeddings: np.ndarray,
    limits: EmbeddingLimits | None = None,
) -> GateResult:
    """Compare a variant's embeddings with its source's for the same held-out texts.

    Args:
        variant: the variant's name, for the message.
        reference: the source model's embeddings, [texts, dim].
        embeddings: the variant's, same texts and order.
        limits: defaults to `EmbeddingLimits()` (mean cosine ≥ 0.99, minimum reported).
    """
    limits = limits or EmbeddingLimits()
    cos = cosine_similarity(reference, embeddings)
    finite = bool(np.isfinite(cos).all())
    cos = np.where(np.isfinite(cos), cos, -1.0)
    mean, low = float(cos.mean()), float(cos.min())
    metrics = {
        "rows": float(cos.size),
        "mean_cosine": mean,
        "min_cosine": low,
        "p01_cosine": float(np.quantile(cos, 0.01)),
        "worst_row": float(cos.argmin()),
    }
    checks = [
        (finite, "embeddings are NaN or infinite"),
        (mean >= limits.min_mean_cosine,
         f"mean cosine {mean:.4f} is below the limit {limits.min_mean_cosine:g} by "
         f"{limits.min_mean_cosine - mean:.4f}"),
    ]
    if limits.min_cosine is not None:
        checks.append((low >= limits.min_cosine,
                       f"min cosine {low:.4f} is below the limit {limits.min_cosine:g} by "
                       f"{limits.min_cosine - low:.4f}"))
    summary = (f"mean cosine {mean:.4f} ≥ {limits.min_mean_cosine:g}, min {low:.4f}, "
               f"p01 {metrics['p01_cosine']:.4f}, {cos.size} texts")
    return _verdict(variant, checks, summary, metrics, dataclasses.asdict(limits))
