#!/usr/bin/env python3
"""Record what the HPA simulator replays: the real embedded tritonserver's model load time and
its CPU under a load test with phases (idle, a short spike, low, sustained high, low).

Starts tritonserver on the repository `make build-engines` renders for `make up`
(model_repository/) with the Triton flags the Kubernetes manifests add that this build accepts
(--exit-timeout-secs, --grpc-max-connection-age[-grace], from deploy/k8s/policy.yaml), times
`--starts` starts until every model is ready, then drives `churn` with wrk phase by phase while
sampling the CPU of the tritonserver process tree (its python stubs included) every
`--interval-s` seconds from /proc (psutil). Writes, under deploy/k8s/recorded/:

- cpu_series.csv: t_s (end of the sample, from the first phase's start), phase, cpu_cores (CPU
  seconds per second of the whole tree over the sample);
- cpu_series.json: the phases (wrk connections, delay, requests/s), the machine, the load
  average before and after;
- startup.json: each start's seconds to ready, and their maximum.

About 12 minutes of wall time::

    python bench/hpa_recording.py                  # re-record deploy/k8s/recorded/
    python bench/hpa_recording.py --quick          # 10 s phases, to try it out (writes to /tmp)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from loadgen import kserve_body, write_lua

from tritonkit.client.customers import read_customers
from tritonkit.paths import PROJECT_ROOT
from tritonkit.scaling.policy import K8S_DIR, load_policy
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import ServerSettings, TritonServer
from tritonkit.tabular.artifacts import TabularArtifacts

logger = logging.getLogger("bench.hpa_recording")

RECORDED = K8S_DIR / "recorded"


@dataclasses.dataclass(frozen=True)
class Phase:
    """One load level: wrk with `connections` (0: no load), each waiting `delay_ms` between
    requests (a wrk `delay()`), for `duration_s`."""

    name: str
    duration_s: int
    connections: int
    delay_ms: int = 0


#: Calibrated on the 2-core development machine (churn, fused embedded repository): 16
#: connections saturate it (~1.25 cores); 2 connections with 10 ms pauses use ~0.27 cores.
#: The spike is shorter than the 300 s scale-up window, the sustained phase longer.
PHASES = (
    Phase("idle", 45, 0),
    Phase("spike", 90, 16),
    Phase("low", 105, 2, 10),
    Phase("sustained", 360, 16),
    Phase("low_after", 90, 2, 10),
)


def triton_flags() -> tuple[str, ...]:
    """The manifests' Triton flags that change serving and that this tritonserver accepts."""
    policy = load_policy()
    grpc, shutdown = policy.section("grpc"), policy.section("shutdown")
    return (f"--exit-timeout-secs={shutdown['triton_exit_timeout_s']}",
            f"--grpc-max-connection-age={grpc['max_connection_age_ms']}",
            f"--grpc-max-connection-age-grace={grpc['max_connection_age_grace_ms']}")


def settings(repository: Path, log_dir: Path) -> ServerSettings:
    return ServerSettings(model_repository=repository, http_port=free_port(),
                          grpc_port=free_port(), metrics_port=free_port(),
                          log_file=log_dir / "tritonserver.log", extra_args=triton_flags())


