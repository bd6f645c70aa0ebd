"""The rendered manifests against deploy/k8s/policy.yaml: one function per part of the policy,
each returning the disagreements it finds (empty when the manifests follow the policy)::

    problems = policy_problems("gpu", render("gpu"), load_policy())
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import yaml

from tritonkit.paths import PROJECT_ROOT
from tritonkit.scaling.policy import K8S_DIR, Policy, ScalingRules

Obj = dict[str, Any]
STARTUP_RECORD = K8S_DIR / "recorded" / "startup.json"
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
#: overlays whose Triton builds TensorRT engines at start-up
GPU_TARGETS = ("gpu", "queue-time", "keda", "canary", "blue-green")


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)]


def containers(objects: list[Obj]) -> dict[str, Obj]:
    """The Deployment's containers by name (the Rollouts take its template by workloadRef)."""
    (deployment,) = find(objects, "Deployment")
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def pod_spec(objects: list[Obj]) -> Obj:
    (deployment,) = find(objects, "Deployment")
    spec: Obj = deployment["spec"]["template"]["spec"]
    return spec


def _rules_problems(where: str, manifest: Obj, rules: ScalingRules) -> list[str]:
    wanted = {"stabilizationWindowSeconds": rules.stabilization_window_s,
              "selectPolicy": rules.select_policy,
              "policies": [p.manifest() for p in rules.policies]}
    problems = [f"{where}.{key} is {manifest.get(key)!r}, policy.yaml says {value!r}"
                for key, value in wanted.items() if manifest.get(key) != value]
    tolerance = manifest.get("tolerance")
    if tolerance is None or not math.isclose(float(tolerance), rules.tolerance or 0.0,
                                             abs_tol=5e-4):
        problems.append(f"{where}.tolerance is {tolerance!r}, policy.yaml's thresholds give "
                        f"{rules.tolerance}")
    return problems


def autoscaling_problems(objects: list[Obj], policy: Policy) -> list[str]:
    """The HPA (or KEDA's ScaledObject): bounds, CPU target, behavior, queue-time target."""
    scaling, queue = policy.autoscaling, policy.section("queue_time")
    hpas, scaled = find(objects, "HorizontalPodAutoscaler"), find(objects, "ScaledObject")
    if len(hpas) + len(scaled) != 1:
        return [f"expected one HorizontalPodAutoscaler or ScaledObject, found "
                f"{len(hpas)} and {len(scaled)}"]
    problems = []
    if hpas:
        spec = hpas[0]["spec"]
        bounds = (spec.get("minReplicas"), spec.get("maxReplicas"))
        behavior = spec.get("behavior", {})
        cpu = [m for m in spec["metrics"] if m["type"] == "ContainerResource"]
        if len(cpu) != 1 or cpu[0]["containerResource"] != {
                "name": "cpu", "container": scaling.container,
                "target": {"type": "Utilization",
                           "averageUtilization": scaling.target_cpu_utilization_percent}}:
            problems.append(f"HPA CPU metric is {cpu}, policy.yaml says {scaling.container} at "
                            f"{scaling.target_cpu_utilization_percent} %")
        for metric in spec["metrics"]:
            if metric["type"] == "Pods" and (
                    metric["pods"]["metric"]["name"] != queue["metric"]
                    or str(metric["pods"]["target"].get("averageValue"))
                    != str(queue["target_us"])):
                problems.append(f"HPA queue-time metric {metric['pods']} is not policy.yaml's "
                                f"{queue['metric']} at {queue['target_us']}")
        where = "HPA behavior"
    else:
        spec = scaled[0]["spec"]
        bounds = (spec.get("minReplicaCount"), spec.get("maxReplicaCount"))
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        triggers = {t["type"]: t for t in spec["triggers"]}
        if triggers.get("cpu", {}).get("metadata") != {
                "value": str(scaling.target_cpu_utilization_percent),
                "containerName": scaling.container}:
            problems.append(f"ScaledObject cpu trigger {triggers.get('cpu')} is not policy's")
        prometheus = triggers.get("prometheus", {}).get("metadata", {})
        if prometheus.get("threshold") != str(queue["target_us"]) or \
                f"[{queue['rate_window']}]" not in prometheus.get("query", ""):
            problems.append("ScaledObject prometheus trigger disagrees with policy.yaml "
                            f"queue_time ({queue['target_us']} us over {queue['rate_window']})")
        where = "ScaledObject behavior"
    if bounds != (scaling.min_replicas, scaling.max_replicas):
        problems.append(f"replicas {bounds[0]}..{bounds[1]}, policy.yaml says "
                        f"{scaling.min_replicas}..{scaling.max_replicas}")
    problems += _rules_problems(f"{where}.scaleUp", behavior.get("scaleUp", {}), scaling.scale_up)
    problems += _rules_problems(f"{where}.scaleDown", behavior.get("scaleDown", {}),
                                scaling.scale_down)
    return problems


