#!/usr/bin/env python3
"""The benchmark suite (`make bench`): what the `churn` deployment serves, as shares of what this
Triton can serve at all, every figure from one run on one machine.

Cases, each a closed loop at concurrency 1 and 64 over one protocol:

- `churn` (the ensemble `make up` serves) over HTTP KServe JSON, HTTP binary tensors and gRPC;
  the naive Flask server over HTTP JSON; the fused step alone (no ensemble around it);
- the packed entry point `churn_packed` (2 tensors per request instead of 19);
- **the platform's ceiling**: `bench/steps/noop.py`, a python step that does no work with the
  same 19 inputs and 3 outputs, alone and inside a one-step ensemble (and with the 2 packed
  inputs), so each `churn` figure is a share of what tritonserver and its python backend do;
- dynamic batching off, one instance instead of two;
- the response cache with 64 customers repeating (wrk rotating their bodies).

Then open-loop runs (requests on a schedule, whatever the answers do: no coordinated omission)
at 50 % and 80 % of `churn`'s closed-loop throughput over its faster HTTP form, and overload at
2x and 4x of it, with and without a bounded queue: p99 of the accepted requests, the refused
share, tritonserver's resident memory.

Every Triton run is checked against tritonserver's own counters (the client completed what the
server counted, and the server failed none it answered as a success). Prints a table and the
goals' ratios, writes `bench/results/suite.json`, `suite.md` and the plot `suite.png`
(throughput against p99 per configuration)::

    python bench/suite.py --duration-s 10          # make bench
    python bench/suite.py --duration-s 1 --quick   # a smoke run (tests)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from loadgen import (
    PROTOCOLS,
    LoadProtocol,
    Request,
    Result,
    ServerCounts,
    closed,
    closed_h2load,
    kserve_body,
    make_request,
    open_loop,
    run_wrk,
    start_benchmark,
    wait_http,
    write_lua,
)
from overload import rss_mib

from tritonkit.client.customers import columns_from_rows, read_customers
from tritonkit.families.render import render_repository
from tritonkit.repository.config import read_config, write_config
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import ServerSettings, TritonServer
from tritonkit.spec import QueuePolicy, Spec, load_spec
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.contract import contract
from tritonkit.tabular.packed import PACKED_CATEGORICAL, PACKED_NUMERIC

CHURN = contract("churn")
pack = CHURN.pack


logger = logging.getLogger("bench")
MODEL = "churn"
NOOP_STEP = Path(__file__).resolve().parent / "steps" / "noop.py"
LOW, HIGH = 1, 64


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration measured at concurrency 1 and 64."""

    label: str
    server: str  # which server (repository and settings) serves it
    model: str  # the Triton model called
    protocol: LoadProtocol
    packed: bool = False
    group: str = "churn"


def cases(packed_served: bool, quick: bool) -> list[Case]:
    rows = [Case(f"churn {p}", "served", MODEL, p) for p in PROTOCOLS]
    rows += [Case(f"churn_fused step alone {p}", "served", f"{MODEL}_fused", p)
             for p in ("http_json", "grpc")]
    if packed_served:
        rows += [Case(f"churn_packed {p}", "served", f"{MODEL}_packed", p, packed=True)
                 for p in PROTOCOLS]
    rows += [Case(f"no-op step {p}", "served", "noop", p, group="ceiling")
             for p in ("http_json", "grpc")]
    rows += [Case(f"no-op in ensemble {p}", "served", "noop_ensemble", p, group="ceiling")
             for p in ("http_json", "grpc")]
    rows += [Case(f"no-op packed {p}", "served", "noop_packed", p, packed=True, group="ceiling")
             for p in ("http_json", "grpc")]
    rows += [Case("churn batching off grpc", "batching_off", MODEL, "grpc", group="tuning"),
             Case("churn batching off http_json", "batching_off", MODEL, "http_json",
                  group="tuning"),
             Case("churn 1 instance grpc", "one_instance", MODEL, "grpc", group="tuning")]
    if quick:
        keep = {"churn http_json", "churn grpc", "no-op step grpc", "churn batching off grpc"}
        rows = [c for c in rows if c.label in keep]
    return rows


# -- repositories -------------------------------------------------------------------------------

