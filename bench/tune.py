#!/usr/bin/env python3
"""Tune the `churn` model's batching on the embedded target: what Model Analyzer does (it is
deprecated and needs perf_analyzer, which does not install here), for the one step that serves
churn there, the fused python step (`models.churn.steps.preprocess`).

The search, each point a freshly rendered repository and a fresh tritonserver:

1. instances x max_queue_delay_us, with the first `--preferred` option (normally none);
2. the other `--preferred` batch sizes at the best (instances, delay) of 1.

Per point, a closed-loop sweep of `--concurrency` (one customer per request, over `--protocol`),
each run `--duration-s` after a discarded `--warmup-s` run; the sweep stops at the first run
whose p99 exceeds `--p99-budget-ms`. A point's score is its highest throughput with p99 within
the budget and no failed request. The winner is the simplest point (lowest delay, then fewest
instances, then no preferred sizes) within `--tolerance-pct` of the best score: closer than
that is noise on a shared machine (one configuration measured twice in one sweep differed by
~10 %; a delay also costs every lone request up to its length at concurrency 1).

Then the queue policy (`dynamic_batching.queue`, Triton's default_queue_policy): a queue longer
than what the server drains within the budget only adds latency. Half the budget goes to
waiting, half to the batch's run and the transport: max_size = best req/s x budget / 2 / 1000
and timeout_us = budget / 2. It is checked with one run at
`--check-load` x the saturating concurrency, with and without it: refused share (tritonserver's
failure counter, the same for every protocol: h2load sees no gRPC status) and p99 of the
accepted requests (tritonserver's latency summary, successes only). It is written only when the
server came through that run.

The chosen values are written into `--spec` by a targeted text edit (`tritonkit.spec_edit`:
comments and every other line kept), read back with `load_spec` and compared with the choice;
`--dry-run` writes the edit to a temporary copy instead. Report: `<output-dir>/report.md` and
`points.json`::

    python bench/tune.py                    # make tune
    python bench/tune.py --dry-run          # make tune TUNE_ARGS=--dry-run
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import difflib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadgen import PROTOCOLS, Request, ServerCounts, closed, make_request, start_benchmark
from pydantic import ValidationError

from tritonkit.client.customers import columns_from_rows, read_customers
from tritonkit.errors import ServerStartError, ServerStopError
from tritonkit.families.render import render_repository
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import ServerSettings, TritonServer
from tritonkit.spec import DEFAULT_SPEC, QueuePolicy, Spec, load_spec
from tritonkit.spec_edit import set_in_text
from tritonkit.tabular.artifacts import TabularArtifacts

logger = logging.getLogger("tune")
MODEL = "churn"
TARGET = "embedded"
#: Where the tuned values live in the spec: the fused python step takes the preprocess step's
#: instances and batching on the embedded target (families/tabular_classifier.py).
STEP_PATH = ("models", MODEL, "steps", "preprocess")
#: A request an ensemble step refuses counts twice in the ensemble's failure counter
#: (docs/platform.md, "Quirks of Triton 2.51 and what the project does about them": the row
#: "Request counters of an ensemble of python steps").
FAILURES_PER_REFUSAL = 2
#: The share of the best throughput at which a point's sweep counts as saturated
#: (as bench/overload.py finds the saturating concurrency).
SATURATED = 0.9


@dataclasses.dataclass(frozen=True)
class Config:
    """One point of the search: the fused step's instances and dynamic batcher."""

    instances: int
    delay_us: int
    preferred: tuple[int, ...]

    def label(self) -> str:
        preferred = "[" + ", ".join(map(str, self.preferred)) + "]"
        return f"instances={self.instances} delay={self.delay_us}us preferred={preferred}"

    def simplicity(self) -> tuple[int, int, int]:
        """Lower is simpler: no added wait first, then fewer processes, then no preference."""
        return (self.delay_us, self.instances, len(self.preferred))


