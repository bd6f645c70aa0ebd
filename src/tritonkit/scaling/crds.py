"""Strict schemas for the custom resources in deploy/k8s/ that kubernetes-validate has none for
(Argo Rollouts' Rollout and AnalysisTemplate, KEDA's ScaledObject, Prometheus Operator's
ServiceMonitor).

These are not the projects' published CRDs, which are not on any registry this project
reaches: they are the subset of each CRD's fields that the manifests use or may plausibly use,
written from the projects' documentation, with the same types and enums, and closed
(`additionalProperties: false`) at every level, so a misspelt or misplaced field fails as it
does under `kubernetes-validate --strict`. A field that upstream renames or removes is not
caught here. HPA `behavior` inside a ScaledObject is checked against Kubernetes' own
HorizontalPodAutoscalerBehavior schema (kubernetes-validate's, per version)::

    problems = crd_problems(rollout_object, "1.37")     # [] when it validates
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import jsonschema

Schema = dict[str, Any]


def _closed(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_BOOL: Schema = {"type": "boolean"}
_INT_OR_STR: Schema = {"type": ["integer", "string"]}
_STR_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = _closed({"name": _STR, "namespace": _STR, "labels": _STR_MAP,
                     "annotations": _STR_MAP}, ("name",))
_SELECTOR = _closed({"matchLabels": _STR_MAP,
                     "matchExpressions": {"type": "array", "items": {"type": "object"}}})


def _resource(api_version: str, kind: str, spec: Schema) -> Schema:
    return _closed({"apiVersion": {"const": api_version}, "kind": {"const": kind},
                    "metadata": _METADATA, "spec": spec}, ("apiVersion", "kind", "metadata",
                                                           "spec"))


# -- Argo Rollouts (argoproj.io/v1alpha1)

_ARG_VALUE_FROM = _closed({
    "podTemplateHashValue": {"enum": ["Stable", "Latest"]},
    "fieldRef": _closed({"fieldPath": _STR}, ("fieldPath",)),
})
_ROLLOUT_ARGS: Schema = {"type": "array", "items": _closed(
    {"name": _STR, "value": _STR, "valueFrom": _ARG_VALUE_FROM}, ("name",))}
_TEMPLATES: Schema = {"type": "array", "minItems": 1, "items": _closed(
    {"templateName": _STR, "clusterScope": _BOOL}, ("templateName",))}
_ANALYSIS = _closed({"templates": _TEMPLATES, "args": _ROLLOUT_ARGS, "startingStep": _INT},
                    ("templates",))
_STEP: Schema = {**_closed({
    "setWeight": {"type": "integer", "minimum": 0, "maximum": 100},
    "pause": _closed({"duration": _INT_OR_STR}),
    "analysis": _ANALYSIS,
    "setCanaryScale": _closed({"weight": _INT, "replicas": _INT, "matchTrafficWeight": _BOOL}),
}), "minProperties": 1, "maxProperties": 1}
_CANARY = _closed({
    "steps": {"type": "array", "items": _STEP}, "analysis": _ANALYSIS,
    "maxSurge": _INT_OR_STR, "maxUnavailable": _INT_OR_STR, "canaryService": _STR,
    "stableService": _STR, "trafficRouting": {"type": "object"},
    "dynamicStableScale": _BOOL, "scaleDownDelaySeconds": _INT,
})
_BLUE_GREEN = _closed({
    "activeService": _STR, "previewService": _STR, "autoPromotionEnabled": _BOOL,
    "autoPromotionSeconds": _INT, "scaleDownDelaySeconds": _INT,
    "previewReplicaCount": _INT, "prePromotionAnalysis": _ANALYSIS,
    "postPromotionAnalysis": _ANALYSIS, "abortScaleDownDelaySeconds": _INT,
}, ("activeService",))
ROLLOUT = _resource("argoproj.io/v1alpha1", "Rollout", {
    **_closed({
        "replicas": _INT, "revisionHistoryLimit": _INT, "minReadySeconds": _INT,
        "progressDeadlineSeconds": _INT, "selector": _SELECTOR,
        "template": {"type": "object"},
        "workloadRef": _closed({"apiVersion": _STR, "kind": _STR, "name": _STR,
                                "scaleDown": {"enum": ["never", "onsuccess", "progressively"]}},
                               ("apiVersion", "kind", "name")),
        "strategy": {**_closed({"canary": _CANARY, "blueGreen": _BLUE_GREEN}),
                     "minProperties": 1, "maxProperties": 1},
    }, ("selector", "strategy")),
    # the pod template comes from exactly one place
    "oneOf": [{"required": ["template"]}, {"required": ["workloadRef"]}],
})
ANALYSIS_TEMPLATE = _resource("argoproj.io/v1alpha1", "AnalysisTemplate", _closed({
    "args": {"type": "array", "items": _closed({"name": _STR, "value": _STR}, ("name",))},
    "metrics": {"type": "array", "minItems": 1, "items": _closed({
        "name": _STR, "interval": _STR, "initialDelay": _STR, "count": _INT_OR_STR,
        "successCondition": _STR, "failureCondition": _STR, "failureLimit": _INT_OR_STR,
        "inconclusiveLimit": _INT_OR_STR, "consecutiveErrorLimit": _INT_OR_STR,
        "provider": _closed({"prometheus": _closed(
            {"address": _STR, "query": _STR, "timeout": _INT}, ("address", "query"))}),
    }, ("name", "provider"))},
}, ("metrics",)))

# -- KEDA (keda.sh/v1alpha1)

_TRIGGER = _closed({
    "type": _STR, "name": _STR, "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
    "metadata": _STR_MAP, "useCachedMetrics": _BOOL,
    "authenticationRef": _closed({"name": _STR, "kind": _STR}, ("name",)),
}, ("type", "metadata"))


def _scaled_object(behavior: Schema) -> Schema:
    return _resource("keda.sh/v1alpha1", "ScaledObject", _closed({
        "scaleTargetRef": _closed({"apiVersion": _STR, "kind": _STR, "name": _STR,
                                   "envSourceContainerName": _STR}, ("name",)),
        "minReplicaCount": _INT, "maxReplicaCount": _INT, "idleReplicaCount": _INT,
        "pollingInterval": _INT, "cooldownPeriod": _INT, "initialCooldownPeriod": _INT,
        "advanced": _closed({
            "restoreToOriginalReplicaCount": _BOOL,
            "horizontalPodAutoscalerConfig": _closed({"name": _STR, "behavior": behavior}),
        }),
        "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
    }, ("scaleTargetRef", "triggers")))


# -- Prometheus Operator (monitoring.coreos.com/v1)

SERVICE_MONITOR = _resource("monitoring.coreos.com/v1", "ServiceMonitor", _closed({
    "selector": _SELECTOR, "jobLabel": _STR,
    "namespaceSelector": _closed({"any": _BOOL, "matchNames": {"type": "array",
                                                              "items": _STR}}),
    "podTargetLabels": {"type": "array", "items": _STR},
    "targetLabels": {"type": "array", "items": _STR},
    "endpoints": {"type": "array", "minItems": 1, "items": _closed({
        "port": _STR, "path": _STR, "scheme": {"enum": ["http", "https"]}, "interval": _STR,
        "scrapeTimeout": _STR, "honorLabels": _BOOL,
    }, ("port",))},
}, ("selector", "endpoints")))

CUSTOM_KINDS = {("argoproj.io/v1alpha1", "Rollout"), ("argoproj.io/v1alpha1", "AnalysisTemplate"),
                ("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1",
                                                       "ServiceMonitor")}


def _kubernetes_definitions(version: str) -> Schema:
    """kubernetes-validate's strict definitions for `version` (their refs are #/$defs/...)."""
    path = files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", f"v{version}.0-local-strict", "_definitions.json")
    defs: Schema = json.loads(path.read_text())["$defs"]
    return defs


