"""Write each ONNX variant of a source graph, every one through its library, never by hand.

Variants of one FP32 source graph (a model's core, before any head is appended):

- ``optimized``: onnxruntime's offline graph optimization
  (``SessionOptions.optimized_model_filepath``)
- ``int8_static``: ``onnxruntime.quantization.quantize_static``, QDQ format, calibrated on feeds
  the caller passes (rows of the training split, never the held-out ones)
- ``int8_dynamic``: ``onnxruntime.quantization.quantize_dynamic`` (weights INT8, activations
  quantized per batch at run time)
- ``fp16``: ``onnxconverter_common.float16.convert_float_to_float16``, inputs and outputs FP32

TensorRT engines (``tensorrt_fp16``, ``tensorrt_int8``) are built by `tritonkit.variants.tensorrt`.
Every writer is deterministic: the same source and options give a byte-identical file::

    make_variant("int8_static", Path("fp32.onnx"), Path("int8_static.onnx"),
                 calibration=[{"features": rows} for rows in batches], per_channel=True)
    VARIANT_KINDS["fp16"](Path("fp32.onnx"), Path("fp16.onnx"))
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

logger = logging.getLogger(__name__)

#: Every variant name the project uses, in the order a model card lists them.
VARIANT_NAMES: tuple[str, ...] = (
    "fp32", "optimized", "int8_static", "int8_dynamic", "fp16", "tensorrt_fp16", "tensorrt_int8",
)
Feeds = Iterable[Mapping[str, np.ndarray]]
#: Calibration data: feeds (input name -> array), or a function that returns them afresh.
Calibration = Feeds | Callable[[], Feeds]
OptimizationLevel = Literal["basic", "extended", "all"]
CalibrationName = Literal["minmax", "entropy", "percentile", "distribution"]

_LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_CALIBRATION = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "distribution": CalibrationMethod.Distribution,
}
_QUANT_TYPES = {"QInt8": QuantType.QInt8, "QUInt8": QuantType.QUInt8}
#: Ops that int8_static quantizes by default: those with INT8 kernels that gain.
STATIC_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm", "Conv")
#: int8_static options for a TensorRT INT8 engine (explicit quantization): symmetric INT8
#: activations (TensorRT takes zero points of 0 only) and FP32 biases (it dequantizes INT8,
#: not the INT32 of quantized biases).
TENSORRT_STATIC: dict[str, Any] = {
    "activation_type": "QInt8", "symmetric_activations": True, "quantize_bias": False,
}


def _save(model: onnx.ModelProto, out: Path) -> Path:
    """Write `model` in one file with fixed settings, so equal graphs give equal bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.SerializeToString(deterministic=True))
    return out


def _load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=True)


def fp32(source: Path, out: Path) -> Path:
    """The source graph itself, saved as the other variants are."""
    return _save(_load(source), out)


def optimized(source: Path, out: Path, *, level: OptimizationLevel = "extended") -> Path:
    """onnxruntime's graph optimizations, applied once, offline, and saved.

    ``extended`` (the default) adds fusions into ``com.microsoft`` contrib ops (FusedMatMul,
    Gelu, LayerNormalization, Attention, ...). onnxruntime runs them on CPU, and the CUDA
    provider runs most; TensorRT runs none (`tritonkit.variants.providers.fallback_report`
    lists them), so GPU targets serve ``fp32`` or ``fp16`` instead. ``all`` adds layout
    transformations (NCHWc) for the CPU it runs on: a saved graph is then tied to that
    CPU, which is why it is not the default. ``basic`` keeps standard ops (constant folding,
    redundant-node elimination) and suits every provider.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[level]
    options.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="tritonkit-opt-") as tmp:
        written = Path(tmp) / "optimized.onnx"
        options.optimized_model_filepath = str(written)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        model = _load(written)
    model.doc_string = f"onnxruntime {ort.__version__} offline graph optimization, level {level}"
    return _save(model, out)


class FeedReader(CalibrationDataReader):
    """onnxruntime's calibration reader over feeds held in memory."""

    def __init__(self, calibration: Calibration) -> None:
        feeds = calibration() if callable(calibration) else calibration
        self._feeds = [{k: np.asarray(v) for k, v in feed.items()} for feed in feeds]
        if not self._feeds:
            raise ValueError("calibration gave no feeds: pass rows of the training split")
        self._iterator: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    @property
    def shapes(self) -> set[tuple[tuple[str, tuple[int, ...]], ...]]:
        return {tuple(sorted((k, v.shape) for k, v in f.items())) for f in self._feeds}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = iter(self._feeds)