@dataclasses.dataclass
class Point:
    config: Config
    phase: int
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error: str | None = None

    def within_budget(self, budget_ms: float) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["ok"] and r["p99_ms"] <= budget_ms]

    def best_run(self, budget_ms: float) -> dict[str, Any] | None:
        runs = self.within_budget(budget_ms)
        return max(runs, key=lambda r: r["requests_per_s"]) if runs else None

    def score(self, budget_ms: float) -> float:
        best = self.best_run(budget_ms)
        return float(best["requests_per_s"]) if best else 0.0

    def saturating_concurrency(self) -> int:
        """The smallest concurrency whose throughput reaches SATURATED of the sweep's best."""
        runs = [r for r in self.runs if r["ok"]]
        top = max(r["requests_per_s"] for r in runs)
        return int(min(r["connections"] for r in runs if r["requests_per_s"] >= SATURATED * top))

    def as_json(self, budget_ms: float) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "label": self.config.label(),
                "phase": self.phase, "score_requests_per_s": round(self.score(budget_ms), 1),
                "runs": self.runs, "error": self.error}


# -- the spec copies each point serves -----------------------------------------------------------

def configured(spec: Spec, config: Config, queue: QueuePolicy | None) -> Spec:
    """The spec with `config` and `queue` in churn's preprocess step (the fused step's settings
    on the embedded target), churn alone and without the response cache (every request of a run
    is the same customer). Validated again: `model_copy` checks nothing."""
    model = spec.models[MODEL]
    step = model.steps.preprocess
    batching = step.dynamic_batching.model_copy(update={
        "preferred_batch_size": config.preferred, "max_queue_delay_us": config.delay_us,
        "queue": queue})
    step = step.model_copy(update={"instances": {**step.instances, TARGET: config.instances},
                                   "dynamic_batching": batching})
    model = model.model_copy(update={
        "steps": model.steps.model_copy(update={"preprocess": step}), "response_cache": False})
    return Spec.model_validate(spec.model_copy(update={"models": {MODEL: model}}).model_dump())


def one_customer(spec: Spec) -> dict[str, Any]:
    paths = TabularArtifacts.for_version(spec.models[MODEL].version, name=MODEL).require()
    customers = read_customers(paths.test_rows, limit=1)
    return {name: values.reshape(1, 1) for name, values in columns_from_rows(customers).items()}


# -- serving and measuring -----------------------------------------------------------------------

def start(spec: Spec, work: Path, name: str, *, summaries: bool = False) -> TritonServer:
    repository = work / name / "repository"
    shutil.rmtree(repository, ignore_errors=True)
    render_repository(spec, TARGET, repository)
    settings = ServerSettings(model_repository=repository, http_port=free_port(),
                              grpc_port=free_port(), metrics_port=free_port(),
                              log_file=work / name / "tritonserver.log",
                              summary_latencies=summaries)
    return TritonServer(settings).start(timeout_s=180)


def base_url(server: TritonServer, protocol: str) -> str:
    if protocol == "grpc":
        return f"http://{server.settings.host}:{server.settings.grpc_port}"
    return server.http_url


