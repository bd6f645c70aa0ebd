#!/usr/bin/env python3
"""Calibrate Locust on this machine: its own ceiling against a trivial server, beside Triton.

Runs the locustfile's users headless against `trivial_server.py`, which answers every request
at once with a constant, and against Triton's `churn` (a tritonserver of its own on free ports
serving what `make up` serves, or a running one: --triton-http/--triton-grpc), with 1 and 2
Locust processes, and prints requests/s, Locust's p50/p95 and the cores each side used. A
user whose rate against Triton nears its ceiling here measures Locust, not Triton::

    python loadtests/calibrate.py --duration-s 10      # make loadtest-calibrate
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
USER_CLASSES = ("TritonJsonUser", "TritonBinaryUser", "TritonGrpcUser")
#: The warning Locust logs when its process is the bottleneck.
LOCUST_CPU_WARNING = "CPU usage"
#: What Locust logs once every user of the run has started.
SPAWNED = "All users spawned"

logger = logging.getLogger("calibrate")


def locust_binary() -> str:
    """The `locust` beside this Python (the virtualenv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("locust")
    found = str(beside) if beside.exists() else shutil.which("locust")
    if found is None:
        raise SystemExit("error: locust not found: run `make setup` (the loadtest extra)")
    return found


def aggregated(prefix: Path) -> dict[str, str]:
    """The `Aggregated` row of Locust's `<prefix>_stats.csv`."""
    with open(f"{prefix}_stats.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                return row
    raise RuntimeError(f"{prefix}_stats.csv has no Aggregated row")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes and all their descendants, so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    total, todo, seen = 0.0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += times.get(pid, 0.0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


def tritonserver_pid(http_port: int) -> int | None:
    """The tritonserver serving HTTP on `http_port`, found by its command line."""
    flag = f"--http-port={http_port}".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"tritonserver") and flag in args:
            return int(cmdline.parent.name)
    return None


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_locust(user: str, host: str, grpc_url: str, *, users: int, processes: int,
               duration_s: float, folder: Path, server_pids: list[int]) -> dict[str, Any]:
    """One headless run of one user class; its figures and the CPU it and the server used."""
    prefix = folder / f"{user}-p{processes}-{time.monotonic_ns()}"
    command = [locust_binary(), "-f", str(LOCUSTFILE), user, "--headless",
               "-u", str(users), "-r", str(users), "-t", f"{duration_s:g}s",
               "--host", host, "--grpc-url", grpc_url, "--csv", str(prefix),
               "--stop-timeout", "5", "--only-summary"]
    if processes > 1:
        command += ["--processes", str(processes)]
    before = _children_cpu_s()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines = []
    # Count CPU from the moment every user runs: start-up (imports, payloads) is left out.
    spawned_at, locust_at_spawn, server_at_spawn = time.monotonic(), 0.0, cpu_seconds(server_pids)
    for line in process.stderr:
        lines.append(line)
        if SPAWNED in line and not locust_at_spawn:
            spawned_at = time.monotonic()
            locust_at_spawn = cpu_seconds([process.pid]) or 1e-9
            server_at_spawn = cpu_seconds(server_pids)
    server_s = cpu_seconds(server_pids) - server_at_spawn
    window_s = time.monotonic() - spawned_at
    code = process.wait()
    locust_s = _children_cpu_s() - before - locust_at_spawn
    stderr = "".join(lines)
    if code not in (0, 1):
        raise RuntimeError(f"locust exited {code}:\n{stderr[-2000:]}")
    row = aggregated(prefix)
    return {
        "user": user, "processes": processes, "users": users,
        "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
        "requests_per_s": float(row["Requests/s"]),
        "p50_ms": float(row["50%"]), "p95_ms": float(row["95%"]),
        "avg_ms": float(row["Average Response Time"]),
        # CPU seconds per second while every user ran (from "All users spawned" to the end).
        "locust_cores": locust_s / window_s,
        "server_cores": server_s / window_s if server_pids else None,
        "locust_cpu_warning": LOCUST_CPU_WARNING in stderr,
        "requests_per_s_per_locust_core": float(row["Requests/s"]) * window_s / max(locust_s, 1e-9),
    }


@contextmanager
def trivial_server() -> Iterator[tuple[str, str, int]]:
    """(HTTP URL, gRPC host:port, pid) of a running trivial_server.py."""
    process = subprocess.Popen([sys.executable, str(ROOT / "loadtests" / "trivial_server.py")],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        words = process.stdout.readline().split()  # "http <port> grpc <port>"
        if len(words) != 4:
            raise RuntimeError("trivial_server.py did not start")
        yield f"http://127.0.0.1:{words[1]}", f"127.0.0.1:{words[3]}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def own_triton(work: Path) -> Iterator[tuple[str, str, int]]:
    """(HTTP URL, gRPC host:port, pid) of a tritonserver serving what `make up` serves."""
    from tritonkit.families.render import render_repository
    from tritonkit.serve.ports import free_port
    from tritonkit.serve.server import ServerSettings, TritonServer
    from tritonkit.spec import load_spec

    repository = work / "model_repository"
    render_repository(load_spec().only("churn"), "embedded", repository)
    settings = ServerSettings(model_repository=repository, http_port=free_port(),
                              grpc_port=free_port(), metrics_port=free_port(),
                              log_file=work / "tritonserver.log")
    with TritonServer(settings) as server:
        pid = tritonserver_pid(settings.http_port)
        if pid is None:
            raise RuntimeError("cannot find the tritonserver process that was started")
        yield server.http_url, server.grpc_url, pid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=10.0, help="length of each run")
    parser.add_argument("--users", type=int, default=32,
                        help="concurrent Locust users of each run (enough to saturate)")
    parser.add_argument("--processes", default="1,2",
                        help="comma-separated numbers of Locust processes to try")
    parser.add_argument("--user-classes", default=",".join(USER_CLASSES),
                        help="comma-separated user classes of loadtests/locustfile.py")
    parser.add_argument("--triton-http", default="",
                        help="a running Triton's HTTP URL (default: start one on free ports)")
    parser.add_argument("--triton-grpc", default="",
                        help="a running Triton's gRPC host:port (with --triton-http)")
    parser.add_argument("--output", type=Path, default=None,
                        help="where the figures are written as JSON (default: "
                             "loadtests/results/calibration-<time>.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if bool(args.triton_http) != bool(args.triton_grpc):
        parser.error("--triton-http and --triton-grpc go together")
    classes = [name.strip() for name in args.user_classes.split(",") if name.strip()]
    counts = [int(n) for n in args.processes.split(",") if n.strip()]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or ROOT / "loadtests" / "results" / f"calibration-{stamp}.json"

    work = Path(tempfile.mkdtemp(prefix="calibrate-"))
    rows: list[dict[str, Any]] = []
    try:
        with ExitStack() as stack:
            targets = {"trivial": stack.enter_context(trivial_server())}
            if args.triton_http:
                targets["triton churn"] = (args.triton_http, args.triton_grpc, 0)
            else:
                targets["triton churn"] = stack.enter_context(own_triton(work))
            for target, (http_url, grpc_url, pid) in targets.items():
                for user in classes:
                    for processes in counts:
                        row = run_locust(user, http_url, grpc_url, users=args.users,
                                         processes=processes, duration_s=args.duration_s,
                                         folder=work, server_pids=[pid] if pid else [])
                        row["target"] = target
                        logger.info("%s", row)
                        rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nLocust {args.users} users, {args.duration_s:g} s per run, {os.cpu_count()} cores "
          "(shared: compare rows of this run only)")
    print(f"{'target':<13} {'user':<17} {'proc':>4} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'fails':>6} {'locust cores':>13} {'req/s/core':>11} {'server cores':>13}")
    for r in rows:
        server = f"{r['server_cores']:.2f}" if r["server_cores"] is not None else "n/a"
        flag = "  (Locust warned: its CPU was too high)" if r["locust_cpu_warning"] else ""
        print(f"{r['target']:<13} {r['user']:<17} {r['processes']:>4} "
              f"{r['requests_per_s']:>8.0f} {r['p50_ms']:>7.0f} {r['p95_ms']:>7.0f} "
              f"{r['failures']:>6} {r['locust_cores']:>13.2f} "
              f"{r['requests_per_s_per_locust_core']:>11.0f} {server:>13}{flag}")
    print("\nreq/s/core: requests per second of Locust CPU, what one whole core would drive; "
          "on a shared machine Locust gets less than a core (`locust cores`).")
    print("\nLocust rounds response times under 100 ms to whole milliseconds; for sub-ms "
          "figures use `make bench` (wrk).")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"duration_s": args.duration_s, "users": args.users,
                                  "cpu_count": os.cpu_count(), "runs": rows}, indent=2) + "\n")
    print(f"figures written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
