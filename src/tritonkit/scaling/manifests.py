"""deploy/k8s/ rendered and validated offline: every overlay through the pinned kubectl's
kustomize, every object strictly against the oldest and newest Kubernetes the policy names
(kubernetes-validate; the custom resources against tritonkit.scaling.crds), the policy checks
(tritonkit.scaling.checks), and every PromQL expression through `promtool check rules`.

A kind that has no schema for a version (a removed API such as autoscaling/v2beta2, or a
misspelt kind) is a failure here, where kubernetes-validate only warns::

    python -m tritonkit.scaling.manifests            # make k8s-check; exit 1 on any problem
    objects = render("gpu"); problems = schema_problems(objects, ("1.35", "1.37"))
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes_validate import utils as kubernetes_validate

from tritonkit.scaling.crds import CUSTOM_KINDS, crd_problems
from tritonkit.scaling.kubectl import KUBECTL, installed, kustomize
from tritonkit.scaling.policy import K8S_DIR, load_policy

logger = logging.getLogger(__name__)

#: What `kubectl apply -k` takes: the base (for completeness: overlays build on it) and every
#: overlay.
TARGETS = ("base", "gpu", "queue-time", "keda", "canary", "blue-green")
ADAPTER_VALUES = K8S_DIR / "overlays" / "queue-time" / "prometheus-adapter-values.yaml"

Obj = dict[str, Any]


def target_dir(name: str) -> Path:
    return K8S_DIR / "base" if name == "base" else K8S_DIR / "overlays" / name


@functools.cache
def _rendered_text(name: str, kubectl: Path) -> str:
    return kustomize(target_dir(name), kubectl)


def render(name: str, kubectl: Path = KUBECTL) -> list[Obj]:
    """The objects `kubectl kustomize` renders for `name` (a fresh copy each call)."""
    return [obj for obj in yaml.safe_load_all(_rendered_text(name, kubectl)) if obj]


def label(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name', '?')}"


def schema_problems(objects: Iterable[Obj], versions: Sequence[str]) -> list[str]:
    """Every object, strictly, for each version: unknown fields, wrong types, and kinds with
    no schema (removed or misspelt APIs) are problems."""
    problems = []
    for obj in objects:
        for version in versions:
            if (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_KINDS:
                problems += crd_problems(obj, version)
                continue
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path) or "<root>"
                problems.append(f"{label(obj)} (Kubernetes {version}): {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{label(obj)}: Kubernetes {version} has no "
                                f"{obj.get('apiVersion')} {obj.get('kind')} (removed or "
                                "misspelt API)")
    return problems


# -- PromQL

_ADAPTER_TEMPLATE = {"<<.Series>>": "nv_inference_queue_duration_us",
                     "<<.LabelMatchers>>": 'namespace="tritonkit",pod="tritonkit-0"',
                     "<<.GroupBy>>": "pod"}


def adapter_rules(path: Path = ADAPTER_VALUES) -> list[Obj]:
    """The custom rules of the prometheus-adapter values file."""
    rules: list[Obj] = yaml.safe_load(path.read_text())["rules"]["custom"]
    return rules


def promql_expressions(objects: Iterable[Obj], adapter: Path | None = ADAPTER_VALUES
                       ) -> dict[str, str]:
    """Every PromQL expression of the rendered objects (and the adapter's rules), by where it
    is, with the templates (adapter <<...>>, Argo {{args.*}}) filled with sample values."""
    found = {}
    for obj in objects:
        if obj["kind"] == "ScaledObject":
            for index, trigger in enumerate(obj["spec"]["triggers"]):
                if trigger["type"] == "prometheus":
                    found[f"{label(obj)} trigger {index}"] = trigger["metadata"]["query"]
        if obj["kind"] == "AnalysisTemplate":
            for metric in obj["spec"]["metrics"]:
                query = metric["provider"]["prometheus"]["query"]
                found[f"{label(obj)} {metric['name']}"] = re.sub(
                    r"\{\{\s*args\.([\w-]+)\s*\}\}", r"sample-\1", query)
    if adapter is not None:
        for index, rule in enumerate(adapter_rules(adapter)):
            query = rule["metricsQuery"]
            for template, value in _ADAPTER_TEMPLATE.items():
                query = query.replace(template, value)
            found[f"{adapter.name} rule {index}"] = query
    return found


def promtool_problems(expressions: dict[str, str], promtool: str) -> list[str]:
    """`promtool check rules` on a file with one recording rule per expression."""
    if not expressions:
        return []
    names = list(expressions)
    rules = {"groups": [{"name": "tritonkit-k8s-expressions", "rules": [
        {"record": f"tritonkit:k8s_check_{index}", "expr": expressions[where]}
        for index, where in enumerate(names)]}]}
    with tempfile.TemporaryDirectory(prefix="k8s-promql-") as folder:
        path = Path(folder) / "expressions.yml"
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
        done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                              text=True, check=False, timeout=60)
    if done.returncode == 0:
        return []
    out = done.stdout + done.stderr
    # promtool names the rule by its index in the group; say where the expression came from
    named = [f"{names[int(m)]}: {line.strip()}" for line in out.splitlines()
             for m in re.findall(r"k8s_check_(\d+)", line)]
    return named or [f"promtool check rules failed: {out.strip()}"]


# -- everything, as `make k8s-check` runs it

def check_all(kubectl: Path = KUBECTL, promtool: str | None = None) -> dict[str, list[str]]:
    """Problems per target (render, schema, policy) and for PromQL; empty lists when clean."""
    from tritonkit.scaling.checks import policy_problems

    policy = load_policy()
    results: dict[str, list[str]] = {}
    rendered: dict[str, list[Obj]] = {}
    for name in TARGETS:
        try:
            rendered[name] = render(name, kubectl)
        except Exception as exc:
            results[name] = [f"render failed: {exc}"]
            continue
        results[name] = (schema_problems(rendered[name], policy.kubernetes_versions)
                         + policy_problems(name, rendered[name], policy))
    if promtool:
        expressions = promql_expressions([o for objs in rendered.values() for o in objs])
        results["promql"] = promtool_problems(expressions, promtool)
    return results


def main(argv: list[str] | None = None) -> int:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not installed():
        print(f"error: the pinned kubectl is not at {KUBECTL}: run scripts/test_tools.sh "
              "(python -m tritonkit.scaling.kubectl install)", file=sys.stderr)
        return 1
    promtool = shutil.which("promtool")
    if promtool is None:
        print("error: promtool is missing (apt-get install prometheus; make test-tools)",
              file=sys.stderr)
        return 1
    versions = " and ".join(load_policy().kubernetes_versions)
    results = check_all(KUBECTL, promtool)
    failed = 0
    for name, problems in results.items():
        status = "ok" if not problems else f"{len(problems)} problem(s)"
        what = ("PromQL parses (promtool check rules)" if name == "promql" else
                f"renders, validates strictly on Kubernetes {versions}, agrees with policy.yaml")
        print(f"{name:<11} {what}: {status}")
        for problem in problems:
            print(f"  - {problem}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