def accepted_quantiles(metrics_url: str) -> dict[str, float]:
    """tritonserver's latency summary of the ensemble, ms by quantile (successes only)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    found = {}
    for quantile, value in re.findall(
            r'^nv_inference_request_summary_us\{([^}]*)\} (\S+)$', text, re.M):
        match = re.search(r'quantile="([^"]+)"', quantile)
        if f'model="{MODEL}"' in quantile and match and not math.isnan(float(value)):
            found[match.group(1)] = float(value) / 1000
    return found


def measure(server: TritonServer, request: Request, connections: int, duration_s: float,
            warmup_s: float) -> dict[str, Any]:
    """One closed-loop run after a discarded warm-up run, checked against tritonserver's own
    counters (h2load reads no gRPC status: a failed gRPC call looks answered)."""
    url = base_url(server, request.protocol)
    counts = ServerCounts(server.metrics_url, MODEL)
    if warmup_s > 0:
        closed(url, request, connections, warmup_s)
    success_before, failure_before = counts.read()
    result = closed(url, request, connections, duration_s)
    success_after, failure_after = counts.read()
    row = result.row()
    refused = (failure_after - failure_before) / FAILURES_PER_REFUSAL
    answered = success_after - success_before
    row.update(server_answered=answered, server_refused=refused,
               refused_share=round(refused / max(answered + refused, 1.0), 4),
               ok=bool(result.failed == 0 and refused == 0 and result.completed > 0
                       and not math.isnan(row["p99_ms"])))
    return row


def first_line(exc: BaseException) -> str:
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(r"[;:]?\s*last log lines:?$", "", line)


def stop_and_keep_log(server: TritonServer, logs: Path, name: str, error: str | None
                      ) -> str | None:
    """Stop `server`; where it failed (`error`) or does not exit cleanly, copy its log into
    `logs` (the work folder is removed) and return the reason in one line, naming the log."""
    # A server that died under load (Triton 2.51 segfaulted over gRPC) no longer answers; one
    # that is alive but slow to shut down (clients cut off mid-request leave connections
    # half-open, and it waits 30 s for them before it is killed) served every request it was
    # sent, so its point stands.
    if error is None and not server.is_ready():
        error = "tritonserver stopped answering during the runs"
    try:
        server.stop(check=error is not None)
    except ServerStopError as exc:
        error = ((error + "; ") if error else "") + first_line(exc)
    if error is None:
        return None
    logs.mkdir(parents=True, exist_ok=True)
    kept = logs / f"tritonserver-{name}.log"
    with contextlib.suppress(OSError):
        shutil.copy2(server.log_file, kept)
    return f"{error} (log: {kept})"


def sweep(spec: Spec, point: Point, request: Request, args: argparse.Namespace, work: Path
          ) -> None:
    """The concurrency sweep of one point; stops at the first run over the budget."""
    name = f"point-{point.phase}-{point.config.instances}-{point.config.delay_us}-" + (
        "-".join(map(str, point.config.preferred)) or "none")
    try:
        server = start(configured(spec, point.config, None), work, name)
    except ServerStartError as exc:
        point.error = f"server did not start: {first_line(exc)}"
        logger.error("%s: %s", point.config.label(), point.error)
        return
    error = None
    try:
        for connections in args.concurrency:
            row = measure(server, request, connections, args.duration_s, args.warmup_s)
            point.runs.append(row)
            logger.info("%s c=%d: %.0f req/s, p50 %.2f ms, p99 %.2f ms, failed %d",
                        point.config.label(), connections, row["requests_per_s"],
                        row["p50_ms"], row["p99_ms"], row["failed"])
            if not row["ok"] or row["p99_ms"] > args.p99_budget_ms:
                break
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        error = f"run failed: {first_line(exc)}"
    point.error = stop_and_keep_log(server, args.output_dir, name, error)
    if point.error:
        logger.error("%s: %s", point.config.label(), point.error)


def choose(points: Sequence[Point], budget_ms: float, tolerance_pct: float) -> Point | None:
    """The simplest point within `tolerance_pct` of the best score; None if none scored. A
    point whose server failed is not chosen, whatever it scored before."""
    scored = [p for p in points if p.score(budget_ms) > 0 and p.error is None]
    if not scored:
        return None
    best = max(p.score(budget_ms) for p in scored)
    close = [p for p in scored if p.score(budget_ms) >= best * (1 - tolerance_pct / 100)]
    return min(close, key=lambda p: (p.config.simplicity(), -p.score(budget_ms)))


def explain(winner: Point, points: Sequence[Point], budget_ms: float, tolerance_pct: float
            ) -> str:
    """Why `winner` won, in a sentence or two for the report."""
    ranked = sorted(points, key=lambda p: -p.score(budget_ms))
    top, score = ranked[0], winner.score(budget_ms)
    rule = (f"The rule: the simplest point (lowest queue delay, then fewest instances, then no "
            f"preferred sizes) within {tolerance_pct:g} % of the best score wins; closer "
            "figures are noise on a shared machine.")
    if top.score(budget_ms) > score:
        behind = 100 * (1 - score / top.score(budget_ms))
        return (f"{behind:.1f} % below the best score ({top.config.label()}: "
                f"{top.score(budget_ms):.0f} req/s) and simpler. " + rule)
    others = [p for p in ranked if p is not winner]
    if not others:
        return "The only point tried. " + rule
    runner = others[0]
    ahead = (100 * (score / runner.score(budget_ms) - 1) if runner.score(budget_ms) > 0
             else float("inf"))
    return (f"The best score of the {len(points)} points, {ahead:.1f} % ahead of the next "
            f"({runner.config.label()}: {runner.score(budget_ms):.0f} req/s). " + rule)


def derive_queue(point: Point, budget_ms: float) -> tuple[QueuePolicy, dict[str, Any]]:
    """max_size: what the server drains in the budget left after a request's own p50."""
    best = point.best_run(budget_ms)
    assert best is not None
    # Half the budget for waiting in the queue, half for the batch's run and the transport:
    # a queue holding what the server drains in half the budget, and no request waits longer.
    drained = best["requests_per_s"] * (budget_ms / 2) / 1000
    queue = QueuePolicy(max_size=max(1, round(drained)), timeout_us=round(budget_ms / 2 * 1000))
    return queue, {"requests_per_s": best["requests_per_s"], "p50_ms": best["p50_ms"],
                   "connections": best["connections"], "max_size": queue.max_size,
                   "timeout_us": queue.timeout_us}


