"""The scaling and rollout policy of deploy/k8s/ (deploy/k8s/policy.yaml), loaded once.

The manifests' checks (`tritonkit.scaling.manifests`) and the HPA simulator
(`tritonkit.scaling.hpa_controller`) read their numbers from here, so the policy has one
source::

    policy = load_policy()
    policy.autoscaling.min_replicas                  # 2
    policy.autoscaling.scale_up_tolerance            # 80/70 - 1, the HPA's scaleUp.tolerance
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import yaml

from tritonkit.paths import PROJECT_ROOT

K8S_DIR = PROJECT_ROOT / "deploy" / "k8s"
POLICY_FILE = K8S_DIR / "policy.yaml"

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclasses.dataclass(frozen=True)
class ScalingPolicy:
    """One HPAScalingPolicy: at most `value` pods (or percent) of change per `period_s`."""

    type: PolicyType
    value: int
    period_s: int

    def manifest(self) -> dict[str, Any]:
        """As the HPA's `behavior.*.policies[]` writes it."""
        return {"type": self.type, "value": self.value, "periodSeconds": self.period_s}


@dataclasses.dataclass(frozen=True)
class ScalingRules:
    """One direction of `behavior`: its stabilization window, policies and selectPolicy;
    `tolerance` None means the controller's default (--horizontal-pod-autoscaler-tolerance)."""

    stabilization_window_s: int
    select_policy: SelectPolicy
    policies: tuple[ScalingPolicy, ...]
    tolerance: float | None = None

    @classmethod
    def from_yaml(cls, data: dict[str, Any], tolerance: float | None) -> ScalingRules:
        return cls(stabilization_window_s=int(data["stabilization_window_s"]),
                   select_policy=data["select_policy"],
                   policies=tuple(ScalingPolicy(p["type"], int(p["value"]), int(p["period_s"]))
                                  for p in data["policies"]),
                   tolerance=tolerance)


@dataclasses.dataclass(frozen=True)
class Autoscaling:
    """The HPA's bounds, target, thresholds and behavior."""

    min_replicas: int
    max_replicas: int
    container: str
    target_cpu_utilization_percent: int
    scale_out_above_percent: float
    scale_in_below_percent: float
    default_tolerance: float
    sync_period_s: int
    scale_up: ScalingRules
    scale_down: ScalingRules

    @property
    def scale_up_tolerance(self) -> float:
        """The scaleUp tolerance that puts the threshold at scale_out_above_percent."""
        return self.scale_out_above_percent / self.target_cpu_utilization_percent - 1

    @property
    def scale_down_tolerance(self) -> float:
        """The scaleDown tolerance that puts the threshold at scale_in_below_percent."""
        return 1 - self.scale_in_below_percent / self.target_cpu_utilization_percent


@dataclasses.dataclass(frozen=True)
class Policy:
    """deploy/k8s/policy.yaml; `raw` keeps the sections read as plain mappings."""

    oldest_kubernetes: str
    newest_kubernetes: str
    registry: str
    tag: str
    image_names: tuple[str, ...]
    autoscaling: Autoscaling
    raw: dict[str, Any]

    @property
    def kubernetes_versions(self) -> tuple[str, str]:
        return self.oldest_kubernetes, self.newest_kubernetes

    def section(self, name: str) -> dict[str, Any]:
        """A section of the file as written (probes, startup, shutdown, grpc, canary, ...)."""
        value: dict[str, Any] = self.raw[name]
        return value


def rounded_tolerance(value: float) -> float:
    """A tolerance as the manifests write it: three decimals (0.143 puts 80 % at 80.01 %)."""
    return round(value, 3)


def parse_policy(data: dict[str, Any]) -> Policy:
    """The policy from the mapping policy.yaml holds."""
    scaling = data["autoscaling"]
    target = int(scaling["target_cpu_utilization_percent"])
    up_threshold = float(scaling["scale_out_above_percent"])
    down_threshold = float(scaling["scale_in_below_percent"])
    if not down_threshold < target < up_threshold:
        raise ValueError(f"policy: scale_in_below_percent ({down_threshold}) < target ({target}) "
                         f"< scale_out_above_percent ({up_threshold}) must hold")
    if not 1 <= int(scaling["min_replicas"]) <= int(scaling["max_replicas"]):
        raise ValueError("policy: 1 <= min_replicas <= max_replicas must hold")
    autoscaling = Autoscaling(
        min_replicas=int(scaling["min_replicas"]), max_replicas=int(scaling["max_replicas"]),
        container=str(scaling["container"]), target_cpu_utilization_percent=target,
        scale_out_above_percent=up_threshold, scale_in_below_percent=down_threshold,
        default_tolerance=float(scaling["default_tolerance"]),
        sync_period_s=int(scaling["sync_period_s"]),
        scale_up=ScalingRules.from_yaml(
            scaling["scale_up"], rounded_tolerance(up_threshold / target - 1)),
        scale_down=ScalingRules.from_yaml(
            scaling["scale_down"], rounded_tolerance(1 - down_threshold / target)),
    )
    images = data["images"]
    return Policy(oldest_kubernetes=str(data["kubernetes"]["oldest"]),
                  newest_kubernetes=str(data["kubernetes"]["newest"]),
                  registry=str(images["registry"]), tag=str(images["tag"]),
                  image_names=tuple(images["names"]), autoscaling=autoscaling, raw=data)


def load_policy(path: Path = POLICY_FILE) -> Policy:
    """deploy/k8s/policy.yaml (or `path`)."""
    return parse_policy(yaml.safe_load(path.read_text()))