def tree_cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of `process` and every descendant alive now."""
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:  # a stub that exited between listing and reading
            continue
        total += times.user + times.system
    return total


def delay_script(lua: Path) -> Path:
    """The body-cycling wrk script plus a pause before each request (WRK_DELAY_MS)."""
    path = lua.with_name("delayed.lua")
    path.write_text(lua.read_text() + "function delay()\n"
                    "  return tonumber(os.getenv('WRK_DELAY_MS') or '0')\nend\n")
    return path


def run_phase(server: TritonServer, phase: Phase, script: Path, interval_s: float,
              clock_zero: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Load `server` for one phase, appending a CPU sample to `rows` every `interval_s`."""
    assert server.pid is not None
    process = psutil.Process(server.pid)
    wrk = None
    if phase.connections:
        threads = "-t1" if phase.connections == 1 else "-t2"
        wrk = subprocess.Popen(
            ["wrk", threads, f"-c{phase.connections}", f"-d{phase.duration_s}s", "-s",
             str(script), f"{server.http_url}/v2/models/churn/infer"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "WRK_DELAY_MS": str(phase.delay_ms)})
    start = time.monotonic()
    last_t, last_cpu = start, tree_cpu_seconds(process)
    samples = round(phase.duration_s / interval_s)
    for index in range(1, samples + 1):
        time.sleep(max(0.0, start + index * interval_s - time.monotonic()))
        now, cpu = time.monotonic(), tree_cpu_seconds(process)
        rows.append({"t_s": round(now - clock_zero, 1), "phase": phase.name,
                     "cpu_cores": round((cpu - last_cpu) / (now - last_t), 4)})
        last_t, last_cpu = now, cpu
    result: dict[str, Any] = dataclasses.asdict(phase)
    if wrk is not None:
        out, _ = wrk.communicate(timeout=phase.duration_s + 60)
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        result["requests_per_s"] = float(found.group(1)) if found else None
        result["non_2xx"] = int(errors.group(1)) if errors else 0
    phase_rows = [r["cpu_cores"] for r in rows if r["phase"] == phase.name]
    result["mean_cpu_cores"] = round(sum(phase_rows) / len(phase_rows), 3)
    logger.info("%s: %.2f cores, %s req/s", phase.name, result["mean_cpu_cores"],
                result.get("requests_per_s"))
    return result


def measure_starts(repository: Path, work: Path, starts: int) -> tuple[list[float], TritonServer]:
    """Seconds from launch to every model ready, per start; the last server is left running."""
    times: list[float] = []
    for attempt in range(starts):
        server = TritonServer(settings(repository, work / f"start{attempt}"))
        began = time.monotonic()
        server.start(timeout_s=300)
        times.append(round(time.monotonic() - began, 2))
        logger.info("start %d: ready after %.2f s", attempt + 1, times[-1])
        if attempt < starts - 1:
            server.stop()
    return times, server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--out", type=Path, default=RECORDED)
    parser.add_argument("--starts", type=int, default=3, help="starts timed for startup.json")
    parser.add_argument("--interval-s", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true",
                        help="10 s phases, one start, written to a temporary folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    phases = PHASES
    if args.quick:
        phases = tuple(dataclasses.replace(p, duration_s=10) for p in PHASES)
        args.starts, args.out = 1, Path(tempfile.mkdtemp(prefix="hpa-recording-"))
    customers = read_customers(TabularArtifacts.for_version(1).test_rows)[:64]
    work = Path(tempfile.mkdtemp(prefix="hpa-recording-work-"))
    script = delay_script(write_lua([kserve_body(c) for c in customers], work))
    load_before = os.getloadavg()
    start_times, server = measure_starts(args.repository, work, args.starts)
    rows: list[dict[str, Any]] = []
    results = []
    try:
        clock_zero = time.monotonic()
        for phase in phases:
            results.append(run_phase(server, phase, script, args.interval_s, clock_zero, rows))
    finally:
        server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "cpu_series.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["t_s", "phase", "cpu_cores"])
        writer.writeheader()
        writer.writerows(rows)
    machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    meta = {"recorded": time.strftime("%Y-%m-%d"), "repository": str(args.repository.name),
            "model": "churn", "load": "wrk, KServe v2 JSON bodies of 64 test customers",
            "interval_s": args.interval_s, "triton_flags": list(triton_flags()),
            "phases": results, "machine": machine}
    (args.out / "cpu_series.json").write_text(json.dumps(meta, indent=2) + "\n")
    (args.out / "startup.json").write_text(json.dumps(
        {"recorded": meta["recorded"], "repository": meta["repository"],
         "seconds_to_ready": start_times, "max_s": max(start_times),
         "triton_flags": list(triton_flags()), "machine": machine}, indent=2) + "\n")
    print(f"wrote {args.out}/cpu_series.csv ({len(rows)} samples), cpu_series.json, "
          f"startup.json (max {max(start_times)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