def verdict(bounded: dict[str, Any], unbounded: dict[str, Any], budget_ms: float) -> str:
    """What the queue check says, and whether the policy is written."""
    if "error" in bounded:
        text = ("**The queue policy is not written**: the server did not come through the run "
                f"with it ({bounded['error']}). The spec's queue setting is left as it was. "
                "Triton 2.51 can leave an ensemble request in flight when a step's full queue "
                "refuses it (fixed upstream in triton-inference-server/core#466), and while "
                "this tool was written its gRPC server segfaulted every time a small queue "
                "refused most requests (and once with no queue policy, at concurrency 128).")
    else:
        p99 = bounded.get("accepted_ms", {}).get("0.99", float("nan"))
        free = unbounded.get("accepted_ms", {}).get("0.99", float("nan"))
        share = bounded["run"]["refused_share"]
        text = (f"With the policy the server came through: {share:.2%} refused, accepted p99 "
                f"{_ms(p99)} ms ({'within' if p99 <= budget_ms else 'over'} the budget) "
                f"against {_ms(free)} ms unbounded. It is written with the configuration. One "
                "run each on a shared machine: a few ms either way is noise.")
    if "error" in unbounded:
        text += f" The unbounded run failed: {unbounded['error']}."
    return text


def check_queue(spec: Spec, config: Config, queue: QueuePolicy, request: Request,
                connections: int, args: argparse.Namespace, work: Path, logs: Path
                ) -> dict[str, Any]:
    """One run at `connections` with `queue` and one without, a fresh server each (the latency
    summary is a sliding window); whether each server came through (the log of one that did
    not is kept in `logs`)."""
    found: dict[str, Any] = {"connections": connections}
    for name, policy in (("with queue policy", queue), ("unbounded", None)):
        entry: dict[str, Any] = {"queue": None if policy is None else policy.model_dump()}
        started = time.monotonic()
        try:
            server = start(configured(spec, config, policy), work,
                           "check-" + name.replace(" ", "-"), summaries=True)
        except ServerStartError as exc:
            entry["error"] = f"server did not start: {first_line(exc)}"
            found[name] = entry
            continue
        error = None
        try:
            entry["run"] = measure(server, request, connections, args.duration_s, args.warmup_s)
            entry["accepted_ms"] = accepted_quantiles(server.metrics_url)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            error = f"run failed: {first_line(exc)}"
        stopping = time.monotonic()
        error = stop_and_keep_log(server, logs, "check-" + name.replace(" ", "-"), error)
        if error:
            entry["error"] = error
        entry["stop_s"] = round(time.monotonic() - stopping, 1)
        entry["seconds"] = round(time.monotonic() - started, 1)
        logger.info("queue check, %s at c=%d: %s", name, connections,
                    {k: v for k, v in entry.items() if k != "queue"})
        found[name] = entry
    return found


# -- the targeted edit of the spec file (tritonkit.spec_edit) --------------------------------

def edit_spec(text: str, config: Config, queue: QueuePolicy | None, write_queue: bool) -> str:
    """The spec text with the chosen configuration in churn's preprocess step."""
    text = set_in_text(text, [*STEP_PATH, "instances", TARGET], config.instances)
    batching = [*STEP_PATH, "dynamic_batching"]
    text = set_in_text(text, [*batching, "preferred_batch_size"], list(config.preferred))
    text = set_in_text(text, [*batching, "max_queue_delay_us"], config.delay_us)
    if write_queue:
        text = set_in_text(text, [*batching, "queue"],
                           None if queue is None else queue.model_dump())
    return text


