"""The model spec: `configs/models.yaml` loaded into frozen, self-checking pydantic models.

Every script reads models, precisions, batching, instance groups and targets from here, never
from constants of its own::

    spec = load_spec()                               # configs/models.yaml
    spec.pipelines["churn"].steps.model.instances["embedded"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tritonkit.errors import SpecError
from tritonkit.paths import PROJECT_ROOT

DEFAULT_SPEC = PROJECT_ROOT / "configs" / "models.yaml"
TargetName = Literal["embedded", "production"]


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

    @model_validator(mode="after")
    def _fusable(self) -> Target:
        if self.fuse_python_steps and self.onnx_runtime != "python":
            raise ValueError(
                "fuse_python_steps needs onnx_runtime: python (a native onnxruntime model "
                "cannot share a python step)"
            )
        return self


class DynamicBatching(_Frozen):
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_us: int = Field(0, ge=0, le=1_000_000)


class TensorRT(_Frozen):
    enabled: bool = True
    max_workspace_size_bytes: int = Field(1 << 30, gt=0)


class Step(_Frozen):
    """One model of the ensemble: instances per target and its dynamic batcher."""

    instances: dict[str, int]
    dynamic_batching: DynamicBatching = DynamicBatching(max_queue_delay_us=0)
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    tensorrt: TensorRT | None = None

    @field_validator("instances")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 1}
        if bad:
            raise ValueError(f"instance counts must be >= 1, got {bad}")
        return value


class Steps(_Frozen):
    preprocess: Step
    model: Step


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


class VersionPolicy(_Frozen):
    latest: int = Field(1, ge=1)


class DriftMetrics(_Frozen):
    """Binned input and prediction counters that the python steps publish on Triton's /metrics
    for the monitoring sidecar (`tritonkit.drift.binning`)."""

    enabled: bool = True
    flush_interval_s: float = Field(
        1.0, gt=0, le=60,
        description="how often a step turns its counts into metric calls (~23 µs each)",
    )


class Pipeline(_Frozen):
    """An ensemble of preprocess -> model, and how its model is trained."""

    description: str
    version: int = Field(ge=1)
    max_batch_size: int = Field(gt=0, le=4096)
    risk_thresholds: RiskThresholds
    training: Training
    version_policy: VersionPolicy = VersionPolicy(latest=1)
    steps: Steps
    warmup_batch_sizes: tuple[int, ...] = ()
    drift_metrics: DriftMetrics = DriftMetrics(enabled=True, flush_interval_s=1.0)
    response_cache: bool = Field(
        False,
        description="answer a request identical to an earlier one from Triton's response cache "
        "(the ensemble's `response_cache`; the server needs a cache size, "
        "ServerSettings.cache_size_bytes)",
    )

    @model_validator(mode="after")
    def _warmup_fits(self) -> Pipeline:
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


class Spec(_Frozen):
    targets: dict[TargetName, Target]
    pipelines: dict[str, Pipeline]

    @model_validator(mode="after")
    def _instances_for_every_target(self) -> Spec:
        for name, pipeline in self.pipelines.items():
            for step_name in ("preprocess", "model"):
                step: Step = getattr(pipeline.steps, step_name)
                missing = set(self.targets) - set(step.instances)
                if missing:
                    raise ValueError(
                        f"pipelines.{name}.steps.{step_name}.instances lacks a count for "
                        f"target(s) {sorted(missing)}"
                    )
        return self


    def with_fused_steps(self, target: TargetName, fused: bool) -> Spec:
        """A copy of the spec with `fuse_python_steps` of one target set (benchmarks, tests)."""
        changed = self.targets[target].model_copy(update={"fuse_python_steps": fused})
        return self.model_copy(update={"targets": {**self.targets, target: changed}})


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
