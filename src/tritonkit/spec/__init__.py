"""The model spec: `configs/models.yaml` loaded into frozen, self-checking pydantic models.

Every script reads models, variants, batching, instance groups and targets from here, never
from constants of its own. Each entry of `models` names its `family` (a discriminated union):
the family decides how the model is built and rendered (`tritonkit.families`)::

    spec = load_spec()                               # configs/models.yaml
    spec.models["churn"].steps.model.instances["embedded"]
    spec.models["churn"].variants.serve["embedded"]  # "fp32", "int8_static", ...

Words: a *model* is an entry of the spec (what clients call, an ensemble); a *step* is one Triton
model of that ensemble; a *variant* is one form of the model's ONNX graph (fp32, int8_static, …);
an *engine* is a TensorRT plan built from a variant for one GPU and TensorRT version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, ValidationError, model_validator

from tritonkit.errors import SpecError
from tritonkit.paths import PROJECT_ROOT
from tritonkit.spec.families import (
    ClassifierGate,
    DriftMetrics,
    EmbeddingGate,
    NumericColumn,
    RiskThresholds,
    TabularClassifier,
    TabularDataset,
    TextEmbedding,
    Training,
)
from tritonkit.spec.serving import (
    CPU_VARIANTS,
    ENGINE_SOURCES,
    GPU_VARIANTS,
    TENSORRT_VARIANTS,
    CardText,
    DynamicBatching,
    Frozen,
    QueuePolicy,
    Step,
    Steps,
    Target,
    TargetName,
    TensorRT,
    VariantName,
    Variants,
    VersionPolicy,
)

__all__ = [
    "CPU_VARIANTS",
    "DEFAULT_SPEC",
    "ENGINE_SOURCES",
    "GPU_VARIANTS",
    "TENSORRT_VARIANTS",
    "CardText",
    "ClassifierGate",
    "DriftMetrics",
    "DynamicBatching",
    "EmbeddingGate",
    "ModelSpec",
    "NumericColumn",
    "QueuePolicy",
    "RiskThresholds",
    "Spec",
    "Step",
    "Steps",
    "TabularClassifier",
    "TabularDataset",
    "Target",
    "TargetName",
    "TensorRT",
    "TextEmbedding",
    "Training",
    "VariantName",
    "Variants",
    "VersionPolicy",
    "load_spec",
]

DEFAULT_SPEC = PROJECT_ROOT / "configs" / "models.yaml"

ModelSpec = Annotated[TabularClassifier | TextEmbedding, Field(discriminator="family")]


class Spec(Frozen):
    targets: dict[TargetName, Target]
    models: dict[str, ModelSpec]

    @model_validator(mode="after")
    def _honoured_everywhere(self) -> Spec:
        for name, model in self.models.items():
            for step_name in ("preprocess", "model"):
                step: Step = getattr(model.steps, step_name)
                missing = set(self.targets) - set(step.instances)
                if missing:
                    raise ValueError(
                        f"models.{name}.steps.{step_name}.instances lacks a count for "
                        f"target(s) {sorted(missing)}"
                    )
            missing = set(self.targets) - set(model.variants.serve)
            if missing:
                raise ValueError(f"models.{name}.variants.serve names no variant for target(s) "
                                 f"{sorted(missing)}")
            for target_name, variant in model.variants.serve.items():
                target = self.targets[target_name]
                if variant not in target.servable():
                    raise ValueError(
                        f"models.{name}.variants.serve.{target_name} is {variant!r}, which the "
                        f"{target_name} target cannot serve (gpu: {target.gpu}); it serves "
                        f"{sorted(target.servable())}")
        return self

    def with_fused_steps(self, target: TargetName, fused: bool) -> Spec:
        """A copy of the spec with `fuse_python_steps` of one target set (benchmarks, tests)."""
        changed = self.targets[target].model_copy(update={"fuse_python_steps": fused})
        return self.model_copy(update={"targets": {**self.targets, target: changed}})

    def model_behind(self, entry: str) -> tuple[str, ModelSpec] | None:
        """The model behind an entry point a repository serves: the one named so, or the
        longest name `<name>_...` starts with (the packed entry point `churn_packed` is
        churn's); None for an entry point no model of the spec makes."""
        found = [n for n in self.models if entry == n or entry.startswith(f"{n}_")]
        if not found:
            return None
        name = max(found, key=len)
        return name, self.models[name]

    def only(self, *names: str) -> Spec:
        """A copy of the spec that keeps only the named models (tests, benchmarks)."""
        unknown = set(names) - set(self.models)
        if unknown:
            raise KeyError(f"the spec has no model(s) {sorted(unknown)}; it has "
                           f"{sorted(self.models)}")
        return self.model_copy(update={"models": {n: self.models[n] for n in names}})


def load_spec(path: Path = DEFAULT_SPEC) -> Spec:
    """Load and check the spec; the error says which field is wrong and why."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise SpecError(f"model spec {path} not found") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"model spec {path} is not valid YAML: {exc}") from exc
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"model spec {path} is invalid:\n{exc}") from exc
