"""The health probes' requests, one source per entry point, from the spec's family of the model
behind it: held-out rows for a tabular classifier (one tensor per feature or the packed pair,
as its config asks), short texts for a text embedding::

    bodies = probe_bodies(entry, config, spec)   # None: no family knows this entry point
    bodies(0), bodies(1)                         # KServe v2 JSON requests, each one unique

Every probe carries the parameter `step_contract.PROBE_PARAMETER`, so the steps leave its rows
out of the drift counts. Every probe is unique: Triton's response cache keys a request by its
inputs alone (not its parameters, checked on 2.51), and a cached answer would hide a dead step.
A tabular probe moves each fractional feature by less than 0.05 (a random amount); a text probe
carries a random token.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tritonkit.client.customers import kserve_json_inputs, read_customers
from tritonkit.repository.entry_points import EntryPoint
from tritonkit.repository.step_contract import PROBE_PARAMETER
from tritonkit.spec import Spec, TabularClassifier, TextEmbedding
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.contract import TabularContract
from tritonkit.tabular.packed import PACKED_CATEGORICAL, PACKED_NUMERIC

ProbeBodies = Callable[[int], dict[str, Any]]


def _marked(inputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"inputs": inputs, "parameters": {PROBE_PARAMETER: True}}


def tabular_bodies(customers: Sequence[Mapping[str, Any]], contract: TabularContract, *,
                   packed: bool, rng: random.Random | None = None) -> ProbeBodies:
    """The n-th probe: the n-th row (in turn), its fractional features moved a little (within
    their bounds)."""
    if not customers:
        raise ValueError("the health probes need at least one valid row")
    rng = rng or random.Random()
    fractional = [f for f in contract.schema.numeric if not f.integer]

    def body(n: int) -> dict[str, Any]:
        customer = dict(customers[n % len(customers)])
        for feature in fractional:
            moved = round(float(customer[feature.name]) + rng.uniform(0.0, 0.05), 4)
            if feature.maximum is not None and moved > feature.maximum:
                moved = feature.maximum
            customer[feature.name] = moved
        if not packed:
            return _marked(kserve_json_inputs(customer, contract))
        order = contract.packed
        values: dict[str, list[Any]] = {
            PACKED_NUMERIC: [float(customer[name]) for name in order.numeric],
            PACKED_CATEGORICAL: [str(customer[name]) for name in order.categorical],
        }
        wire = {PACKED_NUMERIC: "FP32", PACKED_CATEGORICAL: "BYTES"}
        return _marked([{"name": name, "datatype": wire[name], "shape": [1, len(values[name])],
                         "data": values[name]} for name in order.tensors])

    return body


def text_bodies(input_name: str, rng: random.Random | None = None) -> ProbeBodies:
    rng = rng or random.Random()

    def body(n: int) -> dict[str, Any]:
        text = f"health probe {n} {rng.getrandbits(64):016x}: is the service answering?"
        return _marked([{"name": input_name, "datatype": "BYTES", "shape": [1, 1],
                         "data": [text]}])

    return body


def probe_bodies(entry: EntryPoint, config: Mapping[str, Any], spec: Spec
                 ) -> ProbeBodies | None:
    """The probes of `entry` (served with `config`, Triton's JSON), or None when no model of
    the spec is behind it."""
    found = spec.model_behind(entry.name)
    if found is None:
        return None
    name, model = found
    inputs = [str(i["name"]) for i in config.get("input", [])]
    if isinstance(model, TabularClassifier):
        contract = TabularContract.of(name, model)
        paths = TabularArtifacts.for_version(model.version, name=name)
        customers = read_customers(paths.test_rows, contract=contract)
        return tabular_bodies(customers, contract,
                              packed=set(inputs) == set(contract.packed.tensors))
    if isinstance(model, TextEmbedding) and len(inputs) == 1:
        return text_bodies(inputs[0])
    return None
