"""`make build-engines`: incremental and byte-identical, gates on every variant, the production
graph on operators its GPU providers run, and a spec edit that reaches the served answers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import onnx
import pytest
import yaml
from tritonclient.grpc import model_config_pb2 as mc

from tritonkit.paths import PROJECT_ROOT
from tritonkit.repository import config as cfg
from tritonkit.spec import DEFAULT_SPEC, Spec, TabularClassifier, load_spec
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.text.artifacts import TextEmbeddingArtifacts
from tritonkit.variants import providers

from ..support import build


def _snapshot(*folders: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under `folders`."""
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()
            and "__pycache__" not in p.parts}


def test_build_leaves_every_file_untouched_when_run_twice(artifacts: TabularArtifacts) -> None:
    first = build("--model", "churn")
    assert first.returncode == 0, first.stderr[-2000:]
    folders = (artifacts.root, PROJECT_ROOT / "model_repository")
    before = _snapshot(*folders)
    second = build("--model", "churn")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "variants up to date" in second.stderr
    assert "up to date" in second.stderr.split("variants up to date")[1]
    assert _snapshot(*folders) == before


def test_production_serves_a_variant_every_gpu_provider_runs_whole(
    artifacts: TabularArtifacts, churn_spec: TabularClassifier
) -> None:
    served = artifacts.variant(churn_spec.variants.serve["production"])
    graph = onnx.load(str(served))
    for provider in (providers.CUDA, providers.TENSORRT):
        assert providers.fallback_report(graph, provider) == [], provider
    # the whole graph (with the string head) would not: that is why production splits it
    assert providers.fallback_report(onnx.load(str(artifacts.onnx)), providers.CUDA)


def test_tensorrt_engine_config_maps_each_gpu_to_its_plan_when_parsed(tmp_path: Path) -> None:
    spec = load_spec()
    model = spec.models["churn"]
    engines = {"9.0": "model.fp16.sm90.trt10.5.0.plan", "8.9": "model.fp16.sm89.trt10.5.0.plan"}
    config = cfg.tensorrt_plan_config(
        name="churn_model", model=model, step=model.steps.model, target="production",
        engines=engines, inputs=[cfg.tensor("features", "TYPE_FP32", [45])],
        outputs=[cfg.tensor("churn_probability", "TYPE_FP32", [1])])
    parsed = cfg.read_config(cfg.write_config(config, tmp_path / "churn_model"))
    assert parsed.platform == "tensorrt_plan"
    assert dict(parsed.cc_model_filenames) == engines
    assert [g.kind for g in parsed.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    with pytest.raises(ValueError, match="no TensorRT engines"):
        cfg.tensorrt_plan_config(
            name="churn_model", model=model, step=model.steps.model, target="production",
            engines={}, inputs=[], outputs=[])


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["variants"].update(serve={"embedded": "fp16", "production": "fp32"}),
     "embedded target cannot serve"),
    (lambda m: m["variants"].update(serve={"embedded": "fp32", "production": "int8_dynamic"}),
     "production target cannot serve"),
    (lambda m: m["variants"].update(build=["fp32"]), "needs 'int8_static'|needs"),
    (lambda m: m["variants"].update(options={"fp16": {"x": 1}}, build=["fp32"],
                                    serve={"embedded": "fp32", "production": "fp32"}),
     "does not build"),
])
def test_spec_refuses_variants_that_nothing_honours(
    tmp_path: Path, change: Any, message: str
) -> None:
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    churn = data["models"]["churn"]
    if message.startswith("needs"):
        churn["variants"]["serve"]["embedded"] = "int8_static"
    change(churn)
    with pytest.raises(ValueError, match=message):
        Spec.model_validate(data)


def test_tensorrt_profile_spans_every_batch_and_sequence_length_the_spec_allows(
    artifacts: TabularArtifacts, minilm_exported: TextEmbeddingArtifacts,
) -> None:
    from tritonkit.stages.variants import _profile

    spec = load_spec()
    churn = _profile(artifacts.variant("fp32"), spec.models["churn"])
    assert churn == {"features": ([1, 45], [128, 45], [256, 45])}
    minilm = spec.models["minilm"]
    shapes = _profile(minilm_exported.variant("fp32"), minilm)
    assert shapes["input_ids"] == ([1, 1], [32, 128], [64, 128])
    assert shapes["attention_mask"] == shapes["input_ids"]


def test_model_card_states_the_measured_metrics_and_gates_when_rendered(
    artifacts: TabularArtifacts,
) -> None:
    import json

    from tritonkit.builder.model_card import render_model_card

    spec = load_spec()
    card = render_model_card("churn", spec.models["churn"], spec)
    test = json.loads(artifacts.metrics.read_text())["test"]
    assert f"ROC-AUC **{test['roc_auc']:.4f}**" in card
    gates = json.loads(artifacts.gates.read_text())["gates"]
    for variant, gate in gates.items():
        verdict = "yes" if gate["passed"] else "no"
        assert f"| {variant} | {verdict} |" in card
    assert "POST /v2/models/churn/infer" in card
    assert f"{spec.models['churn'].availability_slo:.1%}" in card


def test_production_warms_the_gpu_model_at_its_largest_batch_first(
    repositories: dict[str, Path], churn_spec: TabularClassifier
) -> None:
    config = cfg.read_config(repositories["production"] / "churn_model" / "config.pbtxt")
    sizes = [w.batch_size for w in config.model_warmup]
    assert sizes[:2] == [churn_spec.max_batch_size, 1]


def test_queue_policy_renders_as_triton_default_queue_policy_when_set(tmp_path: Path) -> None:
    from tritonkit.spec import QueuePolicy

    spec = load_spec()
    model = spec.models["churn"]
    batching = model.steps.preprocess.dynamic_batching.model_copy(
        update={"queue": QueuePolicy(max_size=64, timeout_us=20_000)})
    step = model.steps.preprocess.model_copy(update={"dynamic_batching": batching})
    config = cfg.python_step_config(
        name="churn_fused", model=model, step=step, target="embedded",
        inputs=[cfg.tensor("tenure", "TYPE_FP32", [1])],
        outputs=[cfg.tensor("churn_probability", "TYPE_FP32", [1])])
    policy = cfg.read_config(cfg.write_config(config, tmp_path / "churn_fused")
                             ).dynamic_batching.default_queue_policy
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert policy.max_queue_size == 64
    assert policy.default_timeout_microseconds == 20_000
    with pytest.raises(ValueError, match="queue needs enabled: true"):
        batching.model_copy(update={"enabled": False}).model_validate(
            {**batching.model_dump(), "enabled": False})
