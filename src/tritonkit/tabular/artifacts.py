"""A tabular model's build artefacts, versioned beside each other under `artifacts/<model>/<v>/`.

`build_artifacts` runs data -> train -> export -> parity check -> reference profile and writes
everything the repository builder, the tests and the clients read; `train_stage` runs it only
when its inputs (spec fields, source files, tool versions) changed, and `build_variants` makes
and gates the variants of the exported graph. The dataset is read at most once per build
(`Rows`)::

    paths = TabularArtifacts.for_version(1, name="churn")
    rows = Rows(spec.models["churn"])
    train_stage("churn", spec.models["churn"], paths, rows)   # a no-op when nothing changed
    build_variants("churn", spec.models["churn"], paths, rows)
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

from tritonkit.errors import ArtifactMissingError
from tritonkit.paths import ARTIFACTS, PROJECT_ROOT
from tritonkit.spec import TabularClassifier
from tritonkit.stages.manifest import Manifest, fingerprint
from tritonkit.stages.sources import sources
from tritonkit.tabular import datasets, fallback, profile, train
from tritonkit.tabular.datasets import Splits, load_rows, split
from tritonkit.tabular.export import (
    INPUT_NAME,
    append_head,
    check_parity,
    export_core,
    predict,
    session,
)
from tritonkit.tabular.schema import FeatureSchema

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TabularArtifacts:
    """Paths of one version's artefacts."""

    root: Path

    @classmethod
    def for_version(cls, version: int, base: Path = ARTIFACTS, name: str = "churn"
                    ) -> TabularArtifacts:
        return cls(base / name / str(version))

    @property
    def manifest(self) -> Path:
        """What each build stage was made from (`tritonkit.stages.manifest`)."""
        return self.root / "manifest.json"

    @property
    def gates(self) -> Path:
        """Each variant's accuracy gate against the FP32 graph (JSON)."""
        return self.root / "gates.json"

    def variant(self, variant: str) -> Path:
        """A variant's numeric core (features -> probability), without the head."""
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
        from tritonkit.stages.variants import engines_of

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
        """The held-out test rows (id, raw columns and label), for parity tests and clients."""
        return self.root / "test.csv"

    @property
    def fallback(self) -> Path:
        """The fallback model (JSON coefficients) that the gateway answers with when Triton
        cannot (`tritonkit.client.fallback`)."""
        return self.root / "fallback.json"

    def all(self) -> tuple[Path, ...]:
        return (self.onnx, self.sklearn, self.schema, self.profile, self.metrics, self.test_rows,
                self.fallback, self.variant("fp32"))

    def complete(self) -> bool:
        return all(p.exists() for p in self.all())

    def require(self) -> TabularArtifacts:
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


class Rows:
    """A model's dataset and its split, read once per build and only when a stage needs it."""

    def __init__(self, model: TabularClassifier) -> None:
        self.model = model

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        return load_rows(self.model.dataset)

    @functools.cached_property
    def splits(self) -> Splits:
        training = self.model.training
        return split(self.frame, self.model.dataset.id_column,
                     validation_fraction=training.validation_fraction,
                     test_fraction=training.test_fraction)


def build_artifacts(model_spec: TabularClassifier, paths: TabularArtifacts, rows: Rows) -> None:
    """Train, export, check and profile the model; write its artefacts."""
    training = model_spec.training
    thresholds = model_spec.risk_thresholds
    dataset = model_spec.dataset
    splits = rows.splits
    result = train.train(splits, dataset, training.regularization_grid,
                         (thresholds.medium, thresholds.high))
    core = export_core(result.pipeline, result.schema, model_spec.probability)
    model = append_head(core, thresholds, version=str(model_spec.version))
    model.doc_string = f"{paths.root.parent.name} v{model_spec.version} with postprocessing head"
    parity = check_parity(result.pipeline, result.schema, model, splits.test, thresholds)
    logger.info("ONNX parity on %d test rows: max |Δp| %.2e",
                parity["rows"], parity["max_abs_diff"])
    train_p = result.pipeline.predict_proba(splits.train[list(dataset.features)])[:, 1]
    reference = profile.reference_profile(splits.train, result.schema, train_p,
                                          high=thresholds.high, target=dataset.target)

    paths.root.mkdir(parents=True, exist_ok=True)
    paths.onnx.write_bytes(model.SerializeToString(deterministic=True))
    paths.variant("fp32").parent.mkdir(parents=True, exist_ok=True)
    paths.variant("fp32").write_bytes(core.SerializeToString(deterministic=True))
    joblib.dump(result.pipeline, paths.sklearn)
    result.schema.save(paths.schema)
    paths.profile.write_text(json.dumps(reference, indent=2) + "\n")
    metrics = {
        **result.metrics,
        "onnx_parity": parity,
        "split": {
            "method": f"sha256({dataset.id_column}) buckets, id-disjoint",
            "rows": len(rows.frame),
            "train": len(splits.train),
            "validation": len(splits.validation),
            "test": len(splits.test),
        },
    }
    paths.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    document = fallback.train_fallback(
        splits, dataset, model_spec.fallback_features, (thresholds.medium, thresholds.high),
        version=fallback_version(model_spec.version))
    paths.fallback.write_text(json.dumps(document, indent=2) + "\n")
    splits.test[[dataset.id_column, *dataset.features, dataset.target]].to_csv(
        paths.test_rows, index=False)
    logger.info("wrote %s", paths.root)