def schema_for(api_version: str, kind: str, version: str) -> Schema:
    """The schema of one custom kind for Kubernetes `version` ("1.37")."""
    if (api_version, kind) == ("keda.sh/v1alpha1", "ScaledObject"):
        # Kubernetes' own HorizontalPodAutoscalerBehavior, strict, for that version: its refs
        # resolve against the root, so the definitions go there.
        schema = _scaled_object(
            {"$ref": "#/$defs/io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"})
        schema["$defs"] = _kubernetes_definitions(version)
        return schema
    return {("argoproj.io/v1alpha1", "Rollout"): ROLLOUT,
            ("argoproj.io/v1alpha1", "AnalysisTemplate"): ANALYSIS_TEMPLATE,
            ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR}[(api_version, kind)]


def crd_problems(obj: dict[str, Any], version: str) -> list[str]:
    """Why `obj` (one of CUSTOM_KINDS) does not validate; empty when it does."""
    schema = schema_for(obj["apiVersion"], obj["kind"], version)
    validator = jsonschema.Draft202012Validator(schema)
    name = f"{obj['kind']}/{obj.get('metadata', {}).get('name', '?')}"
    return [f"{name} (Kubernetes {version}, tritonkit's CRD subset): "
            f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in validator.iter_errors(obj)]
