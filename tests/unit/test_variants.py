"""Variants of the real churn core: each made by its library, deterministic, gated on the held-out
customers; a broken variant rejected with its numbers; provider fallbacks of the old skl2onnx
graph against the standard-op core; TensorRT's skip path and its trtexec command."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper

from tritonkit.families import family_of
from tritonkit.spec import load_spec
from tritonkit.tabular.artifacts import Rows, TabularArtifacts
from tritonkit.tabular.contract import contract
from tritonkit.tabular.export import (
    INPUT_NAME,
    OPSET,
    append_head,
    check_parity,
    export_core,
    predict,
    risk_levels,
    session,
)
from tritonkit.tabular.schema import FeatureSchema
from tritonkit.variants import onnx_variants, tensorrt
from tritonkit.variants.gates import (
    DEFAULT_CLASSIFIER_LIMITS,
    ClassifierLimits,
    EmbeddingLimits,
    classifier_gate,
    embedding_gate,
)
from tritonkit.variants.providers import CPU, CUDA, TENSORRT, fallback_report

CHURN = contract("churn")
ALL_FEATURES = CHURN.features
THRESHOLDS = (0.3, 0.6)
ONNX_KINDS = ("fp32", "optimized", "int8_static", "int8_dynamic", "fp16")
#: Static quantization options the tests pass (the defaults: MatMul/Gemm only, after
#: quant_pre_process has fused MatMul + Add into a Gemm).
STATIC: dict[str, Any] = {}


class Churn:
    """The real churn model and its held-out customers."""

    def __init__(self) -> None:
        paths = TabularArtifacts.for_version(1)
        missing = [p.name for p in (paths.sklearn, paths.schema, paths.test_rows)
                   if not p.exists()]
        if missing:  # what `make build-engines` makes: make it (about 10 s)
            model = load_spec().models["churn"]
            family_of(model).build("churn", model)
        self.pipeline = joblib.load(paths.sklearn)
        self.schema = FeatureSchema.load(paths.schema)
        self.test = pd.read_csv(paths.test_rows)
        self.matrix = self.encode(self.test)
        self.labels = self.test[CHURN.target].to_numpy()
        self.reference = self.pipeline.predict_proba(self.test[list(ALL_FEATURES)])[:, 1]
        self.core = export_core(self.pipeline, self.schema, CHURN.probability)

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        return self.schema.encode({n: frame[n].to_numpy() for n in ALL_FEATURES})

    def probabilities(self, core: onnx.ModelProto) -> np.ndarray:
        served = append_head(core, THRESHOLDS, "test")
        return predict(session(served), self.matrix)["churn_probability"].reshape(-1)


@pytest.fixture(scope="module")
def churn() -> Churn:
    return Churn()


@pytest.fixture(scope="module")
def calibration(churn: Churn) -> list[dict[str, np.ndarray]]:
    """Feeds of training-split customers (never the held-out ones)."""
    train = Rows(load_spec().models["churn"]).splits.train
    matrix = churn.encode(train)
    return [{INPUT_NAME: matrix[i:i + 256]} for i in range(0, 1024, 256)]


@pytest.fixture(scope="module")
def source(churn: Churn, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("core") / "fp32.onnx"
    onnx.save(churn.core, path)
    return path


@pytest.fixture(scope="module")
def variants(source: Path, calibration: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("variants")
    return {kind: onnx_variants.make_variant(kind, source, out / f"{kind}.onnx",
                                             calibration=calibration,
                                             **(STATIC if kind == "int8_static" else {}))
            for kind in ONNX_KINDS}


def test_export_core_is_standard_ops_when_exported_from_logistic_regression(
    churn: Churn,
) -> None:
    core = churn.core
    assert {(n.domain, n.op_type) for n in core.graph.node} == {
        ("", "MatMul"), ("", "Add"), ("", "Sigmoid")}
    assert [(o.domain, o.version) for o in core.opset_import] == [("", OPSET)]
    (features,) = core.graph.input
    assert features.name == "features"
    assert [d.dim_value for d in features.type.tensor_type.shape.dim] == [0, churn.schema.width]
    (probability,) = core.graph.output
    assert probability.name == "churn_probability"
    assert probability.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_exported_graph_matches_sklearn_on_every_test_row_when_head_appended(
    churn: Churn,
) -> None:
    model = append_head(churn.core, THRESHOLDS, "7")
    report = check_parity(churn.pipeline, churn.schema, model, churn.test, THRESHOLDS)
    assert report["rows"] == len(churn.test) > 700
    assert report["max_abs_diff"] <= 1e-5
    outputs = predict(session(model), churn.matrix[:3])
    assert outputs["model_version"].reshape(-1).tolist() == ["7"] * 3


def test_append_head_refuses_graph_when_it_already_has_a_head(churn: Churn) -> None:
    served = append_head(churn.core, THRESHOLDS, "1")
    with pytest.raises(ValueError, match="already has a head"):
        append_head(served, THRESHOLDS, "1")


@pytest.mark.parametrize("kind", ONNX_KINDS)
def test_variant_passes_its_gate_on_held_out_customers_when_made_from_real_core(
    churn: Churn, variants: dict[str, Path], kind: str
) -> None:
    core = onnx.load(variants[kind])
    served = append_head(core, THRESHOLDS, "1")
    outputs = predict(session(served), churn.matrix)
    p = outputs["churn_probability"].reshape(-1)
    result = classifier_gate(kind, churn.reference, p, churn.labels, THRESHOLDS)
    assert result.passed, result.message
    assert result.message.startswith(f"{kind}: passed (max |Δp| ")
    assert result.metrics["rows"] == len(churn.test)
    assert result.to_dict()["limits"]["max_abs_delta_p"] == (
        DEFAULT_CLASSIFIER_LIMITS[kind].max_abs_delta_p)
    # The head computes the levels from the variant's own probability.
    levels = outputs["risk_level"].reshape(-1).astype(str)
    assert (levels == risk_levels(p, THRESHOLDS)).all()


def test_variants_are_what_their_library_writes_when_inspected(variants: dict[str, Path]) -> None:
    ops = {kind: {n.op_type for n in onnx.load(path).graph.node}
           for kind, path in variants.items()}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops["int8_static"]
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops["int8_dynamic"]
    assert "Cast" in ops["fp16"]
    fp16 = onnx.load(variants["fp16"])
    assert {i.data_type for i in fp16.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("kind", ONNX_KINDS)
def test_make_variant_writes_identical_bytes_when_run_twice(
    source: Path, calibration: Any, variants: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    again = onnx_variants.make_variant(kind, source, tmp_path / f"{kind}.onnx",
                                       calibration=calibration,
                                       **(STATIC if kind == "int8_static" else {}))
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (variants[kind], again)]
    assert digest[0] == digest[1]


def test_make_variant_refuses_when_kind_is_unknown_or_an_engine(source: Path, tmp_path: Path
                                                                ) -> None:
    with pytest.raises(ValueError, match="unknown variant 'int4'"):
        onnx_variants.make_variant("int4", source, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="build_engine"):
        onnx_variants.make_variant("tensorrt_fp16", source, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="calibration"):
        onnx_variants.make_variant("int8_static", source, tmp_path / "x.onnx")
    assert set(onnx_variants.VARIANT_KINDS) == set(onnx_variants.VARIANT_NAMES)


def test_classifier_gate_rejects_variant_with_its_numbers_when_weights_are_scaled(
    churn: Churn,
) -> None:
    broken = onnx.ModelProto()
    broken.CopyFrom(churn.core)
    weights = broken.graph.initializer[0]
    assert weights.name == "classifier_weights"
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.5, weights.name))
    p = churn.probabilities(broken)
    result = classifier_gate("int8_static", churn.reference, p, churn.labels, THRESHOLDS)
    worst = float(np.abs(p - churn.reference).max())
    assert not result.passed
    assert result.metrics["max_abs_delta_p"] == pytest.approx(worst)
    assert f"max |Δp| {worst:.3g} exceeds the limit 0.02 by {worst - 0.02:.3g}" in result.message
    assert "risk-level agreement" in result.message  # more customers change level than 3 %


def test_classifier_gate_says_by_how_much_roc_auc_fell_when_noise_is_added(churn: Churn) -> None:
    rng = np.random.default_rng(7)
    noisy = np.clip(churn.reference + rng.normal(0, 0.05, churn.reference.size), 0, 1)
    limits = ClassifierLimits(max_abs_delta_p=1.0, min_risk_agreement=0.0)
    result = classifier_gate("int8_dynamic", churn.reference, noisy, churn.labels, THRESHOLDS,
                             limits)
    d_auc = result.metrics["delta_roc_auc"]
    assert d_auc < -0.002
    assert result.failures == (
        f"ΔROC-AUC {d_auc:+.4f} exceeds the limit 0.002 by {-d_auc - 0.002:.4f}",)
    assert result.message == f"int8_dynamic: {result.failures[0]}"


def test_embedding_gate_reports_mean_min_and_p01_when_one_text_drifts() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 384))
    close = reference + rng.normal(scale=0.05, size=reference.shape)
    passed = embedding_gate("int8_dynamic", reference, close)
    assert passed.passed, passed.message
    assert passed.metrics["mean_cosine"] > 0.99
    far = close.copy()
    far[17] = rng.normal(size=384)  # one unrelated vector
    result = embedding_gate("fp16", reference, far, EmbeddingLimits(min_cosine=0.95))
    assert not result.passed
    assert result.metrics["worst_row"] == 17
    low = result.metrics["min_cosine"]
    assert f"min cosine {low:.4f} is below the limit 0.95 by {0.95 - low:.4f}" in result.message
    noisy = reference + rng.normal(scale=0.3, size=reference.shape)
    mean = embedding_gate("int8_static", reference, noisy)
    assert "mean cosine" in mean.message and "below the limit 0.99 by" in mean.message


def _skl2onnx_graph(churn: Churn) -> onnx.ModelProto:
    """What the project exported before: skl2onnx's ai.onnx.ml LinearClassifier."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    classifier = churn.pipeline.named_steps["classify"]
    return convert_sklearn(
        classifier, initial_types=[(INPUT_NAME, FloatTensorType([None, churn.schema.width]))],
        options={id(classifier): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3})