def train_sources(model: TabularClassifier) -> tuple[Path, ...]:
    """Source files whose change retrains and re-exports the model: what this stage imports,
    and the dataset's loader or CSV file."""
    modules = [__name__]
    if model.dataset.loader is not None:
        modules.append(f"{datasets.__name__}.{model.dataset.loader}")
    files = list(sources(*modules))
    if model.dataset.csv is not None:
        csv = model.dataset.csv
        files.append(csv if csv.is_absolute() else PROJECT_ROOT / csv)
    return tuple(files)


def train_stage(model: TabularClassifier, paths: TabularArtifacts, rows: Rows | None = None,
                *, force: bool = False) -> bool:
    """Run `build_artifacts` unless the manifest shows the same inputs built the files there
    now; returns whether it ran. The thresholds and version are part of the key: they are
    baked into the exported graph."""
    manifest = Manifest.load(paths.manifest)
    key = fingerprint(values={"training": model.training.model_dump(),
                              "dataset": model.dataset.model_dump(mode="json"),
                              "probability": model.probability,
                              "fallback_features": list(model.fallback_features),
                              "risk_thresholds": model.risk_thresholds.model_dump(),
                              "version": model.version},
                      files=train_sources(model))
    if not force and paths.complete() and manifest.fresh("train", key):
        logger.info("%s: trained model up to date", paths.root)
        return False
    started = time.perf_counter()
    logger.info("%s: training and exporting (about 40 s)", paths.root)
    build_artifacts(model, paths, rows or Rows(model))
    manifest = Manifest.load(paths.manifest)
    manifest.record("train", key, outputs=paths.all(), seconds=time.perf_counter() - started,
                    extra={"test": paths.load_metrics()["test"]})
    manifest.save()
    return True


def build_variants(name: str, model: TabularClassifier, paths: TabularArtifacts,
                   rows: Rows | None = None, *, force: bool = False) -> dict[str, Any]:
    """Make the spec's variants of the exported core and gate each against the scikit-learn
    model on the held-out rows (calibration: the training split's rows)."""
    from tritonkit.stages.variants import build_variants as build_and_gate
    from tritonkit.variants.gates import ClassifierLimits, classifier_gate

    rows = rows or Rows(model)
    features = list(model.dataset.features)
    trained = paths.load_schema()
    test = pd.read_csv(paths.test_rows, dtype={c: str for c in model.dataset.categorical})
    test_matrix = trained.encode({n: test[n].to_numpy() for n in features})
    labels = test[model.dataset.target].to_numpy()
    reference = joblib.load(paths.sklearn).predict_proba(test[features])[:, 1]
    thresholds = (model.risk_thresholds.medium, model.risk_thresholds.high)

    @functools.cache
    def calibration() -> list[dict[str, np.ndarray]]:
        train_rows = rows.splits.train
        matrix = trained.encode({n: train_rows[n].to_numpy() for n in features})
        return [{INPUT_NAME: matrix[i:i + 256]} for i in range(0, len(matrix), 256)]

    def gate(variant: str, path: Path) -> Any:
        got = session(append_head(onnx.load(path), model.risk_thresholds, "gate"))
        p = next(iter(predict(got, test_matrix).values())).reshape(-1).astype(np.float64)
        limits = ClassifierLimits(
            max_abs_delta_p=model.gate.max_abs_delta_p.get(variant, float("inf")),
            max_roc_auc_drop=model.gate.max_roc_auc_drop,
            min_risk_agreement=model.gate.min_risk_agreement)
        return classifier_gate(variant, reference, p, labels, thresholds, limits)

    return build_and_gate(name, model, root=paths.root, fp32=paths.variant("fp32"),
                          calibration=calibration, gate=gate,
                          manifest=Manifest.load(paths.manifest), force=force)
