"""Which nodes of an ONNX graph each onnxruntime execution provider would hand back to the CPU.

A GPU target must serve a graph its providers run whole: every node that the CUDA or TensorRT
provider lacks runs on the CPU provider instead, with a device copy on each side of it.
`fallback_report` lists those nodes and why, from the providers' published operator lists (the
CPU wheel of onnxruntime carries no CUDA kernel registry to ask)::

    fallback_report(onnx.load("model.onnx"), "TensorrtExecutionProvider")
    # [Fallback(node='LinearClassifier', op_type='LinearClassifier', domain='ai.onnx.ml',
    #           reason='the ai.onnx.ml domain has no kernels on TensorrtExecutionProvider'), ...]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
PROVIDERS = (CPU, CUDA, TENSORRT)


def _ops(names: str) -> frozenset[str]:
    return frozenset(names.split())


#: Operators of the ONNX domain with a CUDA kernel: onnxruntime docs/OperatorKernels.md
#: ("Operators implemented by CUDAExecutionProvider", microsoft/onnxruntime commit 001d12d,
#: the 1.2x series). Constant is folded into an initializer before kernels are chosen.
CUDA_ONNX_OPS: frozenset[str] = _ops("""
Abs Add Affine And ArgMax ArgMin Attention AveragePool BatchNormalization Cast Ceil Clip Compress
Concat ConcatFromSequence Constant ConstantOfShape Conv ConvTranspose Cos Crop CumSum
DepthToSpace DequantizeLinear Div Dropout DynamicSlice Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalMaxPool
Greater GreaterOrEqual GridSample HardSigmoid HardSwish Identity If ImageScaler
InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop MatMul MatMulInteger Max MaxPool Min Mod Mul Neg NonZero Not OneHot Or PRelu
Pad ParametricSoftplus Pow QuantizeLinear RMSNormalization RNN RandomNormal RandomNormalLike
RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RoiAlign RotaryEmbedding Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert
SequenceLength Shape Shrink Sigmoid Sign SimplifiedLayerNormalization Sin Size Slice Softmax
Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh TensorScatter ThresholdedRelu
Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""")
#: com.microsoft contrib operators with a CUDA kernel (same source). Not among them, so
#: CPU-only: DynamicQuantizeMatMul, MatMulIntegerToFloat, QGemm, the QLinear* family, NCHWc ops.
CUDA_CONTRIB_OPS: frozenset[str] = _ops("""
Attention BeamSearch BiasAdd BiasDropout BiasGelu BiasSoftmax BiasSplitGelu BitmaskBiasDropout
BitmaskDropout ComplexMul ComplexMulConj ConvTransposeWithDynamicPads DecoderAttention
DecoderMaskedMultiHeadAttention DecoderMaskedSelfAttention DequantizeLinear DequantizeWithOrder
DynamicTimeWarping EmbedLayerNormalization FastGelu FusedConv FusedMatMul
GatedRelativePositionBias GatherBlockQuantized Gelu GemmFloat8 GemmaRotaryEmbedding GreedySearch
GridSample GroupNorm GroupQueryAttention Inverse Irfft LongformerAttention MatMulBnb4 MatMulNBits
MoE MultiHeadAttention NGramRepeatBlock NhwcConv PackedAttention PackedMultiHeadAttention
PagedAttention QAttention QMoE QOrderedAttention QOrderedGelu QOrderedLayerNormalization
QOrderedLongformerAttention QOrderedMatMul QuantizeLinear QuantizeWithOrder QuickGelu
RelativePositionBias RemovePadding RestorePadding Rfft RotaryEmbedding Sampling SkipGroupNorm
SkipLayerNormalization SkipSimplifiedLayerNormalization SparseAttention TransposeMatMul Trilu
UnfoldTensor WhisperBeamSearch
""")
#: ONNX operators TensorRT's ONNX parser supports ("Y" rows of onnx/onnx-tensorrt
#: docs/operators.md, TensorRT 10.15, opsets 9-24; the pinned tensorrt-cu12 is 10.13, whose
#: list differs from it in newer operators only). Only the ONNX domain is parsed: every
#: com.microsoft contrib op and every ai.onnx.ml op falls back.
TENSORRT_OPS: frozenset[str] = _ops("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape
Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum
Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization
Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu
QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal
ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign
RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub
Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""")