def expected_spec(spec: Spec, config: Config, queue: QueuePolicy | None, write_queue: bool
                  ) -> Spec:
    """What the whole spec must read back as after `edit_spec` (every other value unchanged)."""
    model = spec.models[MODEL]
    step = model.steps.preprocess
    batching = step.dynamic_batching.model_copy(update={
        "preferred_batch_size": config.preferred, "max_queue_delay_us": config.delay_us,
        **({"queue": queue} if write_queue else {})})
    step = step.model_copy(update={"instances": {**step.instances, TARGET: config.instances},
                                   "dynamic_batching": batching})
    model = model.model_copy(update={"steps": model.steps.model_copy(
        update={"preprocess": step})})
    return spec.model_copy(update={"models": {**spec.models, MODEL: model}})


def write_and_check(spec_path: Path, original: Spec, config: Config, queue: QueuePolicy | None,
                    write_queue: bool, dry_run: bool, work: Path) -> str:
    """Edit the spec text, load the edit back and compare it with the choice, then (unless
    `dry_run`) replace the spec with it and load that back too; returns the diff. Raises
    SystemExit, leaving the spec as it was, when the edit does not read back as chosen."""
    before = spec_path.read_text()
    after = edit_spec(before, config, queue, write_queue)
    wanted = expected_spec(original, config, queue, write_queue)

    def check(path: Path) -> None:
        loaded = load_spec(path)
        if loaded != wanted:
            step = loaded.models[MODEL].steps.preprocess
            raise SystemExit(
                f"error: the tuned spec {path} does not read back as the chosen configuration: "
                f"instances {step.instances}, batching {step.dynamic_batching}; wanted {config}, "
                f"queue {queue if write_queue else 'unchanged'}, every other value as before")

    copy = work / "models.yaml"
    copy.write_text(after)
    check(copy)
    if not dry_run:
        partial = spec_path.with_name(f".{spec_path.name}.tune-{os.getpid()}")
        partial.write_text(after)
        shutil.copymode(spec_path, partial)
        os.replace(partial, spec_path)
        check(spec_path)
    return "".join(difflib.unified_diff(before.splitlines(keepends=True),
                                        after.splitlines(keepends=True),
                                        str(spec_path), f"{spec_path} (tuned)"))


