#!/usr/bin/env python3
"""Serving benchmark: the `churn` ensemble on Triton against the naive Flask server, side by side.

The ensemble is measured in both embedded layouts (fused: one python step, as `make up` serves
it; split: preprocess and model as two python steps). All servers get the same KServe v2 JSON
bodies (real test customers, rotated) from `wrk`, a C load generator, in the same run on the
same machine. Prints a table and the ratios that the goals are stated in (throughput at
concurrency 64, p50 at concurrency 1)::

    python bench/serving.py --duration-s 10        # make bench
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tritonkit.artifacts import ChurnArtifacts
from tritonkit.client.churn import kserve_json_inputs, read_customers
from tritonkit.repository.build import render_repository
from tritonkit.serve.server import ServerSettings, TritonServer, free_port
from tritonkit.spec import load_spec

logger = logging.getLogger("bench")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def kserve_body(customer: dict[str, object]) -> str:
    """One customer as a compact KServe v2 JSON body."""
    return json.dumps({"inputs": kserve_json_inputs(customer)}, separators=(",", ":"))


def write_lua(bodies: list[str], folder: Path) -> Path:
    """A wrk script that cycles through the bodies."""
    path = folder / "bodies.lua"
    quoted = ",\n".join("[==[" + b + "]==]" for b in bodies)
    path.write_text(
        "local bodies = {\n" + quoted + "\n}\n"
        "local i = 0\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\n"
        "end\n"
    )
    return path


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, lua: Path, connections: int, duration_s: float) -> dict[str, float]:
    threads = 1 if connections == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--latency",
           "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = {
        "connections": float(connections),
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
    }
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non_2xx"] = float(errors.group(1)) if errors else 0.0
    if result["non_2xx"]:
        raise RuntimeError(f"{url} answered {result['non_2xx']:.0f} requests with an error")
    return result


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


def measure(name: str, url: str, lua: Path, duration_s: float) -> list[dict[str, float]]:
    run_wrk(url, lua, 16, 2)  # warm-up, discarded
    rows = []
    for connections in (1, 64):
        row = run_wrk(url, lua, connections, duration_s)
        logger.info("%s c=%d: %s", name, connections, row)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=10.0, help="wrk duration per point")
    parser.add_argument("--customers", type=int, default=64, help="distinct request bodies")
    parser.add_argument("--output", type=Path, default=Path("bench/results/serving.json"),
                        help="where the figures are written as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if shutil.which("wrk") is None:
        print("error: wrk not found: apt-get install wrk (or `make setup`)", file=sys.stderr)
        return 1

    spec = load_spec().only("churn")
    artifacts = ChurnArtifacts.for_version(spec.models["churn"].version).require()
    customers = read_customers(artifacts.test_rows)[: args.customers]
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    lua = write_lua([kserve_body(c) for c in customers], work)
    repositories = {}
    for layout, fused in (("fused", True), ("split", False)):
        repositories[layout] = work / f"model_repository_{layout}"
        render_repository(spec.with_fused_steps("embedded", fused), "embedded",
                          repositories[layout])

    results: dict[str, list[dict[str, float]]] = {}
    port = free_port()
    naive = subprocess.Popen(
        [sys.executable, "-m", "tritonkit.baseline.naive_server", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready")
        results["naive_flask"] = measure(
            "naive", f"http://127.0.0.1:{port}/v2/models/churn/infer", lua, args.duration_s)
    finally:
        naive.terminate()
        naive.wait()
    for layout, repository in repositories.items():
        settings = ServerSettings(model_repository=repository, http_port=free_port(),
                                  grpc_port=free_port(), metrics_port=free_port())
        with TritonServer(settings) as server:
            results[f"triton_{layout}"] = measure(
                f"triton {layout}", f"{server.http_url}/v2/models/churn/infer", lua,
                args.duration_s)

    naive_c1, naive_c64 = results["naive_flask"]
    triton_c1, triton_c64 = results["triton_fused"]
    ratios = {
        "throughput_ratio_c64": triton_c64["requests_per_s"] / naive_c64["requests_per_s"],
        "p50_ratio_c1": triton_c1["p50_ms"] / naive_c1["p50_ms"],
        "triton_p99_ms_c64": triton_c64["p99_ms"],
    }
    print(f"\n{'server':<16} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, rows in results.items():
        for r in rows:
            print(f"{name:<16} {r['connections']:>3.0f} {r['requests_per_s']:>9.0f} "
                  f"{r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['non_2xx']:>8.0f}")
    print("\ntriton_fused is what `make up` serves (one python step); triton_split keeps")
    print("preprocess and model as two python steps (fuse_python_steps: false).")
    print(f"\nthroughput at c=64, Triton / naive: {ratios['throughput_ratio_c64']:.2f}x "
          f"(goal >= 10x, with Triton p99 {ratios['triton_p99_ms_c64']:.1f} ms; goal <= 10 ms)")
    print(f"p50 at c=1, Triton / naive:        {ratios['p50_ratio_c1']:.2f}x (goal <= 1.0x)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"results": results, "ratios": ratios}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
