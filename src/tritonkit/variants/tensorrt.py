"""TensorRT engines of an ONNX variant, labelled with what they can run on.

An engine (plan) loads only on the TensorRT version and GPU architecture it was built with, so
it must be built by the TensorRT that the serving Triton release ships: with the ``tensorrt``
Python API on the serving host (`build_engine`), or with ``trtexec`` inside the matching NGC
image (`trtexec_command`, for a compose service). Each file is named for its precision, compute
capability and TensorRT version (``model.fp16.sm90.trt10.13.plan``), so that Triton's
``cc_model_filenames`` can map each GPU to its engine. Where no GPU or TensorRT is present every
entry point says so and nothing is written: an engine is never faked::

    reason = tensorrt_available()           # None, or "no NVIDIA GPU: nvidia-smi not found"
    if reason is None:
        info = build_engine(Path("fp32.onnx"), Path("engines"), "fp16", max_batch_size=256)
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import onnx

from tritonkit.errors import TritonKitError

logger = logging.getLogger(__name__)

Precision = Literal["fp16", "int8"]
#: Input name -> (min, opt, max) shapes of the optimization profile.
Shapes = Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]


class TensorRTUnavailable(TritonKitError):
    """No usable TensorRT or GPU here: the message says which, and the engine is not built."""


@dataclasses.dataclass(frozen=True)
class EngineInfo:
    """A built engine and what it can be loaded by."""

    path: Path
    precision: str
    tensorrt_version: str
    compute_capability: str  # "9.0"
    source: str  # the ONNX file it was built from

    @property
    def file_name(self) -> str:
        return self.path.name

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path.name, "precision": self.precision,
                "tensorrt_version": self.tensorrt_version,
                "compute_capability": self.compute_capability, "source": self.source}


def engine_file_name(precision: str, compute_capability: str, tensorrt_version: str) -> str:
    """``model.<precision>.sm<cc>.trt<major.minor>.plan``: ``model.fp16.sm90.trt10.13.plan``."""
    sm = compute_capability.replace(".", "")
    major_minor = ".".join(tensorrt_version.split(".")[:2])
    return f"model.{precision}.sm{sm}.trt{major_minor}.plan"


def _gpu_reason() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA GPU: nvidia-smi not found"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no NVIDIA GPU: nvidia-smi failed ({exc})"
    if out.returncode != 0 or "GPU" not in out.stdout:
        detail = (out.stderr or out.stdout).strip().splitlines()
        return f"no NVIDIA GPU: nvidia-smi -L says {detail[-1] if detail else 'nothing'!r}"
    return None


def tensorrt_available() -> str | None:
    """None where engines can be built here; otherwise why not."""
    reason = _gpu_reason()
    if reason is not None:
        return reason
    try:
        importlib.import_module("tensorrt")
    except ImportError as exc:
        return (f"the tensorrt Python package is not installed ({exc}): pip install "
                "'tritonkit[gpu]', or build with trtexec in the NGC image (trtexec_command)")
    return None


def _compute_capability() -> str:
    smi = shutil.which("nvidia-smi") or "nvidia-smi"
    out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip().splitlines()[0].strip()


def profile_shapes(onnx_path: Path, max_batch_size: int, opt_batch_size: int | None = None,
                   fixed: Mapping[str, int] | None = None
                   ) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """Min/opt/max shapes for every input: batch 1 / `opt_batch_size` / `max_batch_size`;
    other dimensions from the graph, or from `fixed` (dimension name -> size) where dynamic.

    Raises:
        ValueError: when a non-batch dimension is dynamic and `fixed` does not size it.
    """
    fixed = dict(fixed or {})
    opt = opt_batch_size or max(1, max_batch_size // 2)
    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    shapes: dict[str, tuple[list[int], list[int], list[int]]] = {}
    for tensor in model.graph.input:
        if tensor.name in initializers:
            continue
        rest = []
        for dim in list(tensor.type.tensor_type.shape.dim)[1:]:
            if dim.HasField("dim_value"):
                rest.append(dim.dim_value)
            elif dim.dim_param in fixed:
                rest.append(fixed[dim.dim_param])
            else:
                raise ValueError(
                    f"input {tensor.name!r} has a dynamic dimension {dim.dim_param or '?'!r}: "
                    "pass shapes=... or fixed={name: size}")
        shapes[tensor.name] = ([1, *rest], [opt, *rest], [max_batch_size, *rest])
    return shapes


def build_engine(
    onnx_path: Path,
    out_dir: Path,
    precision: Precision,
    *,
    shapes: Shapes | None = None,
    max_batch_size: int | None = None,
    workspace_bytes: int = 1 << 30,
) -> EngineInfo:
    """Build a TensorRT engine of `onnx_path` with the tensorrt Python API.

    FP16: from the FP32 graph, TensorRT choosing FP16 kernels where it gains. INT8: from the
    QDQ ``int8_static`` graph, i.e. explicit quantization: the graph's Q/DQ scales are used
    as they are (symmetric INT8, zero points 0), no calibrator runs here.

    Args:
        shapes: input name -> (min, opt, max) shape; default: `profile_shapes` with
            `max_batch_size`.

    Raises:
        TensorRTUnavailable: without a GPU or the tensorrt package (nothing is written).
        TritonKitError: when TensorRT cannot parse or build the graph.
    """
    reason = tensorrt_available()
    if reason is not None:
        raise TensorRTUnavailable(f"TensorRT engine not built: {reason}")
    if precision not in ("fp16", "int8"):
        raise ValueError(f"precision {precision!r}: choose fp16 or int8")
    if shapes is None:
        if max_batch_size is None:
            raise ValueError("pass shapes=... or max_batch_size=...")
        profile_of: Shapes = profile_shapes(onnx_path, max_batch_size)
    else:
        profile_of = shapes
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TritonKitError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    else:  # explicit quantization: the QDQ nodes carry the scales; FP16 for what stays float
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile_of.items():
        profile.set_shape(name, tuple(low), tuple(opt), tuple(high))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TritonKitError(f"TensorRT failed to build a {precision} engine of {onnx_path}: "
                             "see the TensorRT log above")
    capability = _compute_capability()
    version = str(trt.__version__)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / engine_file_name(precision, capability, version)
    path.write_bytes(bytes(serialized))
    logger.info("built %s (TensorRT %s, compute capability %s)", path, version, capability)
    return EngineInfo(path, precision, version, capability, str(onnx_path))


def trtexec_command(
    onnx_path: str,
    engine_path: str,
    precision: Precision,
    shapes: Shapes,
    *,
    workspace_bytes: int = 1 << 30,
    trtexec: str = "/usr/src/tensorrt/bin/trtexec",
) -> list[str]:
    """argv for trtexec inside the NGC Triton image, building the same engine as
    `build_engine` (paths as the container sees them; name the engine with
    `engine_file_name` once the container's TensorRT version and GPU are known)."""
    def dims(which: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in shape[which])}"
                        for name, shape in shapes.items())

    argv = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
            f"--minShapes={dims(0)}", f"--optShapes={dims(1)}", f"--maxShapes={dims(2)}",
            f"--memPoolSize=workspace:{workspace_bytes // (1 << 20)}M"]
    argv += ["--fp16"] if precision == "fp16" else ["--int8", "--fp16"]
    return argv