def _with_steps(spec: Spec, change: Callable[[Any], dict[str, Any]]) -> Spec:
    """A copy of `spec` whose churn steps are updated with `change(step)`."""
    model = spec.models[MODEL]
    steps = model.steps.model_copy(update={
        name: getattr(model.steps, name).model_copy(update=change(getattr(model.steps, name)))
        for name in ("preprocess", "model")})
    return spec.model_copy(update={"models": {MODEL: model.model_copy(update={"steps": steps})}})


def with_queue(spec: Spec, queue: QueuePolicy | None) -> Spec:
    return _with_steps(spec, lambda s: {"dynamic_batching": s.dynamic_batching.model_copy(
        update={"queue": queue})})


def add_noop_steps(repository: Path) -> None:
    """The platform's ceiling beside churn: `noop` (the churn contract), `noop_ensemble` (it in a
    one-step ensemble, as churn's fused step is) and `noop_packed` (the two packed inputs), each
    a copy of the fused step's config with the no-op code."""
    fused = repository / f"{MODEL}_fused"
    for name in ("noop", "noop_packed"):
        shutil.copytree(fused, repository / name, ignore=shutil.ignore_patterns("warmup"))
        for stale in (repository / name / "1").iterdir():
            stale.unlink()
        shutil.copy2(NOOP_STEP, repository / name / "1" / "model.py")
        config = read_config(repository / name / "config.pbtxt")
        config.name = name
        config.ClearField("model_warmup")
        config.ClearField("parameters")
        if name == "noop_packed":
            numeric = [i for i in config.input if i.data_type != config.input[-1].data_type]
            categorical = [i for i in config.input if i.data_type == config.input[-1].data_type]
            del config.input[:]
            config.input.add(name=PACKED_NUMERIC, data_type=numeric[0].data_type,
                             dims=[len(numeric)])
            config.input.add(name=PACKED_CATEGORICAL, data_type=categorical[0].data_type,
                             dims=[len(categorical)])
        write_config(config, repository / name)
    ensemble = read_config(repository / MODEL / "config.pbtxt")
    ensemble.name = "noop_ensemble"
    ensemble.ClearField("response_cache")
    ensemble.ensemble_scheduling.step[0].model_name = "noop"
    write_config(ensemble, repository / "noop_ensemble")
    (repository / "noop_ensemble" / "1").mkdir()


def render(spec: Spec, folder: Path, noop: bool = False) -> Path:
    render_repository(spec, "embedded", folder)
    if noop:
        add_noop_steps(folder)
    return folder


# -- measuring ----------------------------------------------------------------------------------