def _pre_process(source: Path, tmp: Path) -> Path:
    """onnxruntime's `quant_pre_process`: symbolic shape inference and basic optimization, so
    the quantizer knows every tensor's type and sees folded constants."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "pre.onnx"
    try:
        quant_pre_process(str(source), str(out), auto_merge=True)
    except Exception as exc:  # the symbolic shape inference gives up on some contrib ops
        logger.info("quant_pre_process: %s; retrying without symbolic shape inference", exc)
        quant_pre_process(str(source), str(out), skip_symbolic_shape=True)
    return out


def int8_static(
    source: Path,
    out: Path,
    *,
    calibration: Calibration,
    per_channel: bool = True,
    reduce_range: bool = False,
    activation_type: Literal["QInt8", "QUInt8"] = "QUInt8",
    symmetric_activations: bool = False,
    weight_type: Literal["QInt8", "QUInt8"] = "QInt8",
    op_types_to_quantize: Sequence[str] | None = STATIC_OP_TYPES,
    nodes_to_exclude: Sequence[str] = (),
    calibration_method: CalibrationName = "minmax",
    matmul_const_b_only: bool = True,
    quantize_bias: bool = True,
    pre_process: bool = True,
    extra_options: Mapping[str, Any] | None = None,
) -> Path:
    """INT8 static quantization in QDQ format, calibrated on `calibration`'s feeds.

    Defaults suit onnxruntime on x86 CPUs: UINT8 activations with INT8 weights is the pair
    its integer kernels are fast for (INT8 x INT8 ran 2.2x slower than FP32 on an AVX2 CPU);
    `reduce_range` (7-bit weights) avoids the u8s8 saturation of CPUs without VNNI, at a cost
    in accuracy. For a TensorRT engine (explicit quantization) pass `TENSORRT_STATIC`: INT8
    activations with zero points of 0 and FP32 biases, the only Q/DQ TensorRT parses.

    On all-MiniLM-L6-v2 (one thread, AVX2 CPU), static per-tensor activation ranges reached a
    mean cosine of only 0.935 to the FP32 graph (minmax, entropy or percentile alike) unless
    the FFN down-projections (``.../output/dense/MatMul``) stay FP32: then 0.992 at 0.69x the
    FP32 latency, where `int8_dynamic` gives 0.993 at 0.47x.

    Only the ops where INT8 arithmetic gains are quantized by default (`STATIC_OP_TYPES`);
    quantizing the outputs of Add or Sigmoid adds error and Q/DQ pairs and saves nothing. Note
    that `pre_process` fuses MatMul + Add into Gemm. `matmul_const_b_only` keeps MatMuls of two
    activations (attention scores) in FP32: in QDQ format that is done by excluding those nodes,
    since onnxruntime's QDQ quantizer reads the option in QOperator format only. Histogram
    methods (entropy, percentile, distribution) need feeds of one shape: pad token sequences to
    a fixed length.
    """
    reader = FeedReader(calibration)
    if calibration_method != "minmax" and len(reader.shapes) > 1:
        raise ValueError(
            f"{calibration_method} calibration needs feeds of one shape, got "
            f"{len(reader.shapes)} shapes: pad the feeds to one length, or use minmax"
        )
    options: dict[str, Any] = {"MatMulConstBOnly": matmul_const_b_only,
                               "ActivationSymmetric": symmetric_activations,
                               "QuantizeBias": quantize_bias}
    options.update(extra_options or {})
    with tempfile.TemporaryDirectory(prefix="tritonkit-int8s-") as tmp_name:
        tmp = Path(tmp_name)
        prepared = _pre_process(source, tmp) if pre_process else source
        excluded = list(nodes_to_exclude)
        if matmul_const_b_only:
            excluded += [n for n in activation_matmuls(_load(prepared)) if n not in excluded]
        written = tmp / "int8_static.onnx"
        quantize_static(
            str(prepared), str(written), reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types_to_quantize or []) or None,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=_QUANT_TYPES[activation_type],
            weight_type=_QUANT_TYPES[weight_type],
            nodes_to_exclude=excluded,
            calibrate_method=_CALIBRATION[calibration_method],
            extra_options=options,
        )
        model = _load(written)
    model.doc_string = (
        f"onnxruntime {ort.__version__} quantize_static QDQ: activations {activation_type}"
        f"{' symmetric' if symmetric_activations else ''}, weights {weight_type}"
        f"{' per-channel' if per_channel else ''}{' reduce_range' if reduce_range else ''}, "
        f"{calibration_method} calibration on {len(reader._feeds)} feeds, "
        f"{len(excluded)} node(s) kept FP32"
    )
    return _save(model, out)


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes of which neither input is a weight (attention scores and
    attention-weighted values in a transformer)."""
    weights = {i.name for i in model.graph.initializer}
    weights |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not any(i in weights for i in n.input)]


