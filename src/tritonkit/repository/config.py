"""Triton model configurations, built through Triton's own schema (`model_config_pb2`).

Each function returns a `ModelConfig` message; `write_config` writes it as `config.pbtxt` and
parses it back, so a malformed config fails here and not at server start::

    step = ("churn_fused", {"tenure": "tenure"}, {"risk_level": "risk_level"})
    config = ensemble_config(name="churn", max_batch_size=256, steps=[step],
                             inputs=[tensor("tenure", "TYPE_FP32", [1])],
                             outputs=[tensor("risk_level", "TYPE_STRING", [1])])
    write_config(config, Path("model_repository/churn"))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from tritonkit import spec as spec_module

DataType = mc.DataType


def tensor(name: str, data_type: str, dims: Sequence[int]) -> dict[str, object]:
    """One input or output entry (dims exclude the batch dimension)."""
    return {"name": name, "data_type": data_type, "dims": list(dims)}


def _batching(step: spec_module.Step) -> dict[str, object]:
    batching: dict[str, object] = {
        "max_queue_delay_microseconds": step.dynamic_batching.max_queue_delay_us,
    }
    if step.dynamic_batching.preferred_batch_size:
        batching["preferred_batch_size"] = list(step.dynamic_batching.preferred_batch_size)
    queue = step.dynamic_batching.queue
    if queue is not None:
        batching["default_queue_policy"] = {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": queue.timeout_us,
            "max_queue_size": queue.max_size,
        }
    return batching


def _common(
    name: str, model: spec_module.ModelSpec, step: spec_module.Step, target: str, kind: str
) -> dict[str, object]:
    common: dict[str, object] = {
        "name": name,
        "max_batch_size": model.max_batch_size,
        "version_policy": {"latest": {"num_versions": model.version_policy.latest}},
        "instance_group": [{"kind": kind, "count": step.instances[target]}],
    }
    if step.dynamic_batching.enabled:
        common["dynamic_batching"] = _batching(step)
    return common


def python_step_config(
    *,
    name: str,
    model: spec_module.ModelSpec,
    step: spec_module.Step,
    target: str,
    inputs: Sequence[Mapping[str, object]],
    outputs: Sequence[Mapping[str, object]],
    parameters: Mapping[str, str] | None = None,
    warmup: Sequence[Mapping[str, object]] = (),
    response_cache: bool = False,
) -> mc.ModelConfig:
    """A python-backend step; it always runs on CPU, whatever the target. `response_cache`
    for a step that clients call directly, as `ensemble_config`'s."""
    config: dict[str, object] = {
        **_common(name, model, step, target, "KIND_CPU"),
        "backend": "python",
        "input": list(inputs),
        "output": list(outputs),
        "parameters": {k: {"string_value": v} for k, v in (parameters or {}).items()},
        "model_warmup": list(warmup),
    }
    if response_cache:
        config["response_cache"] = {"enable": True}
    return json_format.ParseDict(config, mc.ModelConfig())


#: Triton's TensorRT precision_mode for the variant an ONNX model step serves.
_TENSORRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8_static": "INT8"}


def onnx_step_config(
    *,
    name: str,
    model: spec_module.ModelSpec,
    step: spec_module.Step,
    target: str,
    gpu: bool,
    variant: str,
    inputs: Sequence[Mapping[str, object]],
    outputs: Sequence[Mapping[str, object]],
    warmup: Sequence[Mapping[str, object]] = (),
) -> mc.ModelConfig:
    """An ONNX variant on Triton's native onnxruntime backend (production target); on GPUs
    with onnxruntime's TensorRT accelerator in the variant's precision, its engines cached
    under the spec's `engine_cache_path` (a volume, so a restart does not rebuild them)."""
    config: dict[str, object] = {
        **_common(name, model, step, target, "KIND_GPU" if gpu else "KIND_CPU"),
        "platform": "onnxruntime_onnx",
        "default_model_filename": "model.onnx",
        "input": list(inputs),
        "output": list(outputs),
        "model_warmup": list(warmup),
    }
    if gpu and model.tensorrt.enabled:
        config["optimization"] = {
            "execution_accelerators": {
                "gpu_execution_accelerator": [
                    {
                        "name": "tensorrt",
                        "parameters": {
                            "precision_mode": _TENSORRT_PRECISION[variant],
                            "max_workspace_size_bytes": str(
                                model.tensorrt.max_workspace_size_bytes),
                            "trt_engine_cache_enable": "1",
                            "trt_engine_cache_path":
                                f"{model.tensorrt.engine_cache_path}/{name}",
                        },
                    }
                ]
            }
        }
    return json_format.ParseDict(config, mc.ModelConfig())


def tensorrt_plan_config(
    *,
    name: str,
    model: spec_module.ModelSpec,
    step: spec_module.Step,
    target: str,
    engines: Mapping[str, str],
    inputs: Sequence[Mapping[str, object]],
    outputs: Sequence[Mapping[str, object]],
    warmup: Sequence[Mapping[str, object]] = (),
) -> mc.ModelConfig:
    """A TensorRT engine step. `engines` maps a GPU's compute capability ("9.0") to the plan
    file built for it: Triton loads the one for the GPU it runs on (`cc_model_filenames`), and a
    GPU with no plan of its own fails to load instead of running an engine built elsewhere."""
    if not engines:
        raise ValueError(f"{name}: no TensorRT engines to serve (build them on a GPU host)")
    config: dict[str, object] = {
        **_common(name, model, step, target, "KIND_GPU"),
        "platform": "tensorrt_plan",
        "cc_model_filenames": dict(engines),
        "input": list(inputs),
        "output": list(outputs),
        "model_warmup": list(warmup),
    }
    return json_format.ParseDict(config, mc.ModelConfig())


def ensemble_config(
    *,
    name: str,
    max_batch_size: int,
    inputs: Sequence[Mapping[str, object]],
    outputs: Sequence[Mapping[str, object]],
    steps: Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]],
    response_cache: bool = False,
) -> mc.ModelConfig:
    """An ensemble; a step is (model, {step input: ensemble tensor}, {step output: tensor}).

    With `response_cache`, Triton answers a request whose inputs equal an earlier one's from its
    cache without running the steps (the server needs `--cache-config`).
    """
    config: dict[str, object] = {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": max_batch_size,
        "input": list(inputs),
        "output": list(outputs),
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": model,
                    "model_version": -1,
                    "input_map": dict(input_map),
                    "output_map": dict(output_map),
                }
                for model, input_map, output_map in steps
            ]
        },
    }
    if response_cache:
        config["response_cache"] = {"enable": True}
    return json_format.ParseDict(config, mc.ModelConfig())


def write_config(config: mc.ModelConfig, model_dir: Path) -> Path:
    """Write `config.pbtxt` and parse it back through `model_config_pb2`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(config))
    if read_config(path) != config:
        raise AssertionError(f"{path} does not read back as the config that was written")
    return path


def read_config(path: Path) -> mc.ModelConfig:
    """Parse a `config.pbtxt` into a `ModelConfig` (raises on any schema error)."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())