def packed_columns(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The packed pair of one request (`tritonkit.tabular.schema.pack`, the contract's one
    writer)."""
    numeric, categorical = pack(columns)
    return {PACKED_NUMERIC: numeric, PACKED_CATEGORICAL: categorical}


def settled(server: TritonServer, counts: ServerCounts) -> tuple[float, float]:
    """`counts.settled()`, or an error that says why tritonserver stopped answering."""
    try:
        return counts.settled()
    except OSError as exc:
        raise RuntimeError(
            f"{counts.model}: tritonserver's metrics did not answer ({exc}); exit code "
            f"{server.exit_code} (None: still running); log:\n{server.log_tail(60)}") from exc


def checked(server: TritonServer, model: str, run: Callable[[], Result]) -> Result:
    """Run `run` and check tritonserver counted what the client saw."""
    counts = ServerCounts(server.metrics_url, model)
    ok_before, failed_before = settled(server, counts)
    result = run()
    ok_after, failed_after = settled(server, counts)
    counted, refused = ok_after - ok_before, failed_after - failed_before
    # requests still in flight when the client stops are counted by the server, not the client
    slack = result.connections + 1
    if not (result.completed - slack <= counted <= result.completed + slack):
        raise RuntimeError(f"{model}: the client completed {result.completed} requests, "
                           f"tritonserver counted {counted:.0f} successes")
    if result.failed == 0 and refused > slack:
        raise RuntimeError(f"{model}: tritonserver failed {refused:.0f} requests that the "
                           "client saw answered (a gRPC error travels as HTTP 200)")
    return result


def base_url(server: TritonServer, protocol: LoadProtocol) -> str:
    if protocol == "grpc":
        return f"http://{server.settings.host}:{server.settings.grpc_port}"
    return server.http_url


@contextlib.contextmanager
def start(repository: Path, work: Path, name: str, cache_bytes: int = 0,
          stop_timeout_s: float = 30.0) -> Iterator[TritonServer]:
    server = TritonServer(ServerSettings(
        model_repository=repository, http_port=free_port(), grpc_port=free_port(),
        metrics_port=free_port(), log_file=work / f"{name}.log",
        cache_size_bytes=cache_bytes)).start(timeout_s=180)
    try:
        yield server
    finally:
        # clients cut off mid-request leave connections half-open; tritonserver waits on them
        server.stop(timeout_s=stop_timeout_s, check=False)


def measure_case(server: TritonServer, case: Case, request: Request, duration_s: float
                 ) -> list[dict[str, Any]]:
    url = base_url(server, case.protocol)
    closed(url, request, 16, min(duration_s, 2.0))  # warm-up, discarded
    rows = []
    for connections in (LOW, HIGH):
        result = checked(server, case.model,
                         lambda c=connections: closed(url, request, c, duration_s))
        if result.failed:
            raise RuntimeError(f"{case.label}: {result.failed} requests failed")
        rows.append({"case": case.label, "group": case.group, **result.row()})
        logger.info("%s c=%d: %.0f req/s p50 %.3f p99 %.3f ms", case.label, connections,
                    result.requests_per_s, result.p50_ms, result.p99_ms)
    return rows


def naive(request: Request, duration_s: float) -> list[dict[str, Any]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tritonkit.baseline.naive_server", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/v2/health/ready")
        closed(url, request, 16, min(duration_s, 2.0))
        rows = []
        for connections in (LOW, HIGH):
            result = closed(url, request, connections, duration_s)
            if result.failed:
                raise RuntimeError(f"naive server: {result.failed} requests failed")
            rows.append({"case": "naive Flask http_json", "group": "baseline", **result.row()})
            logger.info("naive c=%d: %.0f req/s p99 %.3f ms", connections,
                        result.requests_per_s, result.p99_ms)
        return rows
    finally:
        process.terminate()
        process.wait()


def cache_runs(spec: Spec, work: Path, customers: list[dict[str, Any]], duration_s: float
               ) -> list[dict[str, Any]]:
    """`churn` over HTTP JSON with 64 customers repeating, response cache on vs off."""
    lua = write_lua([kserve_body(c) for c in customers], work)
    rows = []
    for label, cache_bytes in (("churn http_json 64 repeating customers, no cache", 0),
                               ("churn http_json 64 repeating customers, response cache",
                                64 << 20)):
        repository = render(spec, work / f"repository-cache-{cache_bytes}")
        with start(repository, work, f"cache-{cache_bytes}", cache_bytes) as server:
            url = f"{server.http_url}/v2/models/{MODEL}/infer"
            run_wrk(url, lua, 16, min(duration_s, 2.0))
            r = run_wrk(url, lua, HIGH, duration_s)
            rows.append({"case": label, "group": "cache", "client": "wrk", "mode": "closed",
                         "connections": HIGH, "requests_per_s": round(r["requests_per_s"], 1),
                         "p50_ms": round(r["p50_ms"], 3), "p99_ms": round(r["p99_ms"], 3),
                         "failed": 0})
            logger.info("%s: %.0f req/s p99 %.3f", label, r["requests_per_s"], r["p99_ms"])
    return rows


def open_runs(spec: Spec, work: Path, protocol: LoadProtocol, columns: Mapping[str, np.ndarray],
              saturated: float, duration_s: float, queue: QueuePolicy) -> list[dict[str, Any]]:
    """Open loop at 0.5x and 0.8x of the saturated throughput; overload at 2x and 4x with and
    without a bounded queue (a fresh server each, so memory starts equal)."""
    request = make_request(protocol, MODEL, columns)
    rows = []
    plans = [("served", spec, (0.5, 0.8)), ("bounded queue", with_queue(spec, queue), (2, 4)),
             ("unbounded queue", with_queue(spec, None), (2, 4))]
    for name, variant, loads in plans:
        for load in loads:
            repository = render(variant, work / f"repository-open-{name}-{load}".replace(" ", "-"))
            # refused and cut-off connections stay half-open; tritonserver waits 30 s for them
            with start(repository, work, f"open-{load}", stop_timeout_s=3) as server:
                url = base_url(server, protocol)
                closed(url, request, 16, min(duration_s, 2.0))
                rss_before = rss_mib(server.pid or 0)
                rate = load * saturated
                try:
                    result = checked(server, MODEL, lambda u=url, r=rate: open_loop(
                        u, request, r, duration_s))
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    # a run past saturation that breaks is a finding, not the end of the suite
                    logger.warning("open %s %.1fx failed: %s", name, load, exc)
                    continue
                offered = (result.completed + result.failed) / result.duration_s
                rows.append({"case": f"churn {protocol} open loop, {name}", "group": "open",
                             "load": load, **result.row(), "offered_per_s": round(offered, 1),
                             "refused_share": round(result.failed / max(
                                 result.completed + result.failed, 1), 4),
                             "rss_mib_before": round(rss_before, 1),
                             "rss_mib_after": round(rss_mib(server.pid or 0), 1)})
                logger.info("open %s %.1fx: %s", name, load, rows[-1])
    return rows


def median_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (case, connections): the median of its rounds (req/s, p50, p99), with the
    lowest and highest req/s of the rounds."""
    rows = []
    for key in dict.fromkeys((r["case"], r["connections"]) for r in runs):
        mine = [r for r in runs if (r["case"], r["connections"]) == key]
        rates = [r["requests_per_s"] for r in mine]
        row = dict(mine[0])
        for field in ("requests_per_s", "p50_ms", "p90_ms", "p99_ms"):
            row[field] = round(float(np.median([r[field] for r in mine])), 3)
        row.update(rounds=len(mine), failed=sum(r["failed"] for r in mine),
                   completed=sum(r["completed"] for r in mine),
                   requests_per_s_min=min(rates), requests_per_s_max=max(rates))
        rows.append(row)
    return rows


# -- report -------------------------------------------------------------------------------------

def _find(rows: list[dict[str, Any]], case: str, connections: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["case"] == case and r["connections"] == connections
                 and r["mode"] == "closed"), None)


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The goals' figures, each from rows of this run."""
    out: dict[str, Any] = {}
    naive_low, naive_high = (_find(rows, "naive Flask http_json", c) for c in (LOW, HIGH))
    churn = {p: (_find(rows, f"churn {p}", LOW), _find(rows, f"churn {p}", HIGH))
             for p in PROTOCOLS}
    churn = {p: v for p, v in churn.items() if v[0] and v[1]}
    if naive_low and naive_high:
        for p, (low, high) in churn.items():
            out[f"churn/naive throughput c=64, {p}"] = high["requests_per_s"] / naive_high[  # type: ignore[index]
                "requests_per_s"]
            out[f"churn p99 c=64 ms, {p}"] = high["p99_ms"]  # type: ignore[index]
            out[f"churn p50 c=1 ms, {p}"] = low["p50_ms"]  # type: ignore[index]
        out["naive p50 c=1 ms"] = naive_low["p50_ms"]
        for p in PROTOCOLS:
            high = _find(rows, f"churn_packed {p}", HIGH)
            if high:
                out[f"churn_packed/naive throughput c=64, {p}"] = (
                    high["requests_per_s"] / naive_high["requests_per_s"])
                out[f"churn_packed p99 c=64 ms, {p}"] = high["p99_ms"]
    for p in ("http_json", "grpc"):
        noop_low, noop_high = (_find(rows, f"no-op step {p}", c) for c in (LOW, HIGH))
        ens_low, ens_high = (_find(rows, f"no-op in ensemble {p}", c) for c in (LOW, HIGH))
        churn_low, churn_high = (_find(rows, f"churn {p}", c) for c in (LOW, HIGH))
        if noop_high and churn_high and noop_low and churn_low:
            out[f"churn/no-op step throughput c=64, {p}"] = (
                churn_high["requests_per_s"] / noop_high["requests_per_s"])
            out[f"churn p50 c=1 above no-op step ms, {p}"] = churn_low["p50_ms"] - noop_low[
                "p50_ms"]
        if ens_high and churn_high and ens_low and churn_low:
            out[f"churn/no-op in ensemble throughput c=64, {p}"] = (
                churn_high["requests_per_s"] / ens_high["requests_per_s"])
            out[f"churn p50 c=1 above no-op in ensemble ms, {p}"] = (
                churn_low["p50_ms"] - ens_low["p50_ms"])
        if noop_high and ens_high:
            out[f"one-step ensemble cost at c=1 ms, {p}"] = ens_low["p50_ms"] - noop_low[  # type: ignore[index]
                "p50_ms"]
            out[f"one-step ensemble throughput share c=64, {p}"] = (
                ens_high["requests_per_s"] / noop_high["requests_per_s"])
        packed_high = _find(rows, f"no-op packed {p}", HIGH)
        if packed_high and noop_high:
            out[f"no-op packed/no-op throughput c=64, {p}"] = (
                packed_high["requests_per_s"] / noop_high["requests_per_s"])
    on, off = _find(rows, "churn grpc", HIGH), _find(rows, "churn batching off grpc", HIGH)
    if on and off:
        out["batching on/off throughput c=64, grpc"] = on["requests_per_s"] / off["requests_per_s"]
        # per-request cost is the inverse of throughput on a saturated server
        out["share of per-request cost batching amortizes, grpc"] = (
            1 - off["requests_per_s"] / on["requests_per_s"])
    one = _find(rows, "churn 1 instance grpc", HIGH)
    if on and one:
        out["2/1 instances throughput c=64, grpc"] = on["requests_per_s"] / one["requests_per_s"]
    cache = [r for r in rows if r["group"] == "cache"]
    if len(cache) == 2:
        out["response cache on/off throughput c=64, repeating customers"] = (
            cache[1]["requests_per_s"] / cache[0]["requests_per_s"])
    return out


