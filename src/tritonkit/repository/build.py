"""Render a Triton model repository for one target from the spec and the build artefacts.

For the churn pipeline it writes the ensemble `churn` that clients call and its steps:

- split (production): `churn_preprocess` (python: validation and encoding) then `churn_model`
  (the ONNX classifier with its postprocessing head on Triton's native onnxruntime backend,
  TensorRT on GPUs; or a python step calling onnxruntime where no native backend exists);
- fused (`fuse_python_steps`, embedded): `churn_pipeline`, one python step that validates,
  encodes and runs the same ONNX graph, saving a python hop.

::

    render_repository(load_spec(), "embedded")    # -> model_repository/
"""

from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path

import numpy as np

from tritonkit import features as features_module
from tritonkit.artifacts import ChurnArtifacts
from tritonkit.drift import binning as binning_module
from tritonkit.export.onnx_export import INPUT_NAME, OUTPUT_NAMES
from tritonkit.features import NUMPY_DTYPES, OUTPUT_DTYPES, TRITON_DTYPES, FeatureSchema
from tritonkit.paths import PROJECT_ROOT
from tritonkit.repository import config as cfg
from tritonkit.spec import Pipeline, Spec

logger = logging.getLogger(__name__)

STEPS_DIR = Path(__file__).resolve().parent / "steps"
OUTPUTS = tuple(cfg.tensor(name, dtype, [1]) for name, dtype in OUTPUT_DTYPES.items())


def step_names(pipeline_name: str) -> dict[str, str]:
    """Triton model names of a pipeline's ensemble and steps."""
    return {
        "ensemble": pipeline_name,
        "preprocess": f"{pipeline_name}_preprocess",
        "model": f"{pipeline_name}_model",
        "fused": f"{pipeline_name}_pipeline",
    }


def _raw_inputs(schema: FeatureSchema) -> list[dict[str, object]]:
    return [cfg.tensor(name, TRITON_DTYPES[name], [1]) for name in schema.names]


def _warmup_row(schema: FeatureSchema) -> dict[str, object]:
    """A valid customer: the training mean of each number, the first category of each column."""
    row: dict[str, object] = {f.name: max(f.minimum, round(f.mean)) for f in schema.numeric}
    row.update({c.name: c.categories[0] for c in schema.categorical})
    return row


def _write_warmup_files(model_dir: Path, schema: FeatureSchema, batch_sizes: tuple[int, ...]
                        ) -> list[dict[str, object]]:
    """One warm-up sample per batch size, from files (zeros would fail validation)."""
    if not batch_sizes:
        return []
    warmup_dir = model_dir / "warmup"
    warmup_dir.mkdir(parents=True, exist_ok=True)
    row = _warmup_row(schema)
    inputs: dict[str, dict[str, object]] = {}
    for name in schema.names:
        value = row[name]
        if TRITON_DTYPES[name] == "TYPE_STRING":
            raw = str(value).encode()
            payload = struct.pack("<I", len(raw)) + raw
        else:
            payload = np.array([value], dtype=NUMPY_DTYPES[name]).tobytes()
        (warmup_dir / name).write_bytes(payload)
        inputs[name] = {"data_type": TRITON_DTYPES[name], "dims": [1], "input_data_file": name}
    return [
        {"name": f"valid_customer_batch_{b}", "batch_size": b, "inputs": inputs}
        for b in batch_sizes
    ]


def _copy_step(step_file: str, folder: Path, pipeline: Pipeline, paths: ChurnArtifacts
               ) -> None:
    """A python step as `folder/model.py`, with the modules it imports and, when the spec turns
    drift metrics on, the publisher, the binning rule and the reference profile."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(STEPS_DIR / step_file, folder / "model.py")
    shutil.copy2(STEPS_DIR / "step_errors.py", folder / "step_errors.py")
    if pipeline.drift_metrics.enabled:
        shutil.copy2(STEPS_DIR / "drift_publisher.py", folder / "drift_publisher.py")
        shutil.copy2(Path(binning_module.__file__), folder / "binning.py")
        shutil.copy2(paths.profile, folder / "reference_profile.json")


def _drift_parameters(name: str, pipeline: Pipeline) -> dict[str, str]:
    """Config parameters that tell a step's drift publisher its model and flush interval."""
    if not pipeline.drift_metrics.enabled:
        return {}
    return {"drift_model": name,
            "drift_flush_interval_s": f"{pipeline.drift_metrics.flush_interval_s:g}",
            # Triton sends each instance its warm-up samples, one request each, before any
            # traffic: the publisher leaves them out of the counts.
            "drift_warmup_requests": str(len(pipeline.warmup_batch_sizes))}