# -- the report ----------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": model,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def _ms(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def report(results: dict[str, Any], points: Sequence[Point], args: argparse.Namespace) -> str:
    host, budget = results["machine"], args.p99_budget_ms
    out = [
        "# `make tune`: churn's batching on the embedded target", "",
        f"Machine: {host['nproc']} CPUs ({host['cpu_model']}), {host['date']}. Client and "
        "server share these CPUs; the figures are comparable only within this one run (machines "
        "of this kind differ by about 2x on the same day).", "",
        f"Protocol {args.protocol}, one customer per request, closed loop at concurrency "
        f"{', '.join(map(str, args.concurrency))} (stopping once p99 exceeds the budget), "
        f"{args.duration_s:g} s per run after a discarded {args.warmup_s:g} s run. Budget: p99 "
        f"<= {budget:g} ms. A point's score: its highest req/s within the budget with no failed "
        "request.", "",
        "## Every point", "",
        "| phase | config | concurrency | req/s | p50 ms | p99 ms | failed | score req/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    failures = []
    for point in points:
        score = f"{point.score(budget):.0f}" + (" (server failed: not chosen)" if point.error
                                                else "")
        if point.error:
            failures.append(f"- {point.config.label()}: {point.error}")
        if not point.runs:
            out.append(f"| {point.phase} | {point.config.label()} | - | - | - | - | - | "
                       f"{score} |")
        for k, run in enumerate(point.runs):
            # the client's count, or the server's where the client cannot see it (gRPC)
            failed = int(max(run["failed"], run["server_refused"]))
            over = " (over budget)" if run["p99_ms"] > budget else ""
            out.append(
                f"| {point.phase} | {point.config.label()} | {run['connections']} | "
                f"{run['requests_per_s']:.0f} | {_ms(run['p50_ms'])} | {_ms(run['p99_ms'])}"
                f"{over} | {failed} | {score if k == 0 else ''} |")
    if failures:
        out += ["", "Points whose server failed (a run that stops partway is not in the "
                "table):", "", *failures]
    winner = results.get("winner")
    out += ["", "## The winner", ""]
    if winner is None:
        out.append(f"No point served any concurrency within p99 <= {budget:g} ms: nothing was "
                   "written.")
        return "\n".join(out) + "\n"
    out += [
        f"**{winner['label']}**: {winner['score_requests_per_s']:.0f} req/s at concurrency "
        f"{winner['connections']} with p50 {winner['p50_ms']:.2f} ms, p99 "
        f"{winner['p99_ms']:.2f} ms. {winner['why']}", "",
        "## Queue policy", "",
    ]
    queue = results["queue"]
    out.append(
        f"max_size = {queue['requests_per_s']:.0f} req/s x {budget / 2:g} ms / 1000 = "
        f"**{queue['max_size']}** (what the server drains in half the budget; the other half is "
        f"for the batch's run and the transport, and a longer queue only adds latency), "
        f"timeout_us = half the budget = **{queue['timeout_us']}**.")
    check = results["queue_check"]
    connections = check["connections"]
    out += ["", f"Checked at {args.check_load:g}x the saturating concurrency "
            f"({results['saturating_concurrency']}): {connections} connections, a fresh server "
            "each. Refused: tritonserver's failure counter of the ensemble (two per refusal); "
            "accepted p50/p99: its latency summary (successes only, warm-up included), the "
            "client's p99 beside it (over every answer: h2load cannot tell a refused gRPC call "
            "from an answered one).", "",
            "| queue | answered req/s | refused share | accepted p50 ms | accepted p99 ms | "
            "client p99 ms | came through |", "|---|---|---|---|---|---|---|"]
    for name in ("with queue policy", "unbounded"):
        entry = check[name]
        run = entry.get("run", {})
        accepted = entry.get("accepted_ms", {})
        answered = run.get("server_answered", float("nan")) / args.duration_s
        out.append(
            f"| {name} | {answered:.0f} | "
            f"{run.get('refused_share', float('nan')):.2%} | "
            f"{_ms(accepted.get('0.5', float('nan')))} | {_ms(accepted.get('0.99', float('nan')))}"
            f" | {_ms(run.get('p99_ms', float('nan')))} | "
            f"{'no: ' + entry['error'] if entry.get('error') else 'yes'} |")
    if connections <= queue["max_size"]:
        out += ["", f"{connections} connections can hold at most {connections} requests, not "
                f"more than max_size {queue['max_size']}: in this closed loop only the timeout "
                "can refuse. An open-loop overload is where max_size refuses."]
    out += ["", results["queue_verdict"], "", "## The spec", ""]
    if results.get("spec_diff"):
        where = "a temporary copy (--dry-run: the spec is unchanged)" if args.dry_run \
            else str(args.spec)
        out += [f"Written to {where}, read back with load_spec and compared:", "", "```diff",
                results["spec_diff"].rstrip("\n"), "```"]
    else:
        out.append("The spec already holds the chosen configuration: nothing to change.")
    return "\n".join(out) + "\n"


def parse_preferred(values: Sequence[str]) -> list[tuple[int, ...]]:
    """`none`, `8`, `8,32` -> (), (8,), (8, 32)."""
    options: list[tuple[int, ...]] = []
    for value in values:
        if value.lower() in ("none", "[]", ""):
            options.append(())
        else:
            options.append(tuple(int(v) for v in value.split(",")))
    return options


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC,
                        help="the spec to tune and write (default configs/models.yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="report only: the edit goes to a temporary copy of the spec")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--delays", type=int, nargs="+", default=[0, 200, 1000],
                        help="max_queue_delay_us values")
    parser.add_argument("--preferred", nargs="+", default=["none", "8", "32"],
                        help="preferred batch sizes: none, 8, or a list like 8,32")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64, 128])
    parser.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--warmup-s", type=float, default=1.0,
                        help="a discarded run before each measured one")
    parser.add_argument("--p99-budget-ms", type=float, default=100.0)
    parser.add_argument("--tolerance-pct", type=float, default=10.0,
                        help="points this close to the best score count as equal")
    parser.add_argument("--check-load", type=float, default=4.0,
                        help="the queue check's concurrency, times the saturating one")
    parser.add_argument("--output-dir", type=Path, default=Path("bench/results/tune"))
    args = parser.parse_args(argv)
    start_benchmark()
    args.concurrency = sorted(set(args.concurrency))
    options = parse_preferred(args.preferred)

    original = load_spec(args.spec)
    if MODEL not in original.models:
        print(f"error: {args.spec} has no model {MODEL!r}", file=sys.stderr)
        return 1
    if not original.targets[TARGET].fuse_python_steps:
        print(f"error: the {TARGET} target does not fuse python steps: the preprocess step "
              "alone would not be churn's only step", file=sys.stderr)
        return 1
    if not original.models[MODEL].steps.preprocess.dynamic_batching.enabled:
        print("error: churn's preprocess step has dynamic_batching.enabled: false; there is no "
              "batcher to tune", file=sys.stderr)
        return 1
    spec = original.only(MODEL)
    try:  # refuse a search space the spec would refuse, before any server starts
        for preferred in options:
            configured(spec, Config(max(args.instances), max(args.delays), preferred), None)
    except ValidationError as exc:  # its message says which value is wrong
        print(f"error: the search space is not a valid spec: {exc}", file=sys.stderr)
        return 1
    request = make_request(args.protocol, MODEL, one_customer(spec))
    work = Path(tempfile.mkdtemp(prefix="tune-"))
    budget = args.p99_budget_ms

    points: list[Point] = []
    first = options[0] if () not in options else ()
    for instances in args.instances:
        for delay in args.delays:
            point = Point(Config(instances, delay, first), phase=1)
            sweep(spec, point, request, args, work)
            points.append(point)
    best_first = choose(points, budget, 0.0)
    if best_first is not None:
        for preferred in options:
            if preferred == first:
                continue
            point = Point(Config(best_first.config.instances, best_first.config.delay_us,
                                 preferred), phase=2)
            sweep(spec, point, request, args, work)
            points.append(point)

    results: dict[str, Any] = {"machine": machine(), "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    winner = choose(points, budget, args.tolerance_pct)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for stale in args.output_dir.glob("tritonserver-*.log"):  # an earlier run's
        stale.unlink()
    if winner is None:
        results["winner"] = None
        (args.output_dir / "points.json").write_text(json.dumps(
            {**results, "points": [p.as_json(budget) for p in points]}, indent=2) + "\n")
        (args.output_dir / "report.md").write_text(report(results, points, args))
        print(f"error: no point met p99 <= {budget:g} ms; nothing written. Report: "
              f"{args.output_dir / 'report.md'}", file=sys.stderr)
        return 1

    best_run = winner.best_run(budget)
    assert best_run is not None
    why = explain(winner, points, budget, args.tolerance_pct)
    results["winner"] = {"label": winner.config.label(), **dataclasses.asdict(winner.config),
                         "score_requests_per_s": winner.score(budget),
                         "connections": best_run["connections"], "p50_ms": best_run["p50_ms"],
                         "p99_ms": best_run["p99_ms"], "why": why}

    queue, derivation = derive_queue(winner, budget)
    results["queue"] = derivation
    saturating = winner.saturating_concurrency()
    results["saturating_concurrency"] = saturating
    check = check_queue(spec, winner.config, queue, request,
                        max(1, round(args.check_load * saturating)), args, work,
                        args.output_dir)
    results["queue_check"] = check
    bounded, unbounded = check["with queue policy"], check["unbounded"]
    write_queue = "error" not in bounded
    results["queue_verdict"] = verdict(bounded, unbounded, budget)
    if not write_queue:
        logger.warning("queue policy not written: %s", bounded["error"])

    results["chosen"] = {"instances": winner.config.instances,
                         "preferred_batch_size": list(winner.config.preferred),
                         "max_queue_delay_us": winner.config.delay_us,
                         "queue": queue.model_dump() if write_queue else "unchanged"}
    results["spec_diff"] = write_and_check(args.spec, original, winner.config, queue,
                                           write_queue, args.dry_run, work)
    results["spec_written"] = not args.dry_run
    (args.output_dir / "points.json").write_text(json.dumps(
        {**results, "points": [p.as_json(budget) for p in points]}, indent=2) + "\n")
    (args.output_dir / "report.md").write_text(report(results, points, args))
    print(f"\nwinner: {winner.config.label()}, {winner.score(budget):.0f} req/s "
          f"(c={best_run['connections']}, p50 {best_run['p50_ms']:.2f} ms, p99 "
          f"{best_run['p99_ms']:.2f} ms); queue {results['chosen']['queue']}")
    print(("dry run: the spec is unchanged; " if args.dry_run
           else f"written to {args.spec} and read back; ")
          + f"report: {args.output_dir / 'report.md'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
