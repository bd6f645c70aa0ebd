"""The tabular-classifier family (churn, cancer): build a model's artefacts and variants, and
render its ensemble for a target. Everything model-specific comes from the spec's entry (its
`dataset`, `probability`) and the trained schema.

The ensemble `<name>` takes one raw input per feature (`tritonkit.tabular.schema`) and answers
the probability, risk_level and model_version (docs/contract.md, "The `churn` contract"). Its steps:

- fused (`fuse_python_steps`, embedded): `<name>_fused`, one python step that validates,
  encodes and runs the served variant with the postprocessing head appended;
- split, python runtime: `<name>_preprocess` (validation and encoding) then `<name>_model`
  (a python step calling onnxruntime on the same graph);
- production (native onnxruntime on GPUs): `<name>_preprocess`, then `<name>_model`, the served
  variant's numeric core alone (standard ops the CUDA and TensorRT providers run), then
  `<name>_postprocess`, the postprocessing head (string outputs, which GPU providers lack) in a
  numpy python step (repository/steps/postprocess.py), which also counts predictions for drift
  monitoring. No production step imports onnxruntime: the image has Triton's backend instead.

Beside it, the packed entry point `<name>_packed` takes the same rows as two tensors,
`numeric` and `categorical` (`tritonkit.tabular.packed`), and answers the same
outputs: fused, a second python step served as it is (an ensemble around it would add latency
and cost throughput); split, an ensemble of `<name>_preprocess_packed` then the same model (and
postprocess) steps. Both entry points count drift into the same series.

::

    build("churn", spec.models["churn"])                         # incremental
    render(Path("model_repository"), spec, "embedded", "churn", spec.models["churn"])
"""

from __future__ import annotations

import logging
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tritonkit.drift import binning as binning_module
from tritonkit.repository import config as cfg
from tritonkit.repository.layout import (
    ONNX_SESSION,
    STEPS_DIR,
    clear,
    copy_step,
    restore_versions,
    stash_versions,
    step_names,
)
from tritonkit.spec import (
    ENGINE_SOURCES,
    TENSORRT_VARIANTS,
    Spec,
    TabularClassifier,
    TargetName,
)
from tritonkit.tabular import packed as packed_module
from tritonkit.tabular import schema as schema_module
from tritonkit.tabular.artifacts import Rows, TabularArtifacts, build_variants, train_stage
from tritonkit.tabular.export import INPUT_NAME, append_head
from tritonkit.tabular.packed import (
    PACKED_CATEGORICAL,
    PACKED_DTYPES,
    PACKED_NUMERIC,
    PackedColumns,
    pack,
)
from tritonkit.tabular.schema import FeatureSchema

logger = logging.getLogger(__name__)

def _outputs(model: TabularClassifier) -> list[dict[str, object]]:
    return [cfg.tensor(name, dtype, [1]) for name, dtype in model.outputs.items()]


def build(name: str, model: TabularClassifier, *, force: bool = False) -> dict[str, Any]:
    """Train/export/profile where the inputs changed, then make and gate the variants (the
    dataset read at most once)."""
    paths = TabularArtifacts.for_version(model.version, name=name)
    rows = Rows(model)
    trained = train_stage(model, paths, rows, force=force)
    variants = build_variants(name, model, paths, rows, force=force or trained)
    return {"model": name, "trained": trained, **variants}


def _raw_inputs(schema: FeatureSchema) -> list[dict[str, object]]:
    return [cfg.tensor(n, dtype, [1]) for n, dtype in schema.triton_dtypes().items()]


def _packed_inputs(schema: FeatureSchema) -> list[dict[str, object]]:
    """The packed pair: `numeric` [numeric features], `categorical` [categorical features]."""
    order = PackedColumns.of(schema)
    widths = {PACKED_NUMERIC: len(order.numeric), PACKED_CATEGORICAL: len(order.categorical)}
    return [cfg.tensor(name, PACKED_DTYPES[name], [widths[name]]) for name in order.tensors]


def _warmup_row(schema: FeatureSchema) -> dict[str, object]:
    """A valid row: the training mean of each number, the first category of each column."""
    row: dict[str, object] = {f.name: max(f.minimum, round(f.mean)) for f in schema.numeric}
    row.update({c.name: c.categories[0] for c in schema.categorical})
    return row


def _string_payload(values: Sequence[object]) -> bytes:
    """BYTES elements as Triton reads them from a file: each one's length (uint32), then it."""
    raws = [str(value).encode() for value in values]
    return b"".join(struct.pack("<I", len(raw)) + raw for raw in raws)


