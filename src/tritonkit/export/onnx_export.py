"""Export the churn classifier to ONNX with its postprocessing head, and check it against sklearn.

The exported graph takes the encoded feature matrix (`tritonkit.features`) and returns the three
outputs `OUTPUT_NAMES` (README, "The `churn` contract"). Postprocessing (risk level from the spec's
thresholds, model version) is part of the graph, so it runs inside onnxruntime in both targets:
natively in production, and in the same python hop as the classifier on the embedded target (a
python hop costs latency and throughput: README, Performance)::

    thresholds = spec.pipelines["churn"].risk_thresholds
    model = export_churn_onnx(pipeline, schema, thresholds=thresholds, version="1")
    report = check_parity(pipeline, schema, model, test_frame, thresholds)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.pipeline import Pipeline

from tritonkit.errors import ParityError
from tritonkit.features import ALL_FEATURES, OUTPUT_DTYPES, FeatureSchema
from tritonkit.spec import RiskThresholds

#: ONNX opset of exported graphs: NGC Triton 24.x's onnxruntime runs up to 21.
OPSET = 17
INPUT_NAME = "features"
OUTPUT_NAMES = tuple(OUTPUT_DTYPES)


def _classifier_graph(pipeline: Pipeline, width: int) -> onnx.ModelProto:
    classifier = pipeline.named_steps["classify"]
    return convert_sklearn(
        classifier,
        initial_types=[(INPUT_NAME, FloatTensorType([None, width]))],
        options={id(classifier): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )


def _append_postprocessing(
    model: onnx.ModelProto, thresholds: RiskThresholds, version: str
) -> onnx.ModelProto:
    """Replace the classifier's outputs by churn_probability, risk_level, model_version."""
    graph = model.graph
    probabilities = next(o.name for o in graph.output if "prob" in o.name)

    def const(name: str, value: Any, dtype: int) -> onnx.NodeProto:
        array = np.array(value, dtype=object if dtype == TensorProto.STRING else np.float32)
        if dtype == TensorProto.STRING:
            tensor = helper.make_tensor(name, dtype, array.shape, [v.encode() for v in array.flat])
        else:
            tensor = helper.make_tensor(name, dtype, array.shape, array.flatten().tolist())
        return helper.make_node("Constant", [], [name], value=tensor, name=f"{name}_const")

    nodes = [
        helper.make_node("Constant", [], ["post_positive_column"],
                         value=helper.make_tensor("c", TensorProto.INT64, [1], [1])),
        helper.make_node("Gather", [probabilities, "post_positive_column"],
                         ["churn_probability"], axis=1, name="post_positive_probability"),
        const("post_high", [thresholds.high], TensorProto.FLOAT),
        const("post_medium", [thresholds.medium], TensorProto.FLOAT),
        const("post_label_high", ["high"], TensorProto.STRING),
        const("post_label_medium", ["medium"], TensorProto.STRING),
        const("post_label_low", ["low"], TensorProto.STRING),
        const("post_version", [[version]], TensorProto.STRING),
        helper.make_node("GreaterOrEqual", ["churn_probability", "post_high"], ["post_is_high"]),
        helper.make_node("GreaterOrEqual", ["churn_probability", "post_medium"],
                         ["post_is_medium"]),
        helper.make_node("Where", ["post_is_medium", "post_label_medium", "post_label_low"],
                         ["post_medium_or_low"]),
        helper.make_node("Where", ["post_is_high", "post_label_high", "post_medium_or_low"],
                         ["risk_level"]),
        helper.make_node("Shape", ["churn_probability"], ["post_shape"]),
        helper.make_node("Expand", ["post_version", "post_shape"], ["model_version"]),
    ]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("churn_probability", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("risk_level", TensorProto.STRING, [None, 1]),
            helper.make_tensor_value_info("model_version", TensorProto.STRING, [None, 1]),
        ]
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def export_churn_onnx(
    pipeline: Pipeline, schema: FeatureSchema, thresholds: RiskThresholds, version: str
) -> onnx.ModelProto:
    """The classifier of `pipeline` as ONNX, with the postprocessing head appended."""
    model = _classifier_graph(pipeline, schema.width)
    model = _append_postprocessing(model, thresholds, version)
    model.doc_string = f"churn classifier v{version} with postprocessing head"
    return model


def session(model: onnx.ModelProto | bytes | str) -> ort.InferenceSession:
    """A single-threaded CPU session (what one Triton instance gets)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


def predict(sess: ort.InferenceSession, matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Run the exported graph on an encoded matrix; returns the three outputs by name."""
    values = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: matrix.astype(np.float32, copy=False)})
    return dict(zip(OUTPUT_NAMES, values, strict=True))


def check_parity(
    pipeline: Pipeline,
    schema: FeatureSchema,
    model: onnx.ModelProto | bytes | str,
    frame: pd.DataFrame,
    thresholds: RiskThresholds,
    tolerance: float = 1e-5,
) -> dict[str, float]:
    """Compare sklearn's probability with encode + ONNX on every row of `frame`.

    Raises:
        ParityError: when any |Δp| exceeds `tolerance`, or a risk level differs for a row
            whose probability is not within `tolerance` of a threshold.
    """
    expected = pipeline.predict_proba(frame[list(ALL_FEATURES)])[:, 1]
    columns = {name: frame[name].to_numpy() for name in ALL_FEATURES}
    outputs = predict(session(model), schema.encode(columns))
    got = outputs["churn_probability"].reshape(-1)
    delta = np.abs(got.astype(np.float64) - expected)
    worst = float(delta.max())
    if worst > tolerance:
        row = int(delta.argmax())
        raise ParityError(
            f"ONNX disagrees with sklearn: max |Δp| = {worst:.2e} > {tolerance:g} at row {row} "
            f"(sklearn {expected[row]:.6f}, onnx {got[row]:.6f})"
        )
    near = np.zeros_like(expected, dtype=bool)
    for t in (thresholds.medium, thresholds.high):
        near |= np.abs(expected - t) <= tolerance
    levels = outputs["risk_level"].reshape(-1).astype(str)
    wrong = (levels != thresholds.levels(expected)) & ~near
    if wrong.any():
        raise ParityError(f"risk_level disagrees with the thresholds on {int(wrong.sum())} rows")
    return {"rows": float(len(frame)), "max_abs_diff": worst}