def _render_churn(
    repository: Path, spec: Spec, target_name: str, name: str, pipeline: Pipeline
) -> list[Path]:
    target = spec.targets[target_name]
    paths = ChurnArtifacts.for_version(pipeline.version).require()
    schema = FeatureSchema.load(paths.schema)
    names = step_names(name)
    version = str(pipeline.version)
    written = []

    for stale in names.values():
        shutil.rmtree(repository / stale, ignore_errors=True)
    features_tensor = cfg.tensor(INPUT_NAME, "TYPE_FP32", [schema.width])

    # preprocess: python on every target; with the ONNX graph inside when fused
    pre_name = names["fused"] if target.fuse_python_steps else names["preprocess"]
    pre_dir = repository / pre_name
    (pre_dir / version).mkdir(parents=True)
    _copy_step("preprocess.py", pre_dir / version, pipeline, paths)
    shutil.copy2(Path(features_module.__file__), pre_dir / version / "features.py")
    shutil.copy2(paths.schema, pre_dir / version / "feature_schema.json")
    if target.fuse_python_steps:
        shutil.copy2(paths.onnx, pre_dir / version / "model.onnx")
    written.append(cfg.write_config(cfg.python_step_config(
        name=pre_name, pipeline=pipeline, step=pipeline.steps.preprocess,
        target=target_name, inputs=_raw_inputs(schema),
        outputs=list(OUTPUTS) if target.fuse_python_steps else [features_tensor],
        parameters=_drift_parameters(name, pipeline),
        warmup=_write_warmup_files(pre_dir, schema, pipeline.warmup_batch_sizes),
    ), pre_dir))
    steps: list[tuple[str, dict[str, str], dict[str, str]]] = [(
        pre_name, {n: n for n in schema.names},
        {o: o for o in OUTPUT_NAMES} if target.fuse_python_steps else {INPUT_NAME: INPUT_NAME},
    )]

    # model: the ONNX graph on onnxruntime, as a step of its own
    if not target.fuse_python_steps:
        model_dir = repository / names["model"]
        (model_dir / version).mkdir(parents=True)
        shutil.copy2(paths.onnx, model_dir / version / "model.onnx")
        model_warmup: list[dict[str, object]] = [
            {"name": f"zeros_batch_{b}", "batch_size": b,
             "inputs": {INPUT_NAME: {"data_type": "TYPE_FP32", "dims": [schema.width],
                                     "zero_data": True}}}
            for b in pipeline.warmup_batch_sizes
        ]
        if target.onnx_runtime == "python":
            _copy_step("onnx_model.py", model_dir / version, pipeline, paths)
            model_config = cfg.python_step_config(
                name=names["model"], pipeline=pipeline, step=pipeline.steps.model,
                target=target_name, inputs=[features_tensor], outputs=OUTPUTS,
                parameters={"intra_op_num_threads": "1", **_drift_parameters(name, pipeline)},
                warmup=model_warmup,
            )
        else:
            model_config = cfg.onnx_step_config(
                name=names["model"], pipeline=pipeline, step=pipeline.steps.model,
                target=target_name, gpu=target.gpu, inputs=[features_tensor], outputs=OUTPUTS,
                warmup=model_warmup,
            )
        written.append(cfg.write_config(model_config, model_dir))
        steps.append((names["model"], {INPUT_NAME: INPUT_NAME}, {o: o for o in OUTPUT_NAMES}))

    # the ensemble clients call
    ensemble_dir = repository / names["ensemble"]
    (ensemble_dir / version).mkdir(parents=True)
    written.append(cfg.write_config(cfg.ensemble_config(
        name=names["ensemble"],
        max_batch_size=pipeline.max_batch_size,
        inputs=_raw_inputs(schema),
        outputs=OUTPUTS,
        steps=steps,
        response_cache=pipeline.response_cache,
    ), ensemble_dir))
    return written


def repository_path(spec: Spec, target_name: str) -> Path:
    """Absolute path of a target's model repository."""
    path = spec.targets[target_name].repository
    return path if path.is_absolute() else PROJECT_ROOT / path


def render_repository(spec: Spec, target_name: str, repository: Path | None = None) -> list[Path]:
    """Write every pipeline's models for `target_name`; returns the config.pbtxt paths."""
    if target_name not in spec.targets:
        raise KeyError(f"unknown target {target_name!r}; the spec has {sorted(spec.targets)}")
    repository = repository or repository_path(spec, target_name)
    repository.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in spec.pipelines.items():
        written += _render_churn(repository, spec, target_name, name, pipeline)
    logger.info("rendered %d models for target %s into %s", len(written), target_name, repository)
    return written
