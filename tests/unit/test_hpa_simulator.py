"""The HPA simulator (tritonkit.scaling.hpa_controller): the Kubernetes rules on synthetic
inputs against hand-computed answers, then the recorded load test (deploy/k8s/recorded/, real
tritonserver CPU) replayed under deploy/k8s/policy.yaml: no scale-out on a spike shorter than
the 300 s window, scale-out after sustained load, scale-in only after 600 s low, 2..10 respected."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from tritonkit.scaling.hpa_controller import (
    Controller,
    HpaSpec,
    proposed_replicas,
    utilization_percent,
)
from tritonkit.scaling.policy import K8S_DIR, ScalingRules, load_policy
from tritonkit.scaling.replay import RECORDED, Replay, changes, default_replay, read_series

POLICY = load_policy()
SPEC = HpaSpec.from_policy(POLICY.autoscaling)
TOLERANCES = SPEC.tolerances  # (0.143, 0.286)
SYNC = POLICY.autoscaling.sync_period_s


def m(percent: float, pods: int) -> list[int]:
    """`pods` pods each at `percent` of a 1000 m request, in millicores."""
    return [round(percent * 10)] * pods


# -- the replica calculator (replica_calculator.go)

def test_utilization_is_the_truncated_integer_percent_of_the_summed_requests() -> None:
    assert utilization_percent([700, 701], 1000) == 70  # 70.05 % truncates
    assert utilization_percent([333, 333, 333], 1000) == 33


def test_thresholds_are_80_and_50_percent_with_the_policy_tolerances() -> None:
    assert TOLERANCES == (0.143, 0.286)
    # 80 % is within (80/70 = 1.1429 <= 1.143); 81 % is out: ceil(81/70 * 2) = ceil(2.31) = 3
    assert proposed_replicas(2, m(80, 2), 0, 1000, 70, TOLERANCES) == 2
    assert proposed_replicas(2, m(81, 2), 0, 1000, 70, TOLERANCES) == 3
    # 50 % is within (50/70 = 0.7143 >= 0.714); 49 % on 4 pods: ceil(0.7 * 4) = 3
    assert proposed_replicas(4, m(50, 4), 0, 1000, 70, TOLERANCES) == 4
    assert proposed_replicas(4, m(49, 4), 0, 1000, 70, TOLERANCES) == 3


def test_the_default_tolerance_scales_at_77_and_63_percent() -> None:
    default = SPEC.without_tolerances().tolerances
    assert default == (0.1, 0.1)
    assert proposed_replicas(2, m(78, 2), 0, 1000, 70, default) == 3  # 1.114 > 1.1
    assert proposed_replicas(2, m(78, 2), 0, 1000, 70, TOLERANCES) == 2
    # 62/70 = 0.886 < 0.9: ceil(0.886 * 10) = 9; within 0.714..1.143 with the policy's
    assert proposed_replicas(10, m(62, 10), 0, 1000, 70, default) == 9
    assert proposed_replicas(10, m(62, 10), 0, 1000, 70, TOLERANCES) == 10


def test_unready_pods_count_as_idle_on_a_scale_up_and_may_cancel_it() -> None:
    # 2 ready at 100 % and 2 starting: 2000 m over 4 requests = 50 %, below 1: no change
    assert proposed_replicas(4, m(100, 2), 2, 1000, 70, TOLERANCES) == 4
    # 3 ready at 75 % and 1 starting: 2250/4000 = 56 %, within tolerance: no change
    assert proposed_replicas(4, m(75, 3), 1, 1000, 70, TOLERANCES) == 4
    # 2 ready at 140 % and 1 starting: 2800/3000 = 93 %, 93/70 = 1.329, ceil(3.99) = 4
    assert proposed_replicas(3, m(140, 2), 1, 1000, 70, TOLERANCES) == 4


# -- stabilization and rate limits (horizontal.go)

def run(controller: Controller, start: float, end: float, percent: float) -> list[int]:
    """Sync every 15 s from `start` to `end` with every pod at `percent`; the replicas."""
    out, t = [], start
    while t <= end:
        out.append(controller.sync(t, m(percent, controller.replicas), 1000).replicas)
        t += SYNC
    return out


def test_scale_out_waits_for_the_whole_300_s_window_and_the_next_one_300_s_more() -> None:
    controller = Controller(SPEC, 2)
    assert set(run(controller, 15, 300, 50)) == {2}
    # proposals of 3 from 315 s; the last proposal of 2 (300 s) leaves the window at 600 s
    high = run(controller, 315, 900, 100)
    times = list(range(315, 901, SYNC))
    assert times[high.index(3)] == 600
    # on 3 pods the proposal is 5 (ceil(1.43 * 3)); the proposals of 3 leave at 900 s
    assert times[high.index(5)] == 900


def test_scale_in_waits_600_s_then_halves_per_minute_down_to_min_replicas() -> None:
    no_window_up = dataclasses.replace(
        SPEC, scale_up=dataclasses.replace(SPEC.scale_up, stabilization_window_s=0))
    controller = Controller(no_window_up, 2)
    assert run(controller, 15, 150, 300)[-1] == 10  # 2 -> 6 (policy limit) -> 10 (max)
    low = run(controller, 165, 1200, 10)
    times = list(range(165, 1201, SYNC))
    # the last proposal of 10 (150 s) leaves the 600 s window at 750 s: 10 -> 5 (50 % per
    # 60 s), then 60 s later 5 -> int(2.5) = 2
    assert times[low.index(5)] == 750 and low[:low.index(5)] == [10] * low.index(5)
    assert times[low.index(2)] == 810


def test_scale_up_rate_is_the_most_permissive_policy_per_60_s_within_max_replicas() -> None:
    spec = dataclasses.replace(SPEC, scale_up=dataclasses.replace(SPEC.scale_up,
                                                                  stabilization_window_s=0))
    controller = Controller(spec, 2)
    first = controller.sync(15, m(400, 2), 1000)
    # Percent 100: 4, Pods 4: 6 -> Max -> 6
    assert (first.proposed, first.replicas, first.reason) == (12, 6, "ScaleUpLimit")
    # within 60 s of adding 4 the period starts at 2: still 6
    assert controller.sync(30, m(400, 6), 1000).replicas == 6
    # at 75 s the event (15 s) is out of the period: 6 -> 12 and 10, capped at max_replicas
    assert controller.sync(75, m(400, 6), 1000).replicas == 10


def test_select_policy_min_takes_the_least_permissive_and_disabled_never_scales() -> None:
    rules = dataclasses.replace(SPEC.scale_up, stabilization_window_s=0, select_policy="Min")
    controller = Controller(dataclasses.replace(SPEC, scale_up=rules), 2)
    assert controller.sync(15, m(400, 2), 1000).replicas == 4  # min(4, 6)
    disabled = Controller(dataclasses.replace(
        SPEC, scale_up=dataclasses.replace(rules, select_policy="Disabled")), 2)
    assert disabled.sync(15, m(400, 2), 1000).replicas == 2


def test_the_spec_read_from_the_hpa_manifest_is_the_policy() -> None:
    hpa = yaml.safe_load((K8S_DIR / "base" / "hpa.yaml").read_text())
    assert HpaSpec.from_manifest(hpa) == SPEC
    hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] = 300
    assert HpaSpec.from_manifest(hpa) != SPEC


# -- the recorded load test

@pytest.fixture(scope="module")
def recorded() -> dict[str, tuple[float, float]]:
    """Each recorded phase's (start, end) in seconds."""
    samples = read_series(RECORDED / "cpu_series.csv")
    interval = json.loads((RECORDED / "cpu_series.json").read_text())["interval_s"]
    spans: dict[str, tuple[float, float]] = {}
    for sample in samples:
        start = spans.get(sample.phase, (sample.t_s - interval, 0.0))[0]
        spans[sample.phase] = (start, sample.t_s)
    return spans