def markdown(rows: list[dict[str, Any]], figures: Mapping[str, Any], machine: str) -> str:
    lines = [f"# Benchmark suite ({machine})", "",
             "Every figure from one run on this machine; compare ratios, not absolute figures "
             "across machines.", "",
             "| case | client | mode | c / rate | req/s | req/s over the rounds | p50 ms | "
             "p99 ms | failed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        load = (f"{r['target_rate']:.0f}/s ({r.get('load', '')}x)" if r.get("target_rate")
                else str(r["connections"]))
        spread = (f"{r['requests_per_s_min']:.0f}-{r['requests_per_s_max']:.0f}"
                  if "requests_per_s_min" in r else "")
        lines.append(f"| {r['case']} | {r['client']} | {r['mode']} | {load} | "
                     f"{r['requests_per_s']:.0f} | {spread} | {r['p50_ms']:.3f} | "
                     f"{r['p99_ms']:.3f} | {r['failed']} |")
    lines += ["", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in figures.items()]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, machine: str) -> None:
    """Throughput against p99 per configuration: c=1 and c=64 joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(14, 7))
    closed_rows = [r for r in rows if r["mode"] == "closed" and r["group"] != "cache"]
    for case in dict.fromkeys(r["case"] for r in closed_rows):
        points = sorted((r["requests_per_s"], r["p99_ms"]) for r in closed_rows
                        if r["case"] == case)
        style = {"ceiling": "--", "baseline": ":", "tuning": "-."}.get(
            next(r["group"] for r in closed_rows if r["case"] == case), "-")
        axes.plot(*zip(*points, strict=True), style, marker="o", label=case)
    open_rows = [r for r in rows if r["mode"] == "open"]
    for case in dict.fromkeys(r["case"] for r in open_rows):
        points = [(r["requests_per_s"], r["p99_ms"]) for r in open_rows if r["case"] == case]
        axes.scatter(*zip(*points, strict=True), marker="x", s=60, label=case)
    axes.set_xlabel("answered requests/s")
    axes.set_ylabel("p99 latency, ms (log)")
    axes.set_yscale("log")
    axes.axhline(10, color="grey", linewidth=0.8)
    axes.set_title(f"churn on tritonserver: throughput vs p99 (c=1 and c=64), {machine}")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 platform.processor())
    return f"{os.cpu_count()} cores, {model}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--rounds", type=int, default=2,
                        help="closed-loop rounds (median reported, spread beside it)")
    parser.add_argument("--quick", action="store_true",
                        help="four cases and no open-loop/cache runs (a smoke run)")
    parser.add_argument("--output", type=Path, default=Path("bench/results/suite.json"))
    parser.add_argument("--queue-max-size", type=int, default=0,
                        help="bounded queue of the overload runs when the spec sets none "
                             "(0: what the server drains in 50 ms at the measured throughput)")
    args = parser.parse_args()
    if not start_benchmark("wrk", "h2load"):
        return 1

    spec = load_spec().only(MODEL)
    # one body per case, so the response cache would answer from memory: measured on its own
    spec = spec.model_copy(update={"models": {MODEL: spec.models[MODEL].model_copy(
        update={"response_cache": False})}})
    artifacts = TabularArtifacts.for_version(spec.models[MODEL].version).require()
    customers = read_customers(artifacts.test_rows)[:64]
    columns = {k: v.reshape(-1, 1) for k, v in columns_from_rows(customers[:1]).items()}
    work = Path(tempfile.mkdtemp(prefix="bench-suite-"))
    repositories = {
        "served": render(spec, work / "repository-served", noop=True),
        "batching_off": render(_with_steps(spec, lambda s: {"dynamic_batching": (
            s.dynamic_batching.model_copy(update={"enabled": False, "queue": None}))}),
            work / "repository-batching-off"),
        "one_instance": render(_with_steps(spec, lambda s: {"instances": {
            **s.instances, "embedded": 1}}), work / "repository-one-instance"),
    }
    packed_served = (repositories["served"] / f"{MODEL}_packed").is_dir()
    todo = cases(packed_served, args.quick)
    rows: list[dict[str, Any]] = naive(make_request("http_json", MODEL, columns), args.duration_s)
    # Rounds, each case once per round, the order reversed every other round: the speed of a
    # shared machine drifts within minutes, and the median of the rounds is what is reported,
    # with the spread of its throughput beside it.
    runs: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        for name, repository in repositories.items():
            mine = [c for c in todo if c.server == name]
            if not mine:
                continue
            with start(repository, work, name) as server:
                for case in (mine if round_index % 2 == 0 else mine[::-1]):
                    data = packed_columns(columns) if case.packed else columns
                    runs += measure_case(server, case, make_request(
                        case.protocol, case.model, data), args.duration_s)
    rows += median_rows(runs)
    # h2load and wrk on the same endpoint: the clients agree, so protocols compare fairly
    with start(repositories["served"], work, "clients") as server:
        request = make_request("http_json", MODEL, columns)
        closed(server.http_url, request, 16, min(args.duration_s, 2.0))
        result = checked(server, MODEL, lambda: closed_h2load(
            server.http_url, request, HIGH, args.duration_s))
        rows.append({"case": "churn http_json (h2load)", "group": "clients", **result.row()})
    if not args.quick:
        rows += cache_runs(spec, work, customers, args.duration_s)
        # over HTTP: tritonserver 2.51 crashed over gRPC when a bounded queue refused requests
        # (bench/tune.py saw it in 5 of 5 tries)
        fastest = max((r for r in rows if r["case"] in {"churn http_json", "churn http_binary"}
                       and r["connections"] == HIGH), key=lambda r: r["requests_per_s"])
        protocol: LoadProtocol = fastest["case"].split()[-1]
        saturated = fastest["requests_per_s"]
        queue = spec.models[MODEL].steps.preprocess.dynamic_batching.queue or QueuePolicy(
            max_size=args.queue_max_size or max(8, int(saturated * 0.05)),
            timeout_us=100_000)
        rows += open_runs(spec, work, protocol, columns, saturated, args.duration_s, queue)

    figures = ratios(rows)
    where = machine()
    print(f"\n{'case':<58} {'c/rate':>8} {'req/s':>8} {'rounds':>13} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'failed':>7}")
    for r in rows:
        load = f"{r['target_rate']:.0f}/s" if r.get("target_rate") else str(r["connections"])
        spread = (f"{r['requests_per_s_min']:.0f}-{r['requests_per_s_max']:.0f}"
                  if "requests_per_s_min" in r else "")
        print(f"{r['case']:<58} {load:>8} {r['requests_per_s']:>8.0f} {spread:>13} "
              f"{r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['failed']:>7}")
    print(f"\n{where}; one run, ratios within it:")
    for key, value in figures.items():
        print(f"  {key:<62} {value:8.3f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": where, "rows": rows, "figures": figures},
                                      indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(rows, figures, where))
    plot(rows, args.output.with_suffix(".png"), where)
    print(f"\nfigures: {args.output}, {args.output.with_suffix('.md')}; "
          f"plot: {args.output.with_suffix('.png')}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
