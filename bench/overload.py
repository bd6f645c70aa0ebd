#!/usr/bin/env python3
"""Overload benchmark: the `churn` ensemble past saturation, with a queue policy (the spec's, or
`--max-size`/`--timeout-us` where it sets none) and without one, in one run.

Finds the saturating concurrency S (the smallest at which throughput reaches 90 % of the best
of a sweep), then drives the embedded repository with `wrk` at S, 2S and 4S, once with each
batched step's queue bounded (`dynamic_batching.queue`) and once with no queue policy (Triton's
default, unbounded), a fresh server per point. Per point: throughput of answered requests, the share
turned away (HTTP 503, "Exceeds maximum queue size" or a queue timeout), p50/p99 of the answered
requests as tritonserver measures them (its latency summary counts successes only; the client
adds ~0.1 ms of HTTP), wrk's p99 over all requests, and the resident memory of tritonserver and
its python stubs at the end::

    python bench/overload.py --duration-s 10      # make bench-overload
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from loadgen import _ms, kserve_body, start_benchmark, write_lua

from tritonkit.client.customers import read_customers
from tritonkit.families.render import render_repository
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import ServerSettings, TritonServer
from tritonkit.spec import QueuePolicy, Spec, load_spec
from tritonkit.tabular.artifacts import TabularArtifacts

logger = logging.getLogger("bench")
SWEEP = (2, 4, 8, 16, 32, 64, 128)
#: Multiples of the saturating concurrency measured.
LOADS = (1, 2, 4)
MODEL = "churn"


def with_queue_policy(spec: Spec, queue: QueuePolicy | None) -> Spec:
    """A copy of `spec` whose batched steps have `queue` (None: unbounded, Triton's default)."""
    model = spec.models[MODEL]
    steps = model.steps.model_copy(update={
        name: getattr(model.steps, name).model_copy(update={
            "dynamic_batching": getattr(model.steps, name).dynamic_batching.model_copy(
                update={"queue": queue})})
        for name in ("preprocess", "model")})
    return spec.model_copy(update={"models": {MODEL: model.model_copy(update={"steps": steps})}})


def wrk(url: str, lua: Path, connections: int, duration_s: float) -> dict[str, float]:
    """wrk's figures over every request, answered or refused (non-2xx counted, not raised)."""
    threads = min(2, connections)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s",
                          "--latency", "-s", str(lua), url],
                         capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    refused = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"requests": float(total),
            "refused": float(refused.group(1)) if refused else 0.0,
            "all_p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
            "seconds": duration_s}


def _samples(metrics_url: str) -> dict[tuple[str, str], float]:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    found = {}
    for line in text.splitlines():
        match = re.match(r'(\w+)\{([^}]*)\} (\S+)', line)
        if match and f'model="{MODEL}"' in match.group(2):
            quantile = re.search(r'quantile="([^"]+)"', match.group(2))
            found[(match.group(1), quantile.group(1) if quantile else "")] = float(match.group(3))
    return found


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its children (the python stubs), MiB."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) == pid or int(stat[1]) == pid:
                status = (entry / "status").read_text()
                total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return total / 1024


def serve(spec: Spec, work: Path, name: str) -> TritonServer:
    repository = work / f"repository-{name}"
    shutil.rmtree(repository, ignore_errors=True)
    render_repository(spec, "embedded", repository)
    return TritonServer(ServerSettings(
        model_repository=repository, http_port=free_port(), grpc_port=free_port(),
        metrics_port=free_port(), log_file=work / f"{name}.log",
        summary_latencies=True)).start(timeout_s=120)


def point(server: TritonServer, lua: Path, connections: int, duration_s: float
          ) -> dict[str, float]:
    url = f"{server.http_url}/v2/models/{MODEL}/infer"
    before = _samples(server.metrics_url)
    row = wrk(url, lua, connections, duration_s)
    after = _samples(server.metrics_url)
    answered = row["requests"] - row["refused"]
    count = ("nv_inference_request_success", "")
    row.update(
        connections=float(connections),
        answered_per_s=answered / duration_s,
        refused_share=row["refused"] / max(row["requests"], 1.0),
        server_counted=after.get(count, 0.0) - before.get(count, 0.0),
        # Triton's summary: successes only, over its sliding window (this point dominates it)
        answered_p50_ms=after.get(("nv_inference_request_summary_us", "0.5"), 0.0) / 1000,
        answered_p99_ms=after.get(("nv_inference_request_summary_us", "0.99"), 0.0) / 1000,
        rss_mib=rss_mib(server.pid or 0))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=10.0, help="wrk duration per point")
    parser.add_argument("--output", type=Path, default=Path("bench/results/overload.json"))
    parser.add_argument("--max-size", type=int, default=512,
                        help="queue policy measured when the spec sets none: requests waiting")
    parser.add_argument("--timeout-us", type=int, default=50_000,
                        help="queue policy measured when the spec sets none: longest wait")
    args = parser.parse_args()
    if not start_benchmark("wrk"):
        return 1
    spec = load_spec().only(MODEL)
    # The response cache would answer the rotating bodies from memory: measure the steps.
    spec = spec.model_copy(update={"models": {MODEL: spec.models[MODEL].model_copy(
        update={"response_cache": False})}})
    customers = read_customers(TabularArtifacts.for_version(spec.models[MODEL].version)
                               .require().test_rows)[:64]
    work = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    lua = write_lua([kserve_body(c) for c in customers], work)

    server = serve(with_queue_policy(spec, None), work, "sweep")
    try:
        sweep = {}
        for c in SWEEP:
            sweep[c] = point(server, lua, c, min(args.duration_s, 5.0))
            logger.info("sweep c=%d: %s", c, sweep[c])
    finally:
        server.stop(check=False)
    best = max(r["answered_per_s"] for r in sweep.values())
    saturating = min(c for c, r in sweep.items() if r["answered_per_s"] >= 0.9 * best)
    logger.info("saturating concurrency %d (%.0f req/s; best %.0f)", saturating,
                sweep[saturating]["answered_per_s"], best)
    results: dict[str, Any] = {"sweep": sweep, "saturating_concurrency": saturating}
    queue = (spec.models[MODEL].steps.preprocess.dynamic_batching.queue
             or QueuePolicy(max_size=args.max_size, timeout_us=args.timeout_us))
    for name, variant in (("queue policy", with_queue_policy(spec, queue)),
                          ("unbounded", with_queue_policy(spec, None))):
        results[name] = {}
        for m in LOADS:
            # a fresh server per point: Triton's latency summary is a sliding window
            server = serve(variant, work, name.replace(" ", "-"))
            try:
                results[name][m] = point(server, lua, m * saturating, args.duration_s)
                logger.info("%s at %dS: %s", name, m, results[name][m])
            finally:
                # wrk leaves refused connections half-open; tritonserver waits for them
                server.stop(check=False)
    policy = queue
    print(f"\nchurn past saturation (S = {saturating} connections, {best:.0f} req/s at best); "
          f"queue policy: {policy}")
    print(f"{'config':<13} {'load':>5} {'answered/s':>11} {'refused':>8} {'answered p50':>13} "
          f"{'answered p99':>13} {'all p99 (wrk)':>14} {'RSS MiB':>8}")
    for name in ("queue policy", "unbounded"):
        for m, r in results[name].items():
            print(f"{name:<13} {m:>4}S {r['answered_per_s']:>11.0f} {r['refused_share']:>8.1%} "
                  f"{r['answered_p50_ms']:>10.2f} ms {r['answered_p99_ms']:>10.2f} ms "
                  f"{r['all_p99_ms']:>11.2f} ms {r['rss_mib']:>8.0f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
