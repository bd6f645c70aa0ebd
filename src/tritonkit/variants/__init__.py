"""Variants of a source model, each written by a library, gated against the source, and
checked for the operators each execution provider runs.

- `onnx_variants`: optimized, INT8 static (QDQ), INT8 dynamic and FP16 ONNX graphs
- `gates`: how far a variant strays from its source on held-out data, pass or fail
- `providers`: which nodes of a graph the CUDA or TensorRT provider would hand back to the CPU
- `tensorrt`: TensorRT engines, labelled with TensorRT version and compute capability

    make_variant("int8_dynamic", Path("fp32.onnx"), Path("int8_dynamic.onnx"))
    result = classifier_gate("int8_dynamic", reference_p, variant_p, labels, (0.3, 0.6))
    fallback_report(onnx.load("fp32.onnx"), "TensorrtExecutionProvider")  # [] when clean
"""

from tritonkit.variants.gates import (
    ClassifierLimits,
    EmbeddingLimits,
    GateResult,
    classifier_gate,
    embedding_gate,
)
from tritonkit.variants.onnx_variants import VARIANT_KINDS, VARIANT_NAMES, make_variant
from tritonkit.variants.providers import Fallback, fallback_report

__all__ = [
    "VARIANT_KINDS",
    "VARIANT_NAMES",
    "ClassifierLimits",
    "EmbeddingLimits",
    "Fallback",
    "GateResult",
    "classifier_gate",
    "embedding_gate",
    "fallback_report",
    "make_variant",
]