def _probe(container: Obj, kind: str) -> Obj:
    probe: Obj = container.get(f"{kind}Probe", {}).get("httpGet", {})
    return probe


def probe_problems(objects: list[Obj], policy: Policy) -> list[str]:
    """Each container's probes: paths, ports and scheme as policy.yaml names them."""
    problems, by_name = [], containers(objects)
    for name, wanted in policy.section("probes").items():
        container = by_name.get(name)
        if container is None:
            problems.append(f"no container {name}")
            continue
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for kind in ("liveness", "readiness", "startup"):
            probe = _probe(container, kind)
            if kind not in wanted:
                if probe and kind == "readiness":
                    problems.append(f"{name} has a readinessProbe, policy.yaml gives it none")
                continue
            port = ports.get(probe.get("port"), probe.get("port"))
            if (probe.get("path"), port) != (wanted[kind], wanted["port"]) or \
                    probe.get("scheme", "HTTP") != wanted.get("scheme", "HTTP"):
                problems.append(f"{name} {kind}Probe is {probe}, policy.yaml says "
                                f"{wanted.get('scheme', 'HTTP')} {wanted[kind]} on "
                                f"{wanted['port']}")
    return problems


def compose_start_period_s() -> float:
    """docker-compose.yml's start_period of Triton's health check, in seconds."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    text = str(compose["services"]["triton"]["healthcheck"]["start_period"])
    return float(text.rstrip("s"))


def startup_problems(name: str, objects: list[Obj], policy: Policy) -> list[str]:
    """The startupProbe's budget against the recorded load time (CPU) or compose's GPU one."""
    startup = policy.section("startup")
    probe = containers(objects)["triton"].get("startupProbe", {})
    period, threshold = probe.get("periodSeconds", 10), probe.get("failureThreshold", 3)
    budget = period * threshold
    if name in GPU_TARGETS:
        needed = startup["gpu_margin"] * compose_start_period_s()
        wanted_period, source = startup["gpu_period_s"], "docker-compose.yml's start_period"
    else:
        recorded = json.loads(STARTUP_RECORD.read_text())["max_s"]
        needed = startup["margin"] * recorded
        wanted_period, source = startup["period_s"], f"the recorded load time ({recorded} s)"
    problems = []
    if period != wanted_period:
        problems.append(f"triton startupProbe.periodSeconds is {period}, policy.yaml says "
                        f"{wanted_period}")
    if not needed <= budget <= 2 * needed:
        problems.append(f"triton startup budget {threshold} x {period} s = {budget} s, wanted "
                        f"{needed:g} s to {2 * needed:g} s (policy margin x {source})")
    return problems


def _sleep(container: Obj) -> int | None:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    return int(command[1]) if command and command[0] == "sleep" else None


def _flag(container: Obj, flag: str) -> str | None:
    values = [a.split("=", 1)[1] for a in container.get("args", [])
              if a.startswith(f"--{flag}=")]
    return values[-1] if values else None


def shutdown_problems(objects: list[Obj], policy: Policy) -> list[str]:
    """Draining: preStop sleeps, Triton's exit timeout, the grace period, gRPC connection age."""
    shutdown, grpc, by_name = policy.section("shutdown"), policy.section("grpc"), \
        containers(objects)
    triton = by_name["triton"]
    found = {
        "gateway_prestop_s": _sleep(by_name["gateway"]),
        "triton_prestop_s": _sleep(triton),
        "triton_exit_timeout_s": _flag(triton, "exit-timeout-secs"),
        "termination_grace_period_s": pod_spec(objects).get("terminationGracePeriodSeconds"),
        "max_connection_age_ms": _flag(triton, "grpc-max-connection-age"),
        "max_connection_age_grace_ms": _flag(triton, "grpc-max-connection-age-grace"),
    }
    wanted = {**shutdown, **grpc}
    problems = [f"{key} is {found[key]}, policy.yaml says {value}" for key, value in
                wanted.items() if str(found[key]) != str(value)]
    if shutdown["triton_prestop_s"] <= shutdown["gateway_prestop_s"]:
        problems.append("policy.yaml: Triton must outlive the gateway's preStop")
    if shutdown["termination_grace_period_s"] < (shutdown["triton_prestop_s"]
                                                 + shutdown["triton_exit_timeout_s"]):
        problems.append("policy.yaml: the grace period is shorter than Triton's drain")
    return problems