def _warmup_tensors(schema: FeatureSchema, packed: bool
                    ) -> dict[str, tuple[str, list[int], bytes]]:
    """name -> (Triton data type, dims, file contents) of the warm-up customer's tensors, one
    per feature or the packed pair."""
    row = _warmup_row(schema)
    if packed:
        order = PackedColumns.of(schema)
        numeric, categorical = pack({k: [v] for k, v in row.items()}, order)
        both = {PACKED_NUMERIC: (PACKED_DTYPES[PACKED_NUMERIC], [numeric.shape[1]],
                                 numeric.tobytes()),
                PACKED_CATEGORICAL: (PACKED_DTYPES[PACKED_CATEGORICAL], [categorical.shape[1]],
                                     _string_payload(categorical[0]))}
        return {name: both[name] for name in order.tensors}
    tensors = {}
    numpy_dtypes = schema.numpy_dtypes()
    for feature, dtype in schema.triton_dtypes().items():
        value = row[feature]
        if dtype == "TYPE_STRING":
            payload = _string_payload([value])
        else:
            payload = np.array([value], dtype=numpy_dtypes[feature]).tobytes()
        tensors[feature] = (dtype, [1], payload)
    return tensors


def _write_warmup_files(model_dir: Path, tensors: dict[str, tuple[str, list[int], bytes]],
                        batch_sizes: tuple[int, ...]) -> list[dict[str, object]]:
    """One warm-up sample per batch size, from files (zeros would fail validation)."""
    if not batch_sizes:
        return []
    warmup_dir = model_dir / "warmup"
    warmup_dir.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, dict[str, object]] = {}
    for name, (data_type, dims, payload) in tensors.items():
        (warmup_dir / name).write_bytes(payload)
        inputs[name] = {"data_type": data_type, "dims": dims, "input_data_file": name}
    return [
        {"name": f"valid_customer_batch_{b}", "batch_size": b, "inputs": inputs}
        for b in batch_sizes
    ]


def _drift_files(model: TabularClassifier, paths: TabularArtifacts) -> list[tuple[Path, str]]:
    """The publisher, the binning rule and the reference profile, when drift metrics are on."""
    if not model.drift_metrics.enabled:
        return []
    return [(Path(__file__).parents[1] / "repository" / "steps" / "drift_publisher.py",
             "drift_publisher.py"),
            (Path(binning_module.__file__), "binning.py"),
            (paths.profile, "reference_profile.json")]


def _drift_parameters(name: str, model: TabularClassifier) -> dict[str, str]:
    """Config parameters that tell a step's drift publisher its model and flush interval."""
    if not model.drift_metrics.enabled:
        return {}
    return {"drift_model": name,
            "drift_flush_interval_s": f"{model.drift_metrics.flush_interval_s:g}",
            # Triton sends each instance its warm-up samples, one request each, before any
            # traffic: the publisher leaves them out of the counts.
            "drift_warmup_requests": str(len(model.warmup_batch_sizes))}


