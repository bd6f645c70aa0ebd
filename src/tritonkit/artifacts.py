"""The churn model's build artefacts, versioned beside each other under `artifacts/churn/<v>/`.

`build_churn_artifacts` runs data -> train -> export -> parity check -> reference profile and
writes everything the repository builder, the tests and the clients read::

    paths = ChurnArtifacts.for_version(1)
    if not paths.complete():
        build_churn_artifacts(spec.pipelines["churn"], paths)
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import joblib
import onnx

from tritonkit import spec as spec_module
from tritonkit.data.telco import ID_COLUMN, TARGET_COLUMN, load_telco, split_by_customer
from tritonkit.drift.profile import reference_profile
from tritonkit.errors import ArtifactMissingError
from tritonkit.export.onnx_export import check_parity, export_churn_onnx
from tritonkit.features import ALL_FEATURES, FeatureSchema
from tritonkit.paths import ARTIFACTS, CACHE
from tritonkit.train.churn import train_churn
from tritonkit.train.fallback import train_fallback

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ChurnArtifacts:
    """Paths of one version's artefacts."""

    root: Path

    @classmethod
    def for_version(cls, version: int, base: Path = ARTIFACTS) -> ChurnArtifacts:
        return cls(base / "churn" / str(version))

    @property
    def onnx(self) -> Path:
        return self.root / "model.onnx"

    @property
    def sklearn(self) -> Path:
        return self.root / "pipeline.joblib"

    @property
    def schema(self) -> Path:
        return self.root / "feature_schema.json"

    @property
    def profile(self) -> Path:
        return self.root / "reference_profile.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def test_rows(self) -> Path:
        """The held-out test customers (raw columns and label), for parity tests and clients."""
        return self.root / "test.csv"

    @property
    def fallback(self) -> Path:
        """The fallback model (JSON coefficients) that the gateway answers with when Triton
        cannot (`tritonkit.gateway.fallback`)."""
        return self.root / "fallback.json"

    def all(self) -> tuple[Path, ...]:
        return (self.onnx, self.sklearn, self.schema, self.profile, self.metrics, self.test_rows,
                self.fallback)

    def complete(self) -> bool:
        return all(p.exists() for p in self.all())

    def require(self) -> ChurnArtifacts:
        missing = [p.name for p in self.all() if not p.exists()]
        if missing:
            raise ArtifactMissingError(
                f"{self.root} lacks {', '.join(missing)}: run `make build-engines`"
            )
        return self

    def load_schema(self) -> FeatureSchema:
        return FeatureSchema.load(self.require().schema)

    def load_metrics(self) -> dict[str, Any]:
        return dict(json.loads(self.require().metrics.read_text()))


def fallback_version(version: int) -> str:
    """The `model_version` of the fallback model's answers: "<version>-fallback"."""
    return f"{version}-fallback"


def build_churn_artifacts(pipeline_spec: spec_module.Pipeline, paths: ChurnArtifacts) -> None:
    """Train, export, check and profile the churn model; write its artefacts."""
    training = pipeline_spec.training
    thresholds = pipeline_spec.risk_thresholds
    frame = load_telco(CACHE / "data")
    splits = split_by_customer(
        frame,
        validation_fraction=training.validation_fraction,
        test_fraction=training.test_fraction,
    )
    result = train_churn(
        splits, training.regularization_grid, (thresholds.medium, thresholds.high)
    )
    model = export_churn_onnx(
        result.pipeline, result.schema, thresholds, version=str(pipeline_spec.version)
    )
    parity = check_parity(result.pipeline, result.schema, model, splits.test, thresholds)
    logger.info("ONNX parity on %d test rows: max |Δp| %.2e",
                parity["rows"], parity["max_abs_diff"])
    train_p = result.pipeline.predict_proba(splits.train[list(ALL_FEATURES)])[:, 1]
    profile = reference_profile(splits.train, result.schema, train_p, high=thresholds.high)

    paths.root.mkdir(parents=True, exist_ok=True)
    onnx.save(model, paths.onnx)
    joblib.dump(result.pipeline, paths.sklearn)
    result.schema.save(paths.schema)
    paths.profile.write_text(json.dumps(profile, indent=2) + "\n")
    metrics = {
        **result.metrics,
        "onnx_parity": parity,
        "split": {
            "method": "sha256(customerid) buckets, customer-disjoint",
            "customers": len(frame),
            "train": len(splits.train),
            "validation": len(splits.validation),
            "test": len(splits.test),
        },
    }
    paths.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    fallback = train_fallback(splits, (thresholds.medium, thresholds.high),
                              version=fallback_version(pipeline_spec.version))
    paths.fallback.write_text(json.dumps(fallback, indent=2) + "\n")
    splits.test[[ID_COLUMN, *ALL_FEATURES, TARGET_COLUMN]].to_csv(paths.test_rows, index=False)
    logger.info("wrote %s", paths.root)