@pytest.mark.parametrize("provider", [CUDA, TENSORRT])
def test_fallback_report_lists_linear_classifier_and_string_head_when_graph_is_not_standard(
    churn: Churn, provider: str
) -> None:
    old = fallback_report(_skl2onnx_graph(churn), provider)
    assert ("LinearClassifier", "ai.onnx.ml") in {(f.op_type, f.domain) for f in old}
    assert fallback_report(churn.core, provider) == []
    head = fallback_report(append_head(churn.core, THRESHOLDS, "1"), provider)
    assert {f.node for f in head} == {
        "post_label_high_const", "post_label_medium_const", "post_label_low_const",
        "post_version_const", "post_medium_or_low", "post_risk_level", "post_model_version"}
    assert all("STRING" in f.reason for f in head)
    assert fallback_report(_skl2onnx_graph(churn), CPU) == []


def test_fallback_report_flags_dynamic_quantization_when_provider_is_a_gpu(
    variants: dict[str, Path],
) -> None:
    dynamic = onnx.load(variants["int8_dynamic"])
    for provider in (CUDA, TENSORRT):
        ops = {f.op_type for f in fallback_report(dynamic, provider)}
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert fallback_report(onnx.load(variants["fp16"]), TENSORRT) == []


def test_int8_static_is_clean_for_tensorrt_when_quantized_symmetrically(
    source: Path, calibration: Any, tmp_path: Path
) -> None:
    path = onnx_variants.int8_static(source, tmp_path / "trt.onnx", calibration=calibration,
                                     **onnx_variants.TENSORRT_STATIC)
    model = onnx.load(path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    assert fallback_report(model, TENSORRT) == []
    asymmetric = onnx.load(onnx_variants.int8_static(
        source, tmp_path / "cpu.onnx", calibration=calibration, **STATIC))
    reasons = {f.reason for f in fallback_report(asymmetric, TENSORRT)}
    assert any("zero points of 0" in r for r in reasons)
    assert any("not INT32" in r for r in reasons)


def test_tensorrt_skips_with_its_reason_and_writes_nothing_when_no_gpu(
    source: Path, tmp_path: Path
) -> None:
    reason = tensorrt.tensorrt_available()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present: the skip path does not apply")
    assert "GPU" in reason or "tensorrt" in reason
    with pytest.raises(tensorrt.TensorRTUnavailable, match="engine not built: "):
        tensorrt.build_engine(source, tmp_path / "engines", "fp16", max_batch_size=8)
    assert not (tmp_path / "engines").exists()


def test_trtexec_command_names_shapes_and_precision_when_built_for_the_ngc_image(
    source: Path,
) -> None:
    shapes = tensorrt.profile_shapes(source, max_batch_size=256, opt_batch_size=32)
    assert shapes == {"features": ([1, 45], [32, 45], [256, 45])}
    argv = tensorrt.trtexec_command("/models/fp32.onnx", "/engines/model.plan", "int8", shapes)
    assert argv[0].endswith("trtexec")
    assert "--minShapes=features:1x45" in argv and "--maxShapes=features:256x45" in argv
    assert "--optShapes=features:32x45" in argv and "--saveEngine=/engines/model.plan" in argv
    assert {"--int8", "--fp16"} <= set(argv)
    assert "--int8" not in tensorrt.trtexec_command("a", "b", "fp16", shapes)
    assert tensorrt.engine_file_name("fp16", "9.0", "10.13.3.9") == "model.fp16.sm90.trt10.13.plan"


@pytest.mark.gpu
def test_build_engine_labels_plan_with_tensorrt_version_and_cc_when_gpu_present(
    source: Path, tmp_path: Path
) -> None:
    reason = tensorrt.tensorrt_available()
    if reason is not None:
        pytest.skip(reason)
    info = tensorrt.build_engine(source, tmp_path, "fp16", max_batch_size=64)
    assert info.path.exists() and info.path.stat().st_size > 0
    assert info.file_name == tensorrt.engine_file_name(
        "fp16", info.compute_capability, info.tensorrt_version)