def _save(graph: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(graph.SerializeToString(deterministic=True))


def _zeros_warmup(batch_sizes: tuple[int, ...], tensor: str, dtype: str, dims: list[int]
                  ) -> list[dict[str, object]]:
    return [{"name": f"zeros_batch_{b}", "batch_size": b,
             "inputs": {tensor: {"data_type": dtype, "dims": dims, "zero_data": True}}}
            for b in batch_sizes]


def render(repository: Path, spec: Spec, target_name: TargetName, name: str,
           model: TabularClassifier) -> list[Path]:
    target = spec.targets[target_name]
    paths = TabularArtifacts.for_version(model.version, name=name).require()
    variant = model.variants.serve[target_name]
    core = paths.require_variant(ENGINE_SOURCES.get(variant, variant))
    schema = FeatureSchema.load(paths.schema)
    if schema.names != model.dataset.features:
        raise ValueError(f"{paths.schema}: its features {list(schema.names)} are not the "
                         f"spec's {list(model.dataset.features)}: run `make build-engines`")
    names = step_names(name)
    outputs = _outputs(model)
    probability = model.probability
    version = str(model.version)
    written = []
    earlier = stash_versions(repository, name, version)  # a rollout loads them beside this one
    clear(repository, name)
    features_tensor = cfg.tensor(INPUT_NAME, "TYPE_FP32", [schema.width])
    full_graph = append_head(onnx.load(core), model.risk_thresholds, version)
    drift_files = _drift_files(model, paths)
    drift_parameters = _drift_parameters(name, model)
    native = target.onnx_runtime == "onnxruntime_onnx"

    def preprocess_step(step_name: str, *, packed: bool, response_cache: bool = False) -> Path:
        """The validating python step, for the per-feature inputs or the packed pair: python
        on every target, with the whole graph inside when fused."""
        step_dir = repository / step_name
        files = [*drift_files, (Path(schema_module.__file__), "features.py"),
                 (Path(packed_module.__file__), "packed.py"),
                 (paths.schema, "feature_schema.json")]
        if target.fuse_python_steps:
            copy_step("tabular_fused.py", step_dir / version, [
                *files, (STEPS_DIR / "preprocess.py", "tabular_preprocess.py"), ONNX_SESSION])
            _save(full_graph, step_dir / version / "model.onnx")
        else:
            copy_step("preprocess.py", step_dir / version, files)
        return cfg.write_config(cfg.python_step_config(
            name=step_name, model=model, step=model.steps.preprocess,
            target=target_name, inputs=_packed_inputs(schema) if packed else _raw_inputs(schema),
            outputs=outputs if target.fuse_python_steps else [features_tensor],
            parameters=drift_parameters,
            warmup=_write_warmup_files(step_dir, _warmup_tensors(schema, packed),
                                       model.warmup_batch_sizes),
            response_cache=response_cache,
        ), step_dir)

    pre_name = names["fused"] if target.fuse_python_steps else names["preprocess"]
    written.append(preprocess_step(pre_name, packed=False))
    all_outputs = {o: o for o in model.outputs}
    steps: list[tuple[str, dict[str, str], dict[str, str]]] = [(
        pre_name, {n: n for n in schema.names},
        all_outputs if target.fuse_python_steps else {INPUT_NAME: INPUT_NAME},
    )]

    if not target.fuse_python_steps:
        model_dir = repository / names["model"]
        sizes = model.warmup_batch_sizes
        if target.gpu:
            # onnxruntime's TensorRT accelerator widens its profile to each shape it sees and
            # rebuilds the engine for one outside it: the largest batch first, then batch 1,
            # and no engine is built under traffic
            sizes = (model.max_batch_size, 1, *(b for b in sizes
                                                if b not in (1, model.max_batch_size)))
        warmup = _zeros_warmup(sizes, INPUT_NAME, "TYPE_FP32", [schema.width])
        if native:
            # the numeric core alone: standard ops on Triton's onnxruntime backend (with
            # TensorRT on GPUs), or a TensorRT engine per GPU where the spec serves one
            if variant in TENSORRT_VARIANTS:
                engines = paths.engines(variant)
                for plan in engines.values():
                    shutil.copy2(paths.root / "engines" / plan,
                                 _mkdir(model_dir / version) / plan)
                model_config = cfg.tensorrt_plan_config(
                    name=names["model"], model=model, step=model.steps.model,
                    target=target_name, engines=engines, inputs=[features_tensor],
                    outputs=outputs[:1], warmup=warmup)
            else:
                shutil.copy2(core, _mkdir(model_dir / version) / "model.onnx")
                model_config = cfg.onnx_step_config(
                    name=names["model"], model=model, step=model.steps.model,
                    target=target_name, gpu=target.gpu, variant=variant,
                    inputs=[features_tensor], outputs=outputs[:1], warmup=warmup)
            written.append(cfg.write_config(model_config, model_dir))
            steps.append((names["model"], {INPUT_NAME: INPUT_NAME},
                          {probability: f"{probability}_raw"}))
            # the head (string outputs, which GPU providers lack) in a numpy python step that
            # also counts predictions
            post_dir = repository / names["postprocess"]
            copy_step("postprocess.py", post_dir / version, drift_files)
            head = {"risk_medium": repr(model.risk_thresholds.medium),
                    "risk_high": repr(model.risk_thresholds.high), "model_version": version}
            written.append(cfg.write_config(cfg.python_step_config(
                name=names["postprocess"], model=model, step=model.steps.preprocess,
                target=target_name, inputs=[cfg.tensor(f"{probability}_in", "TYPE_FP32", [1])],
                outputs=outputs,
                parameters={**head, **drift_parameters},
                warmup=_zeros_warmup(model.warmup_batch_sizes, f"{probability}_in",
                                     "TYPE_FP32", [1])), post_dir))
            steps.append((names["postprocess"], {f"{probability}_in": f"{probability}_raw"},
                          all_outputs))
        else:
            copy_step("onnx_model.py", model_dir / version, [*drift_files, ONNX_SESSION])
            _save(full_graph, model_dir / version / "model.onnx")
            written.append(cfg.write_config(cfg.python_step_config(
                name=names["model"], model=model, step=model.steps.model,
                target=target_name, inputs=[features_tensor], outputs=outputs,
                parameters={"intra_op_num_threads": "1", **drift_parameters},
                warmup=warmup), model_dir))
            steps.append((names["model"], {INPUT_NAME: INPUT_NAME}, all_outputs))

    # the ensemble clients call
    ensemble_dir = repository / names["ensemble"]
    _mkdir(ensemble_dir / version)
    written.append(cfg.write_config(cfg.ensemble_config(
        name=names["ensemble"], max_batch_size=model.max_batch_size,
        inputs=_raw_inputs(schema), outputs=outputs, steps=steps,
        response_cache=model.response_cache,
    ), ensemble_dir))

    # the packed entry point: the same steps after its own preprocess step
    if target.fuse_python_steps:
        # served as it is: an ensemble around the one step cost ~0.05 ms a request and 5-10 %
        # of the throughput on the embedded target
        written.append(preprocess_step(names["packed"], packed=True,
                                       response_cache=model.response_cache))
    else:
        written.append(preprocess_step(names["preprocess_packed"], packed=True))
        packed_dir = repository / names["packed"]
        _mkdir(packed_dir / version)
        packed_map = {name: name for name in PackedColumns.of(schema).tensors}
        written.append(cfg.write_config(cfg.ensemble_config(
            name=names["packed"], max_batch_size=model.max_batch_size,
            inputs=_packed_inputs(schema), outputs=outputs,
            steps=[(names["preprocess_packed"], packed_map, {INPUT_NAME: INPUT_NAME}),
                   *steps[1:]],
            response_cache=model.response_cache,
        ), packed_dir))
    restore_versions(repository, earlier)
    return written


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
