"""The spec checks itself; rendered repositories keep the contract and the production choices."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from tritonclient.grpc import model_config_pb2 as mc

from tritonkit.errors import SpecError
from tritonkit.repository.config import read_config
from tritonkit.spec import DEFAULT_SPEC, Spec, load_spec
from tritonkit.tabular.contract import contract
from tritonkit.tabular.schema import FeatureSchema

CHURN = contract("churn")
ALL_FEATURES = CHURN.features
NUMPY_DTYPES = CHURN.numpy_dtypes
TRITON_DTYPES = CHURN.triton_dtypes




def _write_spec(tmp_path: Path, mutate: object) -> Path:
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    mutate(data)  # type: ignore[operator]
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_load_spec_raises_naming_field_when_thresholds_are_reversed(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["models"]["churn"]["risk_thresholds"] = {"medium": 0.7, "high": 0.4}
    with pytest.raises(SpecError, match=r"risk_thresholds[\s\S]*must be below high"):
        load_spec(_write_spec(tmp_path, mutate))


def test_load_spec_raises_when_a_target_lacks_an_instance_count(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["models"]["churn"]["steps"]["model"]["instances"] = {"embedded": 1}
    with pytest.raises(SpecError, match="production"):
        load_spec(_write_spec(tmp_path, mutate))


def test_load_spec_raises_when_an_unknown_key_is_given(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["models"]["churn"]["max_batch_sise"] = 8
    with pytest.raises(SpecError, match="max_batch_sise"):
        load_spec(_write_spec(tmp_path, mutate))


LAYOUTS = {
    "embedded": ["churn_fused"],
    "embedded_split": ["churn_preprocess", "churn_model"],
    "production": ["churn_preprocess", "churn_model", "churn_postprocess"],
}


@pytest.mark.parametrize("target", list(LAYOUTS))
def test_ensemble_interface_is_one_tensor_per_telco_column_when_rendered(
    repositories: dict[str, Path], target: str
) -> None:
    config = read_config(repositories[target] / "churn" / "config.pbtxt")
    assert config.platform == "ensemble"
    inputs = {i.name: (mc.DataType.Name(i.data_type), list(i.dims)) for i in config.input}
    assert inputs == {n: (TRITON_DTYPES[n], [1]) for n in ALL_FEATURES}
    outputs = {o.name: (mc.DataType.Name(o.data_type), list(o.dims)) for o in config.output}
    assert outputs == {
        "churn_probability": ("TYPE_FP32", [1]),
        "risk_level": ("TYPE_STRING", [1]),
        "model_version": ("TYPE_STRING", [1]),
    }
    steps = [s.model_name for s in config.ensemble_scheduling.step]
    assert steps == LAYOUTS[target]


def test_production_model_step_uses_native_onnxruntime_on_gpu_with_tensorrt(
    repositories: dict[str, Path], spec: Spec
) -> None:
    config = read_config(repositories["production"] / "churn_model" / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx"
    assert not config.backend
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert config.instance_group[0].count == spec.models["churn"].steps.model.instances[
        "production"]
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == ["tensorrt"]
    assert accelerators[0].parameters["precision_mode"] == "FP32"
    assert (repositories["production"] / "churn_model" / "1" / "model.onnx").exists()
    assert not (repositories["production"] / "churn_model" / "1" / "model.py").exists()


@pytest.mark.parametrize(("target", "step"), [("embedded", "churn_fused"),
                                            ("embedded_split", "churn_model")])
def test_embedded_model_runs_in_python_onnxruntime_step_on_cpu(
    repositories: dict[str, Path], target: str, step: str
) -> None:
    config = read_config(repositories[target] / step / "config.pbtxt")
    assert config.backend == "python"
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert (repositories[target] / step / "1" / "model.py").exists()
    assert (repositories[target] / step / "1" / "model.onnx").exists()
    assert {o.name for o in config.output} == {"churn_probability", "risk_level", "model_version"}


def test_load_spec_raises_when_fusing_a_native_onnxruntime_target(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["targets"]["production"]["fuse_python_steps"] = True
    with pytest.raises(SpecError, match="fuse_python_steps needs onnx_runtime: python"):
        load_spec(_write_spec(tmp_path, mutate))


@pytest.mark.parametrize("target", list(LAYOUTS))
def test_warmup_samples_are_customers_the_step_accepts_when_rendered(
    repositories: dict[str, Path], target: str, schema: FeatureSchema
) -> None:
    """Triton feeds the warm-up files to the validating step at load: zeros or a stale category
    would make every load fail, so each sample must decode into a valid customer."""
    config = read_config(repositories[target] / LAYOUTS[target][0] / "config.pbtxt")
    assert config.model_warmup, "no warm-up: the first requests would pay the model's set-up"
    for sample in config.model_warmup:
        columns = {}
        for name, spec_of_input in sample.inputs.items():
            raw = (repositories[target] / LAYOUTS[target][0] / "warmup"
                   / spec_of_input.input_data_file).read_bytes()
            if TRITON_DTYPES[name] == "TYPE_STRING":
                (length,) = struct.unpack("<I", raw[:4])
                columns[name] = np.array([raw[4:4 + length]], dtype=object)
            else:
                columns[name] = np.frombuffer(raw, dtype=NUMPY_DTYPES[name])
        assert schema.validate(columns) == [], sample.name
        _, bad = schema.encode_checked(columns)
        assert not bad.any(), sample.name


def test_render_keeps_earlier_versions_of_python_steps_for_a_rollout(
        spec: Spec, artifacts: object, tmp_path: Path) -> None:
    """`make build-engines` of version n must leave version n-1 of the steps the gateway's
    rollouts load beside it; ensembles (one config for every version) keep only the new one."""
    import shutil

    from tritonkit.families.render import render_repository

    render_repository(spec, "embedded", tmp_path)
    for step in ("churn_packed", "churn"):  # a python step and an ensemble
        shutil.copytree(tmp_path / step / "1", tmp_path / step / "7")
    (tmp_path / "churn_packed" / "7" / "marker").write_text("version 7")
    render_repository(spec, "embedded", tmp_path)
    assert (tmp_path / "churn_packed" / "7" / "marker").read_text() == "version 7"
    assert (tmp_path / "churn_packed" / "1" / "model.py").exists()
    assert not (tmp_path / "churn" / "7").exists()
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}-versions-*"))  # no stash left
    production = tmp_path / "production"
    render_repository(spec, "production", production)
    for step in ("churn_preprocess_packed", "churn_model"):  # python, onnxruntime
        shutil.copytree(production / step / "1", production / step / "3")
    render_repository(spec, "production", production)
    assert (production / "churn_preprocess_packed" / "3" / "model.py").exists()
    assert not (production / "churn_model" / "3").exists()
