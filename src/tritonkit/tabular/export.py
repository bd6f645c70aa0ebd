"""Export a tabular classifier to ONNX in standard operators, with its postprocessing head.

The graph is built in two parts so that every variant (`tritonkit.variants`) shares one head:

- the *core* (`export_core`): encoded feature matrix (`tritonkit.tabular.schema`) -> the
  probability (the spec's `probability`, churn's ``churn_probability``) FP32 [rows, 1], the
  LogisticRegression as MatMul + Add + Sigmoid.
  Standard ONNX operators only, so the CUDA and TensorRT providers run all of it (skl2onnx's
  ``ai.onnx.ml.LinearClassifier`` runs on the CPU provider alone). This is what gets optimized,
  quantized or converted to FP16.
- the *head* (`append_head`): risk level from the spec's thresholds and the model version, as
  STRING outputs, appended to the core or to any variant of it (its I/O stays FP32).

The served graph returns the spec's three outputs (docs/contract.md, "The `churn` contract"),
in onnxruntime in both targets: natively in production, and in the same python hop as the
classifier on the embedded target (a python hop costs latency and throughput:
docs/performance.md, "What it says")::

    core = export_core(pipeline, schema, "churn_probability")
    model = append_head(core, thresholds, version="1")
    report = check_parity(pipeline, schema, model, test_frame, thresholds)
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tritonkit.errors import ParityError
from tritonkit.tabular.schema import FeatureSchema

#: ONNX opset of exported graphs: NGC Triton 24.x's onnxruntime runs up to 21, TensorRT 10 up
#: to 20 (onnx-tensorrt docs/operators.md).
OPSET = 17
#: IR version 8 is the one that goes with opset 17; onnx's newer default would be refused by the
#: older onnxruntime builds in NGC images.
IR_VERSION = 8
INPUT_NAME = "features"
#: The head's outputs after the probability.
HEAD_OUTPUTS = ("risk_level", "model_version")


class Thresholds(Protocol):
    """Risk thresholds: p >= high is "high", p >= medium is "medium", else "low"
    (`tritonkit.spec.RiskThresholds` is one)."""

    @property
    def medium(self) -> float: ...

    @property
    def high(self) -> float: ...


def _medium_high(thresholds: Thresholds | tuple[float, float]) -> tuple[float, float]:
    if isinstance(thresholds, tuple):
        medium, high = thresholds
    else:
        medium, high = thresholds.medium, thresholds.high
    return float(medium), float(high)


def risk_levels(p: np.ndarray, thresholds: Thresholds | tuple[float, float]) -> np.ndarray:
    """"low" / "medium" / "high" for each probability, as the head computes them."""
    medium, high = _medium_high(thresholds)
    return np.where(p >= high, "high", np.where(p >= medium, "medium", "low"))


def probability_of(core: onnx.ModelProto) -> str:
    """The name of a core's probability output (its first output)."""
    return core.graph.output[0].name


