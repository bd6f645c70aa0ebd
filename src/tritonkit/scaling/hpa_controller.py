"""The Kubernetes HorizontalPodAutoscaler's replica arithmetic, for a resource-utilization
metric, as kube-controller-manager computes it (pkg/controller/podautoscaler:
replica_calculator.go `GetResourceReplicas`, horizontal.go `normalizeDesiredReplicasWithBehaviors`).

Each sync (15 s by default) the controller:

1. takes the utilization of the ready pods' containers as an integer percent of their requests
   (truncated: `int32(metricsTotal*100/requestsTotal)`), and the ratio to the target;
2. keeps the current count when the ratio is within the tolerances (`1 - down <= ratio <= 1 +
   up`; 0.1 each unless `behavior.scaleUp/scaleDown.tolerance` says otherwise), else proposes
   `ceil(ratio * readyPods)`; when scaling up with unready pods it counts them at 0 % and gives
   up if that flips the direction or lands within tolerance;
3. stabilizes: keeps every proposal with its time, and takes the lowest of the scale-up window's
   proposals as a floor and the highest of the scale-down window's as a ceiling for the current
   count (so scaling out needs the whole 300 s window above, in needs the 600 s window below);
4. limits the rate by the policies (`Pods`/`Percent` per `periodSeconds`, counting the changes
   already made within each period; `selectPolicy` Max takes the most permissive), then
   minReplicas and maxReplicas.

Not modelled: missing metrics (every pod reports), pods that are deleted or failed, and
several metrics at once. `python -m tritonkit.scaling.hpa` replays a recorded CPU series through
it (tritonkit.scaling.replay)::

    controller = Controller(HpaSpec.from_policy(load_policy().autoscaling), replicas=2)
    decision = controller.sync(now_s=15.0, usages_percent=[95, 97], unready=0)
    decision.replicas                                  # what the Deployment is scaled to
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from tritonkit.scaling.policy import Autoscaling, ScalingPolicy, ScalingRules


@dataclasses.dataclass(frozen=True)
class HpaSpec:
    """What the controller needs of one HPA with one ContainerResource/Resource target."""

    min_replicas: int
    max_replicas: int
    target_utilization: int
    scale_up: ScalingRules
    scale_down: ScalingRules
    #: kube-controller-manager --horizontal-pod-autoscaler-tolerance
    default_tolerance: float = 0.1

    @classmethod
    def from_policy(cls, policy: Autoscaling) -> HpaSpec:
        return cls(policy.min_replicas, policy.max_replicas,
                   policy.target_cpu_utilization_percent, policy.scale_up, policy.scale_down,
                   policy.default_tolerance)

    @classmethod
    def from_manifest(cls, hpa: dict[str, Any], default_tolerance: float = 0.1) -> HpaSpec:
        """From a rendered autoscaling/v2 HorizontalPodAutoscaler with one CPU target."""
        spec = hpa["spec"]
        (metric,) = spec["metrics"]
        source = metric.get("containerResource") or metric["resource"]
        behavior = spec.get("behavior", {})

        def rules(direction: str, window: int) -> ScalingRules:
            data = behavior.get(direction, {})
            tolerance = data.get("tolerance")
            return ScalingRules(
                stabilization_window_s=int(data.get("stabilizationWindowSeconds", window)),
                select_policy=data.get("selectPolicy", "Max"),
                policies=tuple(ScalingPolicy(p["type"], int(p["value"]), int(p["periodSeconds"]))
                               for p in data.get("policies", [])),
                tolerance=None if tolerance is None else float(tolerance))

        # Kubernetes' defaults for a direction the HPA leaves out (horizontal-pod-autoscaler docs).
        return cls(int(spec.get("minReplicas", 1)), int(spec["maxReplicas"]),
                   int(source["target"]["averageUtilization"]), rules("scaleUp", 0),
                   rules("scaleDown", 300), default_tolerance)

    def without_tolerances(self) -> HpaSpec:
        """The same HPA on a cluster that drops behavior.*.tolerance (feature gate off)."""
        return dataclasses.replace(
            self, scale_up=dataclasses.replace(self.scale_up, tolerance=None),
            scale_down=dataclasses.replace(self.scale_down, tolerance=None))

    @property
    def tolerances(self) -> tuple[float, float]:
        """(scale-up, scale-down) tolerance in force."""
        up, down = self.scale_up.tolerance, self.scale_down.tolerance
        return (self.default_tolerance if up is None else up,
                self.default_tolerance if down is None else down)


def utilization_percent(usages_millicores: Sequence[int], request_millicores: int) -> int:
    """The controller's integer utilization: total usage over total requests, truncated."""
    return (sum(usages_millicores) * 100) // (request_millicores * len(usages_millicores))


