"""Scaling out and rolling out on Kubernetes, checked offline: the policy of deploy/k8s/
(`policy`), the pinned kubectl that renders it (`kubectl`), the manifests' validation and
policy checks (`manifests`, `checks`, `crds`), and an HPA simulator that replays a recorded
load test (`hpa_controller`, `replay`; the command is `hpa`)::

    python -m tritonkit.scaling.manifests          # make k8s-check
    python -m tritonkit.scaling.hpa --hold-last-s 900
"""
