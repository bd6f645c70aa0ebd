"""The spec's serving parts: targets, steps, batching, variants and what every model entry
shares (`ModelBase`). Imported through `tritonkit.spec`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Target(Frozen):
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


class QueuePolicy(Frozen):
    """How a step's queue bounds overload: past `max_size` waiting requests, or `timeout_us` of
    waiting, a request is turned away at once (Triton answers it with an error naming the
    cause) instead of queueing without bound and answering everyone late."""

    max_size: int = Field(gt=0, description="requests that may wait; one more is refused")
    timeout_us: int = Field(
        gt=0, le=60_000_000,
        description="the longest a request may wait in the queue before it is refused")


class DynamicBatching(Frozen):
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


class TensorRT(Frozen):
    """How the production target uses TensorRT for an ONNX variant (onnxruntime's TensorRT
    execution accelerator) and for TensorRT engines."""

    enabled: bool = True
    max_workspace_size_bytes: int = Field(1 << 30, gt=0)
    engine_cache_path: str = Field(
        "/engine_cache",
        description="where onnxruntime keeps the engines it builds; a volume in "
        "docker-compose.yml so a restart does not build them again",
    )


class Step(Frozen):
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


class Steps(Frozen):
    """preprocess (python) -> model (the ONNX variant); fused targets run both in one step."""

    preprocess: Step
    model: Step


class Variants(Frozen):
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


class VersionPolicy(Frozen):
    latest: int = Field(1, ge=1)


class CardText(Frozen):
    """What a model card says that no measurement can: what the model is for, what it learnt
    from, where it stops (`tritonkit.builder.model_card`)."""

    intended_use: str
    training_data: str
    limitations: str


class ModelBase(Frozen):
    description: str
    card: CardText | None = Field(
        None, description="the model card's intended use, training data and limitations; "
        "none: the card says they are not described")
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
    def _batch_sizes_fit(self) -> ModelBase:
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
