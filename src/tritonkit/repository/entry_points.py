"""The models clients call in a model repository, read from its configs: each entry point with
the steps that answer for it. The sidecar watches each one, and the Prometheus rules are
rendered from them (`tritonkit.monitor.rules`), so nothing downstream names a model by hand::

    for entry in repository_entry_points(Path("build/production/model_repository")):
        entry.name, entry.steps          # "churn", ("churn_preprocess", "churn_model", ...)
    entry_points({name: triton.config(name) for name in triton.served()})   # the same, live

An entry point is a served model that no ensemble uses as a step: an ensemble (its steps are
its composing models, in order) or a model served as it is (the embedded target's fused
`churn_packed`, with no steps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from tritonkit.repository.config import read_config

#: Triton 2.51 counts one failed request of an ensemble this many times in the ensemble's
#: `nv_inference_request_failure`, and a success once (tests/integration/
#: test_batch_isolation.py pins it); a model served as it is counts a failure once.
ENSEMBLE_FAILURE_MULTIPLICITY = 2


@dataclasses.dataclass(frozen=True)
class EntryPoint:
    name: str
    steps: tuple[str, ...]  # composing models in order; () for a model served as it is
    cached: bool            # the response cache answers repeated requests

    @property
    def ensemble(self) -> bool:
        return bool(self.steps)

    @property
    def failure_multiplicity(self) -> int:
        return ENSEMBLE_FAILURE_MULTIPLICITY if self.ensemble else 1

    @property
    def timed_models(self) -> tuple[str, ...]:
        """The models whose queue and compute time are this entry point's (an ensemble never
        queues itself: its steps do)."""
        return self.steps or (self.name,)

    @property
    def refusing_step(self) -> str:
        """The model whose refused requests (`step_contract.REFUSED_REQUESTS`) are this entry
        point's: the first step validates what clients send (our ensembles' later steps never
        refuse, and may be shared with another entry point)."""
        return self.steps[0] if self.steps else self.name


def _steps(config: Mapping[str, Any]) -> tuple[str, ...]:
    steps = config.get("ensemble_scheduling", {}).get("step", [])
    return tuple(dict.fromkeys(str(step["model_name"]) for step in steps))


def entry_points(configs: Mapping[str, Mapping[str, Any]]) -> tuple[EntryPoint, ...]:
    """The entry points among `configs` (model name -> config as JSON, the form of Triton's
    model-config API), sorted by name."""
    composing = {step for config in configs.values() for step in _steps(config)}
    return tuple(
        EntryPoint(name, _steps(config),
                   bool(config.get("response_cache", {}).get("enable", False)))
        for name, config in sorted(configs.items()) if name not in composing)


def repository_entry_points(repository: Path) -> tuple[EntryPoint, ...]:
    """The entry points of a rendered model repository, from its `config.pbtxt` files."""
    configs = {
        path.parent.name: json_format.MessageToDict(read_config(path),
                                                    preserving_proto_field_name=True)
        for path in sorted(repository.glob("*/config.pbtxt"))
    }
    return entry_points(configs)
