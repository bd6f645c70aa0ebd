"""The variant stage every family shares: make each variant of the FP32 graph with its library,
gate it against the source model, keep those that pass, and build TensorRT engines where a GPU
and TensorRT are present (and say why not where they are not).

    summary = build_variants("churn", model, root=paths.root, fp32=paths.variant("fp32"),
                             calibration=feeds, gate=check, manifest=manifest)
    summary["gates"]["int8_static"]["message"]      # "int8_static: passed, ΔROC-AUC -0.0003 ..."
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tritonkit.spec import ENGINE_SOURCES, TENSORRT_VARIANTS, ModelSpec
from tritonkit.stages.manifest import Manifest, fingerprint
from tritonkit.variants import onnx_variants, providers, tensorrt
from tritonkit.variants.gates import GateResult

logger = logging.getLogger(__name__)

Feeds = Callable[[], Iterable[dict[str, np.ndarray]]]
Gate = Callable[[str, Path], GateResult]
#: Source files whose change rebuilds every variant.
SOURCES = (Path(onnx_variants.__file__), Path(tensorrt.__file__),
           Path(__file__).with_name("manifest.py"), Path(__file__),
           Path(onnx_variants.__file__).with_name("gates.py"))


def engines_of(root: Path, variant: str) -> dict[str, str]:
    """compute capability -> plan file, from `engines/engines.json` (empty when none built)."""
    index = root / "engines" / "engines.json"
    if not index.exists():
        return {}
    entries = json.loads(index.read_text())
    return {e["compute_capability"]: e["file"] for e in entries if e["variant"] == variant}


def build_variants(name: str, model: ModelSpec, *, root: Path, fp32: Path, calibration: Feeds,
                   gate: Gate, manifest: Manifest, force: bool = False) -> dict[str, Any]:
    """Make, gate and keep the variants `model.variants.build` names (with the spec's
    `variants.options`); returns the summary that the manifest, `gates.json` and the model card
    hold."""
    options = dict(model.variants.options)
    if "tensorrt_int8" in model.variants.serve.values():
        # TensorRT parses only symmetric INT8 Q/DQ with FP32 biases (explicit quantization)
        options["int8_static"] = {**options.get("int8_static", {}),
                                  **onnx_variants.TENSORRT_STATIC}
    key = fingerprint(values={"build": model.variants.build, "gate": model.gate.model_dump(),
                              "options": options, "serve": model.variants.serve},
                      files=[fp32, *SOURCES])
    if not force and manifest.fresh("variants", key):
        logger.info("%s: variants up to date (%s)", name, ", ".join(model.variants.build))
        return dict(manifest.stage("variants")["summary"])
    started = time.perf_counter()
    out = root / "variants"
    gates: dict[str, dict[str, Any]] = {}
    kept: list[Path] = [fp32]
    timings: dict[str, float] = {}
    for variant in model.variants.build:
        path = out / f"{variant}.onnx"
        begun = time.perf_counter()
        if variant != "fp32":
            logger.info("%s: making %s", name, variant)
            onnx_variants.make_variant(variant, fp32, path, calibration=calibration,
                                       **options.get(variant, {}))
        result = gate(variant, path)
        timings[variant] = round(time.perf_counter() - begun, 2)
        gates[variant] = result.to_dict()
        if result.passed:  # a variant that failed may not even load
            gates[variant].update(latency_ms_batch_1=_latency_ms(path, calibration),
                                  fallbacks=_fallbacks(path))
        if result.passed:
            logger.info("%s: %s", name, result.message)
            kept.append(path)
        else:
            logger.warning("%s: %s; left out of the repository", name, result.message)
            if variant == "fp32":
                raise RuntimeError(f"{name}: the FP32 graph fails its own gate: {result.message}")
            path.unlink(missing_ok=True)
    skipped = _engines(name, model, root, gates)
    summary = {"gates": gates, "skipped": skipped, "seconds": timings}
    (root / "gates.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    manifest.record("variants", key, outputs=[*kept, root / "gates.json"],
                    seconds=time.perf_counter() - started, extra={"summary": summary})
    manifest.save()
    return summary


def _fallbacks(path: Path) -> dict[str, list[str]]:
    """Per GPU provider, the nodes it would leave to the CPU provider ("name (op): reason")."""
    graph = onnx.load(str(path))
    return {provider: [f"{f.node} ({f.op_type}): {f.reason}"
                       for f in providers.fallback_report(graph, provider)]
            for provider in (providers.CUDA, providers.TENSORRT)}


def _latency_ms(path: Path, calibration: Feeds, runs: int = 60) -> float:
    """Median in-process latency of one row on one onnxruntime thread (the model card's figure;
    `make bench-variants` measures properly, interleaved, at several batch sizes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {k: v[:1] for k, v in next(iter(calibration())).items()}
    session.run(None, feed)
    times = []
    for _ in range(runs):
        begun = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - begun)
    return round(float(np.median(times)) * 1000, 4)


def _profile(path: Path, model: ModelSpec) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """TensorRT's optimization profile: batch 1 to max_batch_size, and, for a text model, every
    sequence length up to max_sequence_length (the warm-up visits the corners)."""
    graph = onnx.load(str(path), load_external_data=False)
    longest = getattr(model, "max_sequence_length", None)
    shapes = {}
    for tensor in graph.graph.input:
        rest = [d.dim_value if d.HasField("dim_value") else None
                for d in list(tensor.type.tensor_type.shape.dim)[1:]]
        if None in rest and longest is None:
            raise ValueError(f"{path.name}: input {tensor.name} has a dynamic dimension the "
                             "spec does not bound")
        low = [1 if d is None else d for d in rest]
        high = [longest if d is None else d for d in rest]
        shapes[tensor.name] = ([1, *low], [max(1, model.max_batch_size // 2), *high],
                               [model.max_batch_size, *high])
    return shapes


def _engines(name: str, model: ModelSpec, root: Path, gates: dict[str, Any]) -> dict[str, str]:
    """TensorRT engines of the served TensorRT variants; the reason for each one not built."""
    wanted = [v for v in TENSORRT_VARIANTS if v in model.variants.serve.values()]
    reason = tensorrt.tensorrt_available()
    skipped: dict[str, str] = {}
    for variant in sorted(TENSORRT_VARIANTS):
        source = ENGINE_SOURCES[variant]
        if reason is not None:
            skipped[variant] = f"not built: {reason}"
        elif variant not in wanted:
            skipped[variant] = "not built: no target serves it (variants.serve)"
        elif not gates.get(source, {}).get("passed"):
            skipped[variant] = f"not built: its source variant {source} failed its gate"
    if reason is not None:
        logger.warning("%s: TensorRT engines skipped: %s", name, reason)
    for variant in wanted:
        if variant in skipped:
            continue
        source = root / "variants" / f"{ENGINE_SOURCES[variant]}.onnx"
        info = tensorrt.build_engine(source, root / "engines", precision=variant.split("_")[1],
                                     shapes=_profile(source, model))
        index = root / "engines" / "engines.json"
        entries = json.loads(index.read_text()) if index.exists() else []  # other GPUs' plans
        entries = [e for e in entries if not (e["variant"] == variant and
                                              e["compute_capability"] == info.compute_capability)]
        entries.append({"variant": variant, **info.to_dict()})
        index.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return skipped