def export_core(pipeline: Pipeline, schema: FeatureSchema, probability: str) -> onnx.ModelProto:
    """The classifier of `pipeline` as standard ONNX ops: features -> `probability`.

    MatMul + Add rather than Gemm: onnxruntime's dynamic quantization handles MatMul only, and
    the CUDA/TensorRT providers run either.
    """
    classifier = pipeline.named_steps["classify"]
    if not isinstance(classifier, LogisticRegression) or classifier.coef_.shape[0] != 1:
        raise TypeError(
            f"export_core needs a binary LogisticRegression step 'classify', "
            f"got {type(classifier).__name__}"
        )
    width = schema.width
    if classifier.coef_.shape[1] != width:
        raise ValueError(
            f"the classifier has {classifier.coef_.shape[1]} coefficients but the schema encodes "
            f"{width} columns: re-export the schema from the same pipeline"
        )
    weights = classifier.coef_.astype(np.float32).T.copy()  # [width, 1]
    bias = classifier.intercept_.astype(np.float32).reshape(1)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [INPUT_NAME, "classifier_weights"], ["classifier_xw"],
                             name="classifier_matmul"),
            helper.make_node("Add", ["classifier_xw", "classifier_bias"], ["classifier_logit"],
                             name="classifier_add"),
            helper.make_node("Sigmoid", ["classifier_logit"], [probability],
                             name="classifier_sigmoid"),
        ],
        "classifier_core",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info(probability, TensorProto.FLOAT, [None, 1])],
        initializer=[
            numpy_helper.from_array(weights, "classifier_weights"),
            numpy_helper.from_array(bias, "classifier_bias"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
        producer_name="tritonkit",
    )
    model.doc_string = "classifier core (LogisticRegression as MatMul + Add + Sigmoid)"
    onnx.checker.check_model(model, full_check=True)
    return model


def _head_nodes(thresholds: tuple[float, float], version: str, probability: str
                ) -> list[onnx.NodeProto]:
    medium, high = thresholds

    def const(name: str, value: Any, dtype: int) -> onnx.NodeProto:
        array = np.array(value, dtype=object if dtype == TensorProto.STRING else np.float32)
        if dtype == TensorProto.STRING:
            tensor = helper.make_tensor(name, dtype, array.shape, [v.encode() for v in array.flat])
        else:
            tensor = helper.make_tensor(name, dtype, array.shape, array.flatten().tolist())
        return helper.make_node("Constant", [], [name], value=tensor, name=f"{name}_const")

    return [
        const("post_high", [high], TensorProto.FLOAT),
        const("post_medium", [medium], TensorProto.FLOAT),
        const("post_label_high", ["high"], TensorProto.STRING),
        const("post_label_medium", ["medium"], TensorProto.STRING),
        const("post_label_low", ["low"], TensorProto.STRING),
        const("post_version", [[version]], TensorProto.STRING),
        helper.make_node("GreaterOrEqual", [probability, "post_high"], ["post_is_high"],
                         name="post_is_high"),
        helper.make_node("GreaterOrEqual", [probability, "post_medium"], ["post_is_medium"],
                         name="post_is_medium"),
        helper.make_node("Where", ["post_is_medium", "post_label_medium", "post_label_low"],
                         ["post_medium_or_low"], name="post_medium_or_low"),
        helper.make_node("Where", ["post_is_high", "post_label_high", "post_medium_or_low"],
                         ["risk_level"], name="post_risk_level"),
        helper.make_node("Shape", [probability], ["post_shape"], name="post_shape"),
        helper.make_node("Expand", ["post_version", "post_shape"], ["model_version"],
                         name="post_model_version"),
    ]


def append_head(
    core: onnx.ModelProto, thresholds: Thresholds | tuple[float, float], version: str
) -> onnx.ModelProto:
    """The served graph: `core` (or any variant of it) plus risk_level and model_version.

    `core` is not modified. Its one output is the probability, FP32 [rows, 1], which every
    variant keeps (quantized and FP16 variants keep FP32 I/O). Contrib-op domains of optimized
    or quantized cores are kept as they are.

    Raises:
        ValueError: when `core` has other than one FP32 output, or already has a head.
    """
    produced = {o for n in core.graph.node for o in n.output}
    if produced & set(HEAD_OUTPUTS):
        raise ValueError("this model already has a head: pass the core, not the served graph")
    outputs = list(core.graph.output)
    if len(outputs) != 1 or outputs[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ValueError(
            f"append_head needs a core with one FP32 output, the probability; got outputs "
            f"{sorted(o.name for o in outputs)}: export it with export_core (FP16 cores: "
            "keep_io_types)"
        )
    probability = outputs[0].name
    model = onnx.ModelProto()
    model.CopyFrom(core)
    graph = model.graph
    graph.node.extend(_head_nodes(_medium_high(thresholds), version, probability))
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(probability, TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("risk_level", TensorProto.STRING, [None, 1]),
            helper.make_tensor_value_info("model_version", TensorProto.STRING, [None, 1]),
        ]
    )
    graph.name = f"{core.graph.name}_with_head"
    standard = all(op.domain in ("", "ai.onnx") for op in model.opset_import)
    # The checker knows the standard domains only; cores with contrib ops (an ORT-optimized
    # graph) are checked by onnxruntime when a session loads them.
    onnx.checker.check_model(model, full_check=standard)
    return model


def session(model: onnx.ModelProto | bytes | str) -> ort.InferenceSession:
    """A single-threaded CPU session (what one Triton instance gets)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


def predict(sess: ort.InferenceSession, matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Run the exported graph on an encoded matrix; returns its outputs by name (the
    probability first)."""
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, {INPUT_NAME: matrix.astype(np.float32, copy=False)})
    return dict(zip(names, values, strict=True))


def check_parity(
    pipeline: Pipeline,
    schema: FeatureSchema,
    model: onnx.ModelProto | bytes | str,
    frame: pd.DataFrame,
    thresholds: Thresholds | tuple[float, float],
    tolerance: float = 1e-5,
) -> dict[str, float]:
    """Compare sklearn's probability with encode + ONNX on every row of `frame`.

    Raises:
        ParityError: when any |Δp| exceeds `tolerance`, or a risk level differs for a row
            whose probability is not within `tolerance` of a threshold.
    """
    expected = pipeline.predict_proba(frame[list(schema.names)])[:, 1]
    columns = {name: frame[name].to_numpy() for name in schema.names}
    outputs = predict(session(model), schema.encode(columns))
    got = next(iter(outputs.values())).reshape(-1)
    delta = np.abs(got.astype(np.float64) - expected)
    worst = float(delta.max())
    if worst > tolerance:
        row = int(delta.argmax())
        raise ParityError(
            f"ONNX disagrees with sklearn: max |Δp| = {worst:.2e} > {tolerance:g} at row {row} "
            f"(sklearn {expected[row]:.6f}, onnx {got[row]:.6f})"
        )
    near = np.zeros_like(expected, dtype=bool)
    for t in _medium_high(thresholds):
        near |= np.abs(expected - t) <= tolerance
    levels = outputs["risk_level"].reshape(-1).astype(str)
    wrong = (levels != risk_levels(expected, thresholds)) & ~near
    if wrong.any():
        raise ParityError(f"risk_level disagrees with the thresholds on {int(wrong.sum())} rows")
    return {"rows": float(len(frame)), "max_abs_diff": worst}