def proposed_replicas(current: int, ready_usages_m: Sequence[int], unready: int,
                      request_m: int, target: int, tolerances: tuple[float, float]) -> int:
    """GetResourceReplicas: the metric's proposal before stabilization and limits.

    `ready_usages_m`: the CPU (millicores) of each pod counted as ready; `unready`: pods not
    yet counted (starting, or within the CPU initialization period), 0 % on a scale-up.
    """
    up, down = tolerances

    def within(ratio: float) -> bool:
        return (1.0 - down) <= ratio <= (1.0 + up)

    ratio = utilization_percent(ready_usages_m, request_m) / target
    if not (unready > 0 and ratio > 1.0):
        if within(ratio):
            return current
        return math.ceil(ratio * len(ready_usages_m))
    everyone = list(ready_usages_m) + [0] * unready
    new_ratio = utilization_percent(everyone, request_m) / target
    if within(new_ratio) or new_ratio < 1.0:  # too small, or the direction would flip
        return current
    replicas = math.ceil(new_ratio * len(everyone))
    return current if replicas < current else replicas


@dataclasses.dataclass(frozen=True)
class Decision:
    """One sync: the utilization seen, the proposal, after stabilization, and the result."""

    time_s: float
    utilization: int
    proposed: int
    stabilized: int
    replicas: int
    reason: str


class Controller:
    """One HPA's controller state: its proposals and scale events over time."""

    def __init__(self, spec: HpaSpec, replicas: int) -> None:
        self.spec = spec
        self.replicas = replicas
        self._proposals: list[tuple[float, int]] = []
        self._ups: list[tuple[float, int]] = []
        self._downs: list[tuple[float, int]] = []

    def _stabilize(self, now: float, proposed: int) -> int:
        up_cut = now - self.spec.scale_up.stabilization_window_s
        down_cut = now - self.spec.scale_down.stabilization_window_s
        floor, ceiling = proposed, proposed
        for at, value in self._proposals:
            if at > up_cut:
                floor = min(floor, value)
            if at > down_cut:
                ceiling = max(ceiling, value)
        self._proposals = [(at, v) for at, v in self._proposals
                           if at > min(up_cut, down_cut)]
        self._proposals.append((now, proposed))
        return min(max(self.replicas, floor), ceiling)

    def _changed(self, events: list[tuple[float, int]], now: float, period: int) -> int:
        return sum(change for at, change in events if at > now - period)

    def _limit(self, now: float, rules: ScalingRules, up: bool) -> int:
        """calculateScaleUpLimitWithScalingRules / calculateScaleDownLimitWithBehaviors."""
        if rules.select_policy == "Disabled":
            return self.replicas
        limits = []
        for policy in rules.policies:
            start = (self.replicas - self._changed(self._ups, now, policy.period_s)
                     + self._changed(self._downs, now, policy.period_s))
            if policy.type == "Pods":
                limits.append(start + policy.value if up else start - policy.value)
            elif up:  # rounded up, or a small percentage would never add a pod
                limits.append(math.ceil(start * (1 + policy.value / 100)))
            else:
                limits.append(int(start * (1 - policy.value / 100)))
        most_permissive = rules.select_policy == "Max"
        if up:
            return max(limits) if most_permissive else min(limits)
        return min(limits) if most_permissive else max(limits)

    def sync(self, now_s: float, usages_m: Sequence[int], request_m: int,
             unready: int = 0) -> Decision:
        """One reconcile at `now_s`: `usages_m` of the ready pods, `unready` pods beside them."""
        spec, current = self.spec, self.replicas
        utilization = utilization_percent(usages_m, request_m)
        proposed = proposed_replicas(current, usages_m, unready, request_m,
                                     spec.target_utilization, spec.tolerances)
        stabilized = self._stabilize(now_s, proposed)
        desired, reason = stabilized, "DesiredWithinRange"
        if stabilized > current:
            ceiling = max(self._limit(now_s, spec.scale_up, up=True), current)
            bound = min(spec.max_replicas, ceiling)
            if desired > bound:
                desired = bound
                reason = "ScaleUpLimit" if ceiling < spec.max_replicas else "TooManyReplicas"
        elif stabilized < current:
            floor = min(self._limit(now_s, spec.scale_down, up=False), current)
            bound = max(spec.min_replicas, floor)
            if desired < bound:
                desired = bound
                reason = "ScaleDownLimit" if floor > spec.min_replicas else "TooFewReplicas"
        if desired > current:
            self._ups.append((now_s, desired - current))
        elif desired < current:
            self._downs.append((now_s, current - desired))
        self.replicas = desired
        return Decision(now_s, utilization, proposed, stabilized, desired, reason)
