#!/usr/bin/env python3
"""What monitoring costs the `churn` ensemble: drift metrics and latency summaries on vs off.

Three configurations of the fused embedded repository (what `make up` serves), measured with
`wrk` in the same run, interleaved over several rounds so that the machine's drift hits them
alike: no drift metrics and no summaries (the baseline), drift metrics on, and drift metrics on
with Triton's latency summaries (what `make up` runs, so that the sidecar can alert on p95).
Prints throughput at concurrency 64 and p50 at concurrency 1 as ratios to the baseline::

    python bench/monitoring_cost.py --duration-s 10 --rounds 3      # make bench-monitoring
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from loadgen import kserve_body, run_wrk, start_benchmark, write_lua

from tritonkit.client.customers import read_customers
from tritonkit.families.render import render_repository
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import ServerSettings, TritonServer
from tritonkit.spec import Spec, load_spec
from tritonkit.tabular.artifacts import TabularArtifacts

logger = logging.getLogger("bench")

#: name -> (drift metrics on, summary latencies on)
CONFIGURATIONS = {
    "baseline": (False, False),
    "drift_metrics": (True, False),
    "drift_metrics+summaries": (True, True),
}


def with_drift_metrics(spec: Spec, enabled: bool) -> Spec:
    data = spec.model_dump()
    for pipeline in data["models"].values():
        pipeline["drift_metrics"]["enabled"] = enabled
    return Spec.model_validate(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=10.0, help="wrk duration per point")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--output", type=Path, default=Path("bench/results/monitoring.json"),
                        help="where the figures are written as JSON")
    args = parser.parse_args()
    if not start_benchmark("wrk"):
        return 1
    spec = load_spec().only("churn")
    artifacts = TabularArtifacts.for_version(spec.models["churn"].version).require()
    work = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    lua = write_lua([kserve_body(c) for c in read_customers(artifacts.test_rows)[:64]], work)
    repositories = {}
    for drift in (False, True):
        repositories[drift] = work / f"repository_drift_{drift}"
        render_repository(with_drift_metrics(spec, drift), "embedded", repositories[drift])

    results: dict[str, dict[str, list[float]]] = {
        name: {"c64_requests_per_s": [], "c64_p99_ms": [], "c1_p50_ms": []}
        for name in CONFIGURATIONS
    }
    for round_ in range(args.rounds):
        for name, (drift, summaries) in CONFIGURATIONS.items():
            settings = ServerSettings(
                model_repository=repositories[drift], http_port=free_port(),
                grpc_port=free_port(), metrics_port=free_port(), summary_latencies=summaries)
            with TritonServer(settings) as server:
                url = f"{server.http_url}/v2/models/churn/infer"
                run_wrk(url, lua, 16, 2)  # warm-up, discarded
                c1 = run_wrk(url, lua, 1, args.duration_s)
                c64 = run_wrk(url, lua, 64, args.duration_s)
            results[name]["c64_requests_per_s"].append(c64["requests_per_s"])
            results[name]["c64_p99_ms"].append(c64["p99_ms"])
            results[name]["c1_p50_ms"].append(c1["p50_ms"])
            logger.info("round %d %s: c=64 %.0f req/s p99 %.2f ms, c=1 p50 %.3f ms",
                        round_, name, c64["requests_per_s"], c64["p99_ms"], c1["p50_ms"])

    base = results["baseline"]
    print(f"\n{'configuration':<24} {'c=64 req/s (runs)':<28} {'ratio':>6} {'c=1 p50 ms':>10} "
          f"{'ratio':>6}")
    ratios = {}
    for name, r in results.items():
        ratio = statistics.median(r["c64_requests_per_s"]) / statistics.median(
            base["c64_requests_per_s"])
        p50_ratio = statistics.median(r["c1_p50_ms"]) / statistics.median(base["c1_p50_ms"])
        per_round = [a / b for a, b in zip(r["c64_requests_per_s"], base["c64_requests_per_s"],
                                           strict=True)]
        ratios[name] = {"throughput_c64": ratio, "p50_c1": p50_ratio,
                        "throughput_c64_per_round": per_round}
        runs = ", ".join(f"{x:.0f}" for x in r["c64_requests_per_s"])
        print(f"{name:<24} {runs:<28} {ratio:>6.3f} {statistics.median(r['c1_p50_ms']):>10.3f} "
              f"{p50_ratio:>6.3f}")
    print("\nratio: median over the rounds, against the baseline measured in the same rounds;")
    print("per-round throughput ratios: " + "; ".join(
        f"{n} " + ", ".join(f"{x:.3f}" for x in r["throughput_c64_per_round"])
        for n, r in ratios.items() if n != "baseline"))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"results": results, "ratios": ratios}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