def test_the_recording_has_the_phases_and_a_spike_above_the_scale_out_threshold(
        recorded: dict[str, tuple[float, float]]) -> None:
    assert list(recorded) == ["idle", "spike", "low", "sustained", "low_after"]
    window = SPEC.scale_up.stabilization_window_s
    assert recorded["spike"][1] - recorded["spike"][0] < window
    assert recorded["sustained"][1] - recorded["sustained"][0] > window + 2 * SYNC
    replay = default_replay()
    by_phase: dict[str, list[float]] = {}
    for sample in replay.samples:
        by_phase.setdefault(sample.phase, []).append(sample.cpu_cores)
    # otherwise "no scale-out on the spike" would prove nothing
    spike = sum(by_phase["spike"]) / len(by_phase["spike"]) / replay.request_cores * 100
    low = max(by_phase["low"]) / replay.request_cores * 100
    assert spike > POLICY.autoscaling.scale_out_above_percent
    assert low < POLICY.autoscaling.scale_in_below_percent


def test_replay_scales_out_only_after_sustained_load_and_in_only_after_600_s_low(
        recorded: dict[str, tuple[float, float]]) -> None:
    replay = default_replay(hold_last_s=900)
    steps = replay.run()
    replicas = [s.decision.replicas for s in steps]
    assert min(replicas) >= 2 and max(replicas) <= 10
    moves = changes(steps)
    first_up = moves[0].decision
    sustained_start, sustained_end = recorded["sustained"]
    # nothing moves before the sustained phase (the spike, 90 s at ~150 %, included)
    assert first_up.replicas > 2 and first_up.time_s > sustained_start
    # exactly the 300 s window after the last sync that proposed no more pods, which is when
    # the sustained load began (give or take a sync and the metric window)
    last_low = max(s.decision.time_s for s in steps if s.decision.time_s < first_up.time_s
                   and s.decision.proposed <= 2)
    assert first_up.time_s - last_low == 300
    assert sustained_start - SYNC <= last_low <= sustained_start + replay.metric_window_s
    downs = [s.decision for s in moves
             if s.decision.replicas < replicas[steps.index(s) - 1]]
    assert downs, "the held quiet period must end in a scale-in"
    before = [s.decision for s in steps if s.decision.time_s < downs[0].time_s]
    peak = before[-1].replicas
    last_high = max(d.time_s for d in before if d.proposed >= peak)
    # exactly the 600 s window after the last sync that still wanted the peak, which is when
    # the sustained load ended
    assert downs[0].time_s - last_high == 600
    assert sustained_end - SYNC <= last_high <= sustained_end + replay.metric_window_s
    assert replicas[-1] == 2


def test_without_the_window_the_recorded_spike_would_have_scaled_out(
        recorded: dict[str, tuple[float, float]]) -> None:
    base = default_replay()
    hasty = dataclasses.replace(base.spec, scale_up=ScalingRules(
        0, "Max", base.spec.scale_up.policies, base.spec.scale_up.tolerance))
    steps = Replay(hasty, base.samples, base.request_cores, base.limit_cores,
                   base.reference_replicas, base.startup_s).run()
    spike_start, spike_end = recorded["spike"]
    first_up = changes(steps)[0].decision.time_s
    assert spike_start < first_up <= spike_end + base.metric_window_s
