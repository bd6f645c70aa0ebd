"""Replay a recorded CPU series through the HPA (tritonkit.scaling.hpa_controller) and report the
replica trajectory the policy gives.

The recording (bench/hpa_recording.py, deploy/k8s/recorded/cpu_series.csv) is the CPU of one
real tritonserver under a load test. The replay treats it as one of `reference_replicas`
identical pods sharing the load, so the whole deployment's demand is `cpu_cores x
reference_replicas`, spread evenly over the pods that are ready (CPU linear in load, capped at
the container's limit). Each sync the controller sees the mean of the samples of the last
`metric_window_s` (metrics-server's resolution). A pod the HPA adds takes `startup_s` to become
ready (the recorded load time) and is counted as unready for one more metric window; a pod it
removes stops serving at once. Utilization is relative to the Triton container's CPU request in
deploy/k8s/base/deployment.yaml. `python -m tritonkit.scaling.hpa` runs it::

    replay = default_replay(RECORDED / "cpu_series.csv", hold_last_s=900)
    print(report(replay, replay.run()))
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tritonkit.scaling.hpa_controller import Controller, Decision, HpaSpec
from tritonkit.scaling.policy import K8S_DIR, load_policy

RECORDED = K8S_DIR / "recorded"
DEPLOYMENT = K8S_DIR / "base" / "deployment.yaml"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One recorded sample: its end time, load phase, and CPU cores used over it."""

    t_s: float
    phase: str
    cpu_cores: float


def read_series(path: Path) -> list[Sample]:
    with open(path, newline="") as handle:
        return [Sample(float(row["t_s"]), row["phase"], float(row["cpu_cores"]))
                for row in csv.DictReader(handle)]


def hold_last_phase(samples: Sequence[Sample], seconds: float) -> list[Sample]:
    """The series, then the last phase's recorded samples repeated in order for `seconds`
    (a longer quiet period than the recording holds; every value is still a measured one)."""
    last = [s for s in samples if s.phase == samples[-1].phase]
    step = samples[-1].t_s - samples[-2].t_s
    out, t, index = list(samples), samples[-1].t_s, 0
    while t + step <= samples[-1].t_s + seconds + 1e-9:
        t += step
        out.append(Sample(round(t, 1), last[index % len(last)].phase + "+held",
                          last[index % len(last)].cpu_cores))
        index += 1
    return out


def _cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def triton_cpu(deployment: dict[str, Any], container: str = "triton") -> tuple[float, float]:
    """(request, limit) CPU cores of `container` in a Deployment's pod template."""
    for item in deployment["spec"]["template"]["spec"]["containers"]:
        if item["name"] == container:
            resources = item["resources"]
            return _cores(resources["requests"]["cpu"]), _cores(resources["limits"]["cpu"])
    raise KeyError(f"no container {container!r} in the deployment")


@dataclasses.dataclass(frozen=True)
class Step:
    """One sync of the replay: the load's phase, the pods, and the controller's decision."""

    phase: str
    demand_cores: float
    ready: int
    decision: Decision


@dataclasses.dataclass
class Replay:
    """The replay's inputs; `run()` returns one Step per sync."""

    spec: HpaSpec
    samples: Sequence[Sample]
    request_cores: float
    limit_cores: float
    reference_replicas: int
    startup_s: float
    sync_period_s: int = 15
    metric_window_s: float = 15.0

    def _demand(self, now: float) -> tuple[str, float]:
        window = [s for s in self.samples if now - self.metric_window_s < s.t_s <= now]
        if not window:  # before the first sample ends: the first sample
            window = [min(self.samples, key=lambda s: abs(s.t_s - now))]
        cores = sum(s.cpu_cores for s in window) / len(window)
        return window[-1].phase, cores * self.reference_replicas

    def run(self) -> list[Step]:
        controller = Controller(self.spec, self.spec.min_replicas)
        ready_at = [-math.inf] * self.spec.min_replicas  # one entry per pod
        request_m = round(self.request_cores * 1000)
        steps = []
        now = float(self.sync_period_s)
        while now <= self.samples[-1].t_s + 1e-9:
            phase, demand = self._demand(now)
            serving = sum(1 for at in ready_at if at <= now)
            counted = sum(1 for at in ready_at if at + self.metric_window_s <= now)
            if counted == 0:  # no metrics yet: the controller skips the sync
                now += self.sync_period_s
                continue
            per_pod = min(demand / max(serving, 1), self.limit_cores)
            usages = [math.ceil(per_pod * 1000)] * counted
            decision = controller.sync(now, usages, request_m, unready=len(ready_at) - counted)
            if decision.replicas > len(ready_at):
                ready_at += [now + self.startup_s] * (decision.replicas - len(ready_at))
            else:  # the ReplicaSet removes the newest pods first
                ready_at = sorted(ready_at)[:decision.replicas]
            steps.append(Step(phase, round(demand, 3), serving, decision))
            now += self.sync_period_s
        return steps