_STANDARD_DOMAINS = ("", "ai.onnx")


class Fallback(NamedTuple):
    """One node that a provider would not run, and why."""

    node: str
    op_type: str
    domain: str
    reason: str


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor whose type is known (after ONNX shape inference)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # contrib ops or malformed shapes: use what the graph declares
        inferred = model
    graph = inferred.graph
    types: dict[str, int] = {}
    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
                elif attr.name in ("value_string", "value_strings"):
                    types[node.output[0]] = TensorProto.STRING
    return types


def _nonzero_zero_point(node: onnx.NodeProto, initializers: dict[str, np.ndarray]) -> bool:
    if len(node.input) < 3 or not node.input[2]:
        return False  # absent zero point means 0
    zero_point = initializers.get(node.input[2])
    return zero_point is not None and bool(np.any(zero_point != 0))


def _reason(node: onnx.NodeProto, provider: str, types: dict[str, int],
            initializers: dict[str, np.ndarray], graph_io: set[str]) -> str | None:
    domain = node.domain
    tensors = [t for t in (*node.input, *node.output) if t]
    if any(types.get(t) == TensorProto.STRING for t in tensors):
        return f"STRING tensors: {provider} has no string kernels"
    if domain == "ai.onnx.ml":
        return f"the ai.onnx.ml domain has no kernels on {provider}"
    if provider == CUDA:
        if domain == "com.microsoft":
            return (None if node.op_type in CUDA_CONTRIB_OPS
                    else f"contrib op {node.op_type} has no CUDA kernel")
        if domain not in _STANDARD_DOMAINS:
            return f"domain {domain!r} has no CUDA kernels"
        if node.op_type not in CUDA_ONNX_OPS:
            return f"{node.op_type} has no CUDA kernel"
        if node.op_type == "MatMulInteger" and any(
                types.get(t) == TensorProto.UINT8 for t in node.input[:2] if t):
            return "CUDA's MatMulInteger takes INT8 inputs only, not UINT8"
        return None
    if domain not in _STANDARD_DOMAINS:
        return f"TensorRT parses standard ONNX ops only, not domain {domain!r}"
    if node.op_type not in TENSORRT_OPS:
        return f"{node.op_type} is not supported by TensorRT's ONNX parser"
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        if node.op_type == "DequantizeLinear" and types.get(node.input[0]) == TensorProto.INT32:
            return "TensorRT dequantizes INT8, not INT32: keep biases FP32 (QuantizeBias off)"
        if _nonzero_zero_point(node, initializers):
            return "TensorRT takes zero points of 0 only: quantize symmetrically (QInt8)"
        if any(types.get(t) == TensorProto.UINT8 for t in tensors):
            return "TensorRT quantizes to INT8, not UINT8"
    elif any(types.get(t) == TensorProto.UINT8 for t in tensors if t not in graph_io):
        return "TensorRT takes UINT8 only as a network input or output"
    return None


def fallback_report(model: onnx.ModelProto, provider: str) -> list[Fallback]:
    """Nodes of `model`'s main graph that `provider` would leave to the CPU provider.

    Args:
        model: the graph to serve.
        provider: "CPUExecutionProvider" (always []), "CUDAExecutionProvider" or
            "TensorrtExecutionProvider".

    Raises:
        ValueError: for any other provider name.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
    if provider == CPU:
        return []
    types = _tensor_types(model)
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
                    if i.data_type != TensorProto.STRING}
    graph_io = {v.name for v in (*model.graph.input, *model.graph.output)}
    report = []
    for index, node in enumerate(model.graph.node):
        reason = _reason(node, provider, types, initializers, graph_io)
        if reason is not None:
            report.append(Fallback(node.name or f"#{index}", node.op_type, node.domain, reason))
    return report


def format_report(report: list[Fallback], provider: str) -> str:
    """One line per falling-back node, or a line saying the provider runs everything."""
    if not report:
        return f"{provider}: every node runs on it"
    lines = [f"{provider}: {len(report)} node(s) fall back to the CPU provider"]
    lines += [f"  {f.node} ({f.domain or 'ai.onnx'}.{f.op_type}): {f.reason}" for f in report]
    return "\n".join(lines)