def image_problems(objects: list[Obj], policy: Policy) -> list[str]:
    """Every container image is registry/name:tag from policy.yaml; no `latest`."""
    wanted = {f"{policy.registry}/{name}:{policy.tag}" for name in policy.image_names}
    problems = []
    for name, container in containers(objects).items():
        image = container["image"]
        if image not in wanted or image.endswith(":latest") or ":" not in image:
            problems.append(f"container {name} runs {image}, policy.yaml pins {sorted(wanted)}")
    return problems


def security_problems(objects: list[Obj]) -> list[str]:
    """Non-root, no privilege escalation, read-only root, no capabilities, secrets as files."""
    problems = []
    spec = pod_spec(objects)
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append("the pod does not set runAsNonRoot")
    for name, container in containers(objects).items():
        context = container.get("securityContext", {})
        if context.get("allowPrivilegeEscalation") is not False or \
                context.get("readOnlyRootFilesystem") is not True or \
                context.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"container {name}: securityContext {context}")
        for variable in container.get("env", []):
            if "secretKeyRef" in variable.get("valueFrom", {}):
                problems.append(f"container {name}: secret in environment {variable['name']}")
            if re.search(r"(KEY|TLS|CERT|SECRET|PASSWORD|TOKEN)", variable["name"]) and \
                    not str(variable.get("value", "")).startswith("/run/secrets/"):
                problems.append(f"container {name}: {variable['name']} is not a secret file")
    if "command" in containers(objects)["triton"]:
        problems.append("triton overrides the image's entrypoint, which closes the restricted "
                        "APIs with the admin key (deploy/triton/entrypoint.sh)")
    return problems


def disruption_problems(objects: list[Obj], policy: Policy) -> list[str]:
    pdbs = find(objects, "PodDisruptionBudget")
    wanted = policy.section("disruption")["max_unavailable"]
    if len(pdbs) != 1 or pdbs[0]["spec"].get("maxUnavailable") != wanted:
        return [f"expected one PodDisruptionBudget with maxUnavailable {wanted}"]
    return []


def rollout_problems(objects: list[Obj], policy: Policy) -> list[str]:
    """Canary steps and blue-green settings; the analysis thresholds."""
    problems = []
    for rollout in find(objects, "Rollout"):
        strategy = rollout["spec"]["strategy"]
        if "canary" in strategy:
            wanted = [{"setWeight": s["set_weight"]} if "set_weight" in s
                      else {"pause": {"duration": f"{s['pause_s']}s"}}
                      for s in policy.section("canary")["steps"]]
            if strategy["canary"].get("steps") != wanted:
                problems.append(f"canary steps {strategy['canary'].get('steps')}, policy.yaml "
                                f"says {wanted}")
        if "blueGreen" in strategy:
            green, wanted_bg = strategy["blueGreen"], policy.section("blue_green")
            if (green.get("autoPromotionEnabled"), green.get("scaleDownDelaySeconds")) != \
                    (wanted_bg["auto_promotion"], wanted_bg["scale_down_delay_s"]):
                problems.append(f"blue-green {green} disagrees with policy.yaml {wanted_bg}")
    analysis = policy.section("canary")["analysis"]
    conditions = {"success-rate": f"result[0] >= {analysis['success_rate_min']}",
                  "fallback-share": f"result[0] <= {analysis['fallback_share_max']}"}
    for template in find(objects, "AnalysisTemplate"):
        found = {m["name"]: m.get("successCondition") for m in template["spec"]["metrics"]}
        if found != conditions:
            problems.append(f"analysis conditions {found}, policy.yaml says {conditions}")
    return problems


CHECKS: dict[str, Callable[[list[Obj], Policy], list[str]]] = {
    "autoscaling": autoscaling_problems, "probes": probe_problems,
    "shutdown": shutdown_problems, "images": image_problems,
    "security": lambda objects, _: security_problems(objects),
    "disruption": disruption_problems, "rollouts": rollout_problems,
}


def policy_problems(name: str, objects: list[Obj], policy: Policy) -> list[str]:
    """Every check of one rendered target, each problem prefixed with its check's name."""
    problems = [f"{check}: {p}" for check, run in CHECKS.items() for p in run(objects, policy)]
    return problems + [f"startup: {p}" for p in startup_problems(name, objects, policy)]