def default_replay(series: Path = RECORDED / "cpu_series.csv", hold_last_s: float = 0.0,
                   default_tolerance: bool = False) -> Replay:
    """The replay of `series` under policy.yaml, the deployment's CPU request and limit, and the
    recorded start-up time."""
    policy = load_policy()
    spec = HpaSpec.from_policy(policy.autoscaling)
    if default_tolerance:
        spec = spec.without_tolerances()
    samples = read_series(series)
    if hold_last_s:
        samples = hold_last_phase(samples, hold_last_s)
    request, limit = triton_cpu(yaml.safe_load(DEPLOYMENT.read_text()))
    startup = json.loads((series.parent / "startup.json").read_text())["max_s"]
    return Replay(spec, samples, request, limit, reference_replicas=spec.min_replicas,
                  startup_s=float(startup), sync_period_s=policy.autoscaling.sync_period_s)


def changes(steps: Sequence[Step]) -> list[Step]:
    """The syncs at which the replica count changed."""
    out, last = [], steps[0].decision.replicas if steps else 0
    for step in steps:
        if step.decision.replicas != last:
            out.append(step)
            last = step.decision.replicas
    return out


def phase_spans(steps: Sequence[Step]) -> list[tuple[str, float, float]]:
    """(phase, first sync, last sync) of each run of one phase, in order."""
    spans: list[tuple[str, float, float]] = []
    for step in steps:
        t = step.decision.time_s
        if spans and spans[-1][0] == step.phase:
            spans[-1] = (step.phase, spans[-1][1], t)
        else:
            spans.append((step.phase, t, t))
    return spans


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def report(replay: Replay, steps: Sequence[Step]) -> str:
    """The trajectory as text: the policy, each phase, each change of the replica count."""
    up, down = replay.spec.tolerances
    target = replay.spec.target_utilization
    lines = [f"HPA {replay.spec.min_replicas}..{replay.spec.max_replicas} replicas, target "
             f"{target} % of {replay.request_cores:g} CPU, out above {target * (1 + up):.1f} % "
             f"(tolerance {up:g}) held {replay.spec.scale_up.stabilization_window_s} s, in below "
             f"{target * (1 - down):.1f} % (tolerance {down:g}) held "
             f"{replay.spec.scale_down.stabilization_window_s} s; load of "
             f"{replay.reference_replicas} pods, new pods ready after {replay.startup_s:g} s",
             "", "phase              from    to   mean util. at ref.  replicas (start → end, max)"]
    for phase, start, end in phase_spans(steps):
        inside = [s for s in steps if start <= s.decision.time_s <= end]
        util = sum(s.demand_cores for s in inside) / len(inside) / replay.reference_replicas
        replicas = [s.decision.replicas for s in inside]
        lines.append(f"{phase:<17} {_clock(start):>5} {_clock(end):>5}   "
                     f"{util / replay.request_cores * 100:6.0f} %           "
                     f"{replicas[0]} → {replicas[-1]}, max {max(replicas)}")
    lines += ["", "changes:"]
    for step in changes(steps):
        d = step.decision
        lines.append(f"  {_clock(d.time_s):>5} {step.phase:<16} → {d.replicas:>2} replicas "
                     f"(utilization {d.utilization} % on {step.ready} ready, proposed "
                     f"{d.proposed}, {d.reason})")
    if not changes(steps):
        lines.append("  none")
    return "\n".join(lines)