def int8_dynamic(
    source: Path,
    out: Path,
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    weight_type: Literal["QInt8", "QUInt8"] = "QInt8",
    op_types_to_quantize: Sequence[str] | None = None,
    nodes_to_exclude: Sequence[str] = (),
    pre_process: bool = True,
    calibration: Calibration | None = None,
    extra_options: Mapping[str, Any] | None = None,
) -> Path:
    """INT8 dynamic quantization: INT8 weights, activations quantized per batch at run time.

    Per-channel weights by default: on all-MiniLM-L6-v2 they lifted the mean cosine to the
    FP32 graph from 0.961 (per-tensor) to 0.993 at the same speed. INT8 weights with UINT8
    activations (the default) ran at 0.45x the FP32 latency, UINT8 weights at 0.72x.
    `calibration` is accepted and unused, so every kind takes the same call.
    """
    del calibration
    with tempfile.TemporaryDirectory(prefix="tritonkit-int8d-") as tmp_name:
        tmp = Path(tmp_name)
        prepared = _pre_process(source, tmp) if pre_process else source
        written = tmp / "int8_dynamic.onnx"
        quantize_dynamic(
            str(prepared), str(written),
            op_types_to_quantize=list(op_types_to_quantize or []) or None,
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=_QUANT_TYPES[weight_type],
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options=dict(extra_options or {}),
        )
        model = _load(written)
    model.doc_string = (
        f"onnxruntime {ort.__version__} quantize_dynamic: weights {weight_type}"
        f"{' per-channel' if per_channel else ''}{' reduce_range' if reduce_range else ''}, "
        f"{len(nodes_to_exclude)} node(s) kept FP32"
    )
    return _save(model, out)


def fp16(source: Path, out: Path, *, op_block_list: Sequence[str] | None = None) -> Path:
    """FP16 weights and arithmetic for GPUs, inputs and outputs kept FP32 (Cast nodes at the
    edges), so clients and the head see the same tensors as from the FP32 graph.

    On a CPU, onnxruntime runs most FP16 ops through casts to FP32: slower than FP32, and
    meant for the CUDA and TensorRT providers.
    """
    from onnxconverter_common import float16

    model = _load(source)
    # Cast nodes stay FP32 (the converter casts around them): converted, a Cast to FLOAT
    # keeps `to=FLOAT` while its output is retyped FP16, which onnxruntime refuses at load
    # ("Type (tensor(float16)) of output arg (/Cast_output_0) of node (/Cast) does not match
    # expected type (tensor(float))"); a torch export of mean pooling has one.
    blocked = (list(op_block_list) if op_block_list is not None
               else [*float16.DEFAULT_OP_BLOCK_LIST, "Cast"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(model, keep_io_types=True,
                                                     op_block_list=blocked)
    for warning in caught:  # e.g. weights below FP16's smallest value, clamped
        logger.info("fp16: %s", warning.message)
    converted.doc_string = "onnxconverter-common convert_float_to_float16, keep_io_types=True"
    return _save(converted, out)


def _tensorrt_elsewhere(source: Path, out: Path, **_: Any) -> Path:
    raise ValueError(
        "TensorRT variants are engines, not ONNX files: build them with "
        "tritonkit.variants.tensorrt.build_engine"
    )


def _static(source: Path, out: Path, *, calibration: Calibration | None = None,
            **options: Any) -> Path:
    if calibration is None:
        raise ValueError("int8_static needs calibration feeds (rows of the training split)")
    return int8_static(source, out, calibration=calibration, **options)


def _without_calibration(writer: Callable[..., Path]) -> Callable[..., Path]:
    def call(source: Path, out: Path, *, calibration: Calibration | None = None,
             **options: Any) -> Path:
        del calibration
        return writer(source, out, **options)

    call.__doc__ = writer.__doc__
    return call


#: Variant name -> writer(source, out, *, calibration=None, **options) -> out.
VARIANT_KINDS: dict[str, Callable[..., Path]] = {
    "fp32": _without_calibration(fp32),
    "optimized": _without_calibration(optimized),
    "int8_static": _static,
    "int8_dynamic": int8_dynamic,
    "fp16": _without_calibration(fp16),
    "tensorrt_fp16": _tensorrt_elsewhere,
    "tensorrt_int8": _tensorrt_elsewhere,
}


def make_variant(
    kind: str, source: Path, out: Path, *, calibration: Calibration | None = None,
    **options: Any,
) -> Path:
    """Write variant `kind` of `source` to `out`; `options` go to that kind's writer.

    Raises:
        ValueError: for an unknown kind, a TensorRT kind, or int8_static without calibration.
    """
    writer = VARIANT_KINDS.get(kind)
    if writer is None:
        raise ValueError(f"unknown variant {kind!r}: choose one of {', '.join(VARIANT_NAMES)}")
    return writer(Path(source), Path(out), calibration=calibration, **options)

