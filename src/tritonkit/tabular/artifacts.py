"""The churn model's build artefacts, versioned beside each other under `artifacts/churn/<v>/`.

`build_churn_artifacts` runs data -> train -> export -> parity check -> reference profile and
writes everything the repository builder, the tests and the clients read; `train_stage` runs it
only when its inputs (spec fields, source files, tool versions) changed, and
`build_churn_variants` makes and gates the variants of the exported graph::

    paths = ChurnArtifacts.for_version(1)
    train_stage(spec.models["churn"], paths)          # a no-op when nothing changed
    build_churn_variants(spec.models["churn"], paths)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pandas as pd

from tritonkit import spec as spec_module
from tritonkit.builder.manifest import Manifest, fingerprint
from tritonkit.data.telco import ID_COLUMN, TARGET_COLUMN, load_telco, split_by_customer
from tritonkit.drift.profile import reference_profile
from tritonkit.errors import ArtifactMissingError
from tritonkit.export.onnx_export import (
    INPUT_NAME,
    append_head,
    check_parity,
    export_churn_core,
    predict,
    session,
)
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
    def for_version(cls, version: int, base: Path = ARTIFACTS, name: str = "churn"
                    ) -> ChurnArtifacts:
        return cls(base / name / str(version))

    @property
    def manifest(self) -> Path:
        """What each build stage was made from (`tritonkit.builder.manifest`)."""
        return self.root / "manifest.json"

    @property
    def gates(self) -> Path:
        """Each variant's accuracy gate against the FP32 graph (JSON)."""
        return self.root / "gates.json"

    def variant(self, variant: str) -> Path:
        """A variant's numeric core (features -> churn_probability), without the head."""
        return self.root / "variants" / f"{variant}.onnx"

    def require_variant(self, variant: str) -> Path:
        path = self.variant(variant)
        if not path.exists():
            raise ArtifactMissingError(
                f"variant {variant!r} of {self.root} is missing: it failed its accuracy gate or "
                f"was not built (see {self.gates.name}); run `make build-engines` or serve "
                "another variant (configs/models.yaml, variants.serve)")
        return path

    def engines(self, variant: str) -> dict[str, str]:
        """TensorRT plans of a variant: compute capability -> plan file under engines/."""
        from tritonkit.builder.variant_stage import engines_of

        return engines_of(self.root, variant)

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
                self.fallback, self.variant("fp32"))

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


def build_churn_artifacts(model_spec: spec_module.TabularClassifier, paths: ChurnArtifacts
                          ) -> None:
    """Train, export, check and profile the churn model; write its artefacts."""
    training = model_spec.training
    thresholds = model_spec.risk_thresholds
    frame = load_telco(CACHE / "data")
    splits = split_by_customer(
        frame,
        validation_fraction=training.validation_fraction,
        test_fraction=training.test_fraction,
    )
    result = train_churn(
        splits, training.regularization_grid, (thresholds.medium, thresholds.high)
    )
    core = export_churn_core(result.pipeline, result.schema)
    model = append_head(core, thresholds, version=str(model_spec.version))
    model.doc_string = f"churn classifier v{model_spec.version} with postprocessing head"
    parity = check_parity(result.pipeline, result.schema, model, splits.test, thresholds)
    logger.info("ONNX parity on %d test rows: max |Δp| %.2e",
                parity["rows"], parity["max_abs_diff"])
    train_p = result.pipeline.predict_proba(splits.train[list(ALL_FEATURES)])[:, 1]
    profile = reference_profile(splits.train, result.schema, train_p, high=thresholds.high)

    paths.root.mkdir(parents=True, exist_ok=True)
    paths.onnx.write_bytes(model.SerializeToString(deterministic=True))
    paths.variant("fp32").parent.mkdir(parents=True, exist_ok=True)
    paths.variant("fp32").write_bytes(core.SerializeToString(deterministic=True))
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
                              version=fallback_version(model_spec.version))
    paths.fallback.write_text(json.dumps(fallback, indent=2) + "\n")
    splits.test[[ID_COLUMN, *ALL_FEATURES, TARGET_COLUMN]].to_csv(paths.test_rows, index=False)
    logger.info("wrote %s", paths.root)


#: Source files whose change retrains and re-exports the model.
TRAIN_SOURCES = tuple(
    Path(__file__).parent / rel for rel in (
        "artifacts.py", "features.py", "data/telco.py", "train/churn.py", "train/fallback.py",
        "export/onnx_export.py", "drift/profile.py"))


def train_stage(model: spec_module.TabularClassifier, paths: ChurnArtifacts, *,
                force: bool = False) -> bool:
    """Run `build_churn_artifacts` unless the manifest shows the same inputs built the files
    there now; returns whether it ran. The thresholds and version are part of the key: they
    are baked into the exported graph."""
    manifest = Manifest.load(paths.manifest)
    key = fingerprint(values={"training": model.training.model_dump(),
                              "risk_thresholds": model.risk_thresholds.model_dump(),
                              "version": model.version},
                      files=TRAIN_SOURCES)
    if not force and paths.complete() and manifest.fresh("train", key):
        logger.info("%s: trained model up to date", paths.root)
        return False
    started = time.perf_counter()
    logger.info("%s: training and exporting (about 40 s)", paths.root)
    build_churn_artifacts(model, paths)
    manifest = Manifest.load(paths.manifest)
    manifest.record("train", key, outputs=paths.all(), seconds=time.perf_counter() - started,
                    extra={"test": paths.load_metrics()["test"]})
    manifest.save()
    return True


def build_churn_variants(model: spec_module.TabularClassifier, paths: ChurnArtifacts, *,
                         force: bool = False) -> dict[str, Any]:
    """Make the spec's variants of the exported core and gate each against the scikit-learn
    model on the held-out customers (calibration: the training split's customers)."""
    from tritonkit.builder.variant_stage import build_variants
    from tritonkit.variants.gates import ClassifierLimits, classifier_gate

    schema = paths.load_schema()
    test = pd.read_csv(paths.test_rows)
    test_matrix = schema.encode({n: test[n].to_numpy() for n in ALL_FEATURES})
    labels = test[TARGET_COLUMN].to_numpy()
    reference = joblib.load(paths.sklearn).predict_proba(test[list(ALL_FEATURES)])[:, 1]
    thresholds = (model.risk_thresholds.medium, model.risk_thresholds.high)

    @functools.cache
    def calibration() -> list[dict[str, np.ndarray]]:
        frame = load_telco(CACHE / "data")
        train = split_by_customer(
            frame, validation_fraction=model.training.validation_fraction,
            test_fraction=model.training.test_fraction).train
        matrix = schema.encode({n: train[n].to_numpy() for n in ALL_FEATURES})
        return [{INPUT_NAME: matrix[i:i + 256]} for i in range(0, len(matrix), 256)]

    def gate(variant: str, path: Path) -> Any:
        got = session(append_head(onnx.load(path), model.risk_thresholds, "gate"))
        p = predict(got, test_matrix)["churn_probability"].reshape(-1).astype(np.float64)
        limits = ClassifierLimits(
            max_abs_delta_p=model.gate.max_abs_delta_p.get(variant, float("inf")),
            max_roc_auc_drop=model.gate.max_roc_auc_drop,
            min_risk_agreement=model.gate.min_risk_agreement)
        return classifier_gate(variant, reference, p, labels, thresholds, limits)

    return build_variants("churn", model, root=paths.root, fp32=paths.variant("fp32"),
                          calibration=calibration, gate=gate,
                          manifest=Manifest.load(paths.manifest), force=force)
