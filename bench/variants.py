#!/usr/bin/env python3
"""Variant benchmark (`make bench-variants`): every variant of every model, in-process and through
Triton, in one run, as ratios to FP32 with each variant's accuracy gate beside it.

- in-process: one onnxruntime thread (what one Triton instance gets); median latency of one row
  (one customer, one text) and rows per second at a large batch (256 customers, 32 texts);
  variants interleaved round by round so drift of the machine hits them alike;
- through Triton: the embedded repository serving each CPU variant (fp16 and TensorRT are GPU
  variants: in-process only here), `wrk` over HTTP JSON: p50 at concurrency 1, throughput at 16;
- MiniLM's dynamic batching on / off through Triton at concurrency 16, beside the in-process
  gain of batch 16 over 16 single calls, same variant, same run.

    python bench/variants.py --duration-s 5 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from loadgen import kserve_body, run_wrk, start_benchmark, write_lua

from tritonkit.client.customers import read_customers
from tritonkit.families.render import render_repository
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import ServerSettings, TritonServer
from tritonkit.spec import CPU_VARIANTS, Spec, load_spec
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.contract import contract
from tritonkit.text.artifacts import TextEmbeddingArtifacts
from tritonkit.text.tokenizer import length_buckets

CHURN = contract("churn")
ALL_FEATURES = CHURN.features



logger = logging.getLogger("bench")
BIG_BATCH = {"churn": 256, "minilm": 32}


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(name: str, spec: Spec) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray],
                                            list[str] | list[dict[str, Any]]]:
    """(single-row feeds to rotate through, one big batch, request payload sources)."""
    model = spec.models[name]
    if name == "churn":
        paths = TabularArtifacts.for_version(model.version).require()
        customers = read_customers(paths.test_rows)
        schema = paths.load_schema()
        matrix = schema.encode({n: np.array([c[n] for c in customers]) for n in ALL_FEATURES})
        singles = [{"features": matrix[i:i + 1]} for i in range(32)]
        return singles, {"features": matrix[:BIG_BATCH[name]]}, customers[:64]
    text_paths = TextEmbeddingArtifacts.for_version(model.version, name=name).require()
    texts = text_paths.read_texts("evaluation")
    tokenizer = text_paths.load_tokenizer()
    length = model.max_sequence_length

    def feed(batch: list[str]) -> dict[str, np.ndarray]:
        ids, mask = tokenizer.encode(batch, length)
        return {"input_ids": ids, "attention_mask": mask}

    return [feed([t]) for t in texts[:32]], feed(texts[:BIG_BATCH[name]]), texts[:64]


def _bucketed(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> None:
    """What the text step does with a batch: one call per group of alike lengths."""
    if "attention_mask" not in feed:
        session.run(None, feed)
        return
    lengths = feed["attention_mask"].sum(axis=1)
    for rows in length_buckets(lengths):
        longest = int(lengths[rows].max())
        session.run(None, {k: v[rows, :longest] for k, v in feed.items()})


def _variant_paths(name: str, spec: Spec) -> dict[str, Path]:
    model = spec.models[name]
    root = Path("artifacts") / name / str(model.version)
    gates = json.loads((root / "gates.json").read_text())["gates"]
    return {v: root / "variants" / f"{v}.onnx" for v in model.variants.build
            if gates.get(v, {}).get("passed") and (root / "variants" / f"{v}.onnx").exists()}


def in_process(name: str, spec: Spec, rounds: int) -> dict[str, dict[str, float]]:
    singles, big, _ = _feeds(name, spec)
    sessions = {v: _session(p) for v, p in _variant_paths(name, spec).items()}
    single_ms: dict[str, list[float]] = {v: [] for v in sessions}
    big_rows: dict[str, list[float]] = {v: [] for v in sessions}
    per_text_16: dict[str, list[float]] = {v: [] for v in sessions}
    padded_16: dict[str, list[float]] = {v: [] for v in sessions}
    single_16: dict[str, list[float]] = {v: [] for v in sessions}
    rows = next(iter(big.values())).shape[0]
    batch_16 = {k: v[:16] for k, v in big.items()}
    if "attention_mask" in big:  # padded to the longest of these 16, as a server would
        longest = int(big["attention_mask"][:16].sum(axis=1).max())
        batch_16 = {k: v[:, :longest] for k, v in batch_16.items()}
    for session in sessions.values():  # warm-up
        session.run(None, singles[0])
        session.run(None, big)
    for _ in range(rounds):
        for variant, session in sessions.items():
            for feed in singles:
                begun = time.perf_counter()
                session.run(None, feed)
                single_ms[variant].append((time.perf_counter() - begun) * 1000)
            begun = time.perf_counter()
            for _ in range(3):
                session.run(None, big)
            big_rows[variant].append(3 * rows / (time.perf_counter() - begun))
            begun = time.perf_counter()
            for feed in singles[:16]:  # the same 16 rows as batch_16, one call each
                session.run(None, feed)
            single_16[variant].append((time.perf_counter() - begun) * 1000 / 16)
            begun = time.perf_counter()
            session.run(None, batch_16)
            padded_16[variant].append((time.perf_counter() - begun) * 1000 / 16)
            begun = time.perf_counter()
            _bucketed(session, batch_16)
            per_text_16[variant].append((time.perf_counter() - begun) * 1000 / 16)
    return {v: {"p50_ms_batch_1": statistics.median(single_ms[v]),
                "rows_per_s_big_batch": statistics.median(big_rows[v]),
                "ms_per_row_16_single_calls": statistics.median(single_16[v]),
                "ms_per_row_batch_16": statistics.median(per_text_16[v]),
                "ms_per_row_batch_16_padded": statistics.median(padded_16[v]),
                "big_batch": float(rows)} for v in sessions}


def _with(spec: Spec, name: str, *, variant: str | None = None, batching: bool | None = None
          ) -> Spec:
    model = spec.models[name]
    update: dict[str, Any] = {}
    if variant is not None:
        update["variants"] = model.variants.model_copy(
            update={"serve": {**model.variants.serve, "embedded": variant}})
    if batching is not None:
        steps = model.steps
        update["steps"] = steps.model_copy(update={
            step: getattr(steps, step).model_copy(update={
                "dynamic_batching": getattr(steps, step).dynamic_batching.model_copy(
                    update={"enabled": batching})})
            for step in ("preprocess", "model")})
    return spec.only(name).model_copy(
        update={"models": {name: model.model_copy(update=update)}})


def _bodies(name: str, sources: list[Any]) -> list[str]:
    if name == "churn":
        return [kserve_body(c) for c in sources]
    return [json.dumps({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES",
                                    "data": [t]}]}, separators=(",", ":")) for t in sources]


def through_triton(spec: Spec, name: str, work: Path, lua: Path, duration_s: float,
                   concurrency: tuple[int, ...] = (1, 16)) -> dict[str, float]:
    repository = work / "repository"
    shutil.rmtree(repository, ignore_errors=True)
    render_repository(spec, "embedded", repository)
    server = TritonServer(ServerSettings(
        model_repository=repository, http_port=free_port(), grpc_port=free_port(),
        metrics_port=free_port(), log_file=work / "tritonserver.log")).start(timeout_s=180)
    try:
        url = f"{server.http_url}/v2/models/{name}/infer"
        run_wrk(url, lua, 16, 2)  # warm-up, discarded
        result = {}
        for c in concurrency:
            row = run_wrk(url, lua, c, duration_s)
            result[f"c{c}_p50_ms"] = row["p50_ms"]
            result[f"c{c}_p99_ms"] = row["p99_ms"]
            result[f"c{c}_requests_per_s"] = row["requests_per_s"]
        return result
    finally:
        server.stop()


def _gate_text(gate: dict[str, Any]) -> str:
    m = gate["metrics"]
    if "mean_cosine" in m:
        return f"cos mean {m['mean_cosine']:.4f} min {m['min_cosine']:.4f}"
    return (f"max|Δp| {m['max_abs_delta_p']:.2g} ΔAUC {m['delta_roc_auc']:+.4f} "
            f"agree {m['risk_agreement']:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0, help="wrk duration per point")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved in-process rounds")
    parser.add_argument("--model", action="append", help="models to measure (default: all)")
    parser.add_argument("--skip-triton", action="store_true", help="in-process figures only")
    parser.add_argument("--output", type=Path, default=Path("bench/results/variants.json"))
    args = parser.parse_args()
    if not start_benchmark(*(() if args.skip_triton else ("wrk",))):
        return 1
    spec = load_spec()
    names = args.model or list(spec.models)
    work = Path(tempfile.mkdtemp(prefix="bench-variants-"))
    results: dict[str, Any] = {}
    for name in names:
        logger.info("%s: in-process, %d rounds", name, args.rounds)
        inproc = in_process(name, spec, args.rounds)
        gates = json.loads((Path("artifacts") / name / str(spec.models[name].version)
                            / "gates.json").read_text())["gates"]
        served: dict[str, dict[str, float]] = {}
        batching: dict[str, dict[str, float]] = {}
        if not args.skip_triton:
            lua = write_lua(_bodies(name, _feeds(name, spec)[2]), work)
            for variant in inproc:
                if variant in CPU_VARIANTS:
                    logger.info("%s: %s through Triton", name, variant)
                    served[variant] = through_triton(_with(spec, name, variant=variant), name,
                                                     work, lua, args.duration_s)
            if spec.models[name].family == "text_embedding":
                variant = spec.models[name].variants.serve["embedded"]
                for on in (True, False):
                    logger.info("%s: dynamic batching %s", name, "on" if on else "off")
                    batching["on" if on else "off"] = through_triton(
                        _with(spec, name, variant=variant, batching=on), name, work, lua,
                        args.duration_s, concurrency=(16,))
                batching["variant"] = variant  # type: ignore[assignment]
        results[name] = {"in_process": inproc, "triton": served, "batching": batching,
                         "gates": {v: gates[v]["metrics"] for v in inproc}}
        _print(name, inproc, served, batching, gates)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures: {args.output}")
    return 0


def _print(name: str, inproc: dict[str, dict[str, float]], served: dict[str, dict[str, float]],
           batching: dict[str, Any], gates: dict[str, Any]) -> None:
    base, base_t = inproc["fp32"], served.get("fp32")
    big = int(base["big_batch"])
    print(f"\n{name}: ratios to fp32 (latency: lower is faster; throughput: higher is more)")
    print(f"{'variant':<13} {'1 row ms':>9} {'/fp32':>6} {f'{big} rows/s':>12} {'/fp32':>6} "
          f"{'Triton c=1 p50':>15} {'/fp32':>6} {'Triton c=16 req/s':>18} {'/fp32':>6}  gate")
    for variant, row in inproc.items():
        t = served.get(variant)
        triton = (f"{t['c1_p50_ms']:>15.3f} {t['c1_p50_ms'] / base_t['c1_p50_ms']:>6.2f} "
                  f"{t['c16_requests_per_s']:>18.0f} "
                  f"{t['c16_requests_per_s'] / base_t['c16_requests_per_s']:>6.2f}"
                  if t and base_t else
                  f"{'(not run)' if variant in CPU_VARIANTS else '(GPU variant)':>15} "
                  f"{'':>6} {'':>18} {'':>6}")
        print(f"{variant:<13} {row['p50_ms_batch_1']:>9.3f} "
              f"{row['p50_ms_batch_1'] / base['p50_ms_batch_1']:>6.2f} "
              f"{row['rows_per_s_big_batch']:>12.0f} "
              f"{row['rows_per_s_big_batch'] / base['rows_per_s_big_batch']:>6.2f} {triton}  "
              f"{_gate_text(gates[variant])}")
    if batching:
        variant = batching["variant"]
        single = inproc[variant]["ms_per_row_16_single_calls"]
        gain_in = single / inproc[variant]["ms_per_row_batch_16"]
        padded = single / inproc[variant]["ms_per_row_batch_16_padded"]
        gain_t = batching["on"]["c16_requests_per_s"] / batching["off"]["c16_requests_per_s"]
        print(f"{name} ({variant}) dynamic batching through Triton, c=16: on "
              f"{batching['on']['c16_requests_per_s']:.0f} req/s (p99 "
              f"{batching['on']['c16_p99_ms']:.1f} ms), off "
              f"{batching['off']['c16_requests_per_s']:.0f} req/s (p99 "
              f"{batching['off']['c16_p99_ms']:.1f} ms): {gain_t:.2f}x; in-process batch 16 vs "
              f"1 per text: {gain_in:.2f}x in groups of alike lengths ({padded:.2f}x padded to "
              f"the longest); Triton keeps {gain_t / gain_in:.2f} of the in-process gain")


if __name__ == "__main__":
    sys.exit(main())
