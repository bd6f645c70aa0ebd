"""What the load tests send (loadtests/workload.py, which imports no Locust): the held-out
customers as the client sends them, the drifted and invalid variants, and the traffic mix."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import re
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tritonkit.client.customers import kserve_json_inputs
from tritonkit.tabular.artifacts import TabularArtifacts

PATH = Path(__file__).resolve().parents[2] / "loadtests" / "workload.py"


@pytest.fixture(scope="module")
def workload() -> ModuleType:
    """loadtests/workload.py, loaded by path (loadtests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("loadtests_workload", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def payloads(workload: ModuleType, artifacts: TabularArtifacts) -> Any:
    built = workload.Workload.build(["churn"], workload.Mix(), artifacts.test_rows)
    return built.payloads["churn"]


def _inputs(body: bytes) -> dict[str, Any]:
    return {item["name"]: item["data"][0] for item in json.loads(body)["inputs"]}


def test_workload_sends_each_held_out_customer_as_the_client_does_when_traffic_is_valid(
        workload: ModuleType, payloads: Any, customers: list[dict[str, Any]]) -> None:
    valid = payloads[workload.VALID]
    assert len(valid) == len(customers)
    for payload, customer in zip(valid, customers, strict=True):
        expected = {i["name"]: i["data"][0] for i in kserve_json_inputs(customer)}
        sent = _inputs(payload.json_body)
        assert sent.keys() == expected.keys()
        for name, value in expected.items():
            if isinstance(value, float):
                assert np.float32(sent[name]) == np.float32(value), name
            else:
                assert sent[name] == value, name
        assert payload.name == "churn" and not payload.refused


def test_workload_shifts_tenure_and_expects_400_when_drifted_unseen_or_invalid(
        workload: ModuleType, payloads: Any) -> None:
    valid, drifted = payloads[workload.VALID], payloads[workload.DRIFTED]
    unseen, invalid = payloads[workload.UNSEEN], payloads[workload.INVALID]
    tenures = [_inputs(p.json_body)["tenure"] for p in valid]
    # half the held-out range: 36 months of churn's 0-72
    shift = workload.DRIFT_SHIFT_OF_RANGE * (max(tenures) - min(tenures))
    assert shift == 36
    for k in range(0, len(valid), 50):
        tenure = _inputs(valid[k].json_body)["tenure"]
        assert _inputs(drifted[k].json_body)["tenure"] == tenure + shift
        assert not drifted[k].refused and drifted[k].name == "churn [drifted]"
        assert _inputs(unseen[k].json_body)["gender"] == workload.UNSEEN_CATEGORY
        assert unseen[k].refused and unseen[k].name == "churn [unseen category, expect 400]"
        bad = invalid[k].features["tenure"]
        assert math.isnan(bad) or bad < 0
        assert invalid[k].refused and invalid[k].name == "churn [invalid, expect 400]"
    # The gateway's body: the same customer, numbers as JSON numbers, seniorcitizen an integer.
    gateway = json.loads(valid[0].gateway_body)
    assert gateway["customer_id"] == valid[0].customer_id
    assert isinstance(gateway["features"]["seniorcitizen"], int)


def test_mix_draws_kinds_in_their_shares_when_shares_are_given(
        workload: ModuleType, tabular_built: object, artifacts: TabularArtifacts,
        minilm_exported: object) -> None:
    mix = workload.Mix(drift_share=0.2, invalid_share=0.1)
    built = workload.Workload.build(None, mix, artifacts.test_rows)
    rng = random.Random(7)
    draws = Counter(built.pick(rng).kind for _ in range(20_000))
    shares = {kind: count / 20_000 for kind, count in draws.items()}
    assert shares[workload.INVALID] == pytest.approx(0.1, abs=0.01)
    assert shares[workload.DRIFTED] == pytest.approx(0.1, abs=0.01)
    assert shares[workload.UNSEEN] == pytest.approx(0.1, abs=0.01)
    assert shares[workload.VALID] == pytest.approx(0.7, abs=0.015)


@pytest.mark.parametrize(("drift", "invalid", "words"), [
    (0.7, 0.5, "add up to more than 1"),
    (-0.1, 0.0, "--drift-share must be a share between 0 and 1"),
    (0.0, math.nan, "--invalid-share must be a share between 0 and 1"),
])
def test_mix_refuses_shares_naming_the_option_when_they_are_impossible(
        workload: ModuleType, drift: float, invalid: float, words: str) -> None:
    with pytest.raises(workload.LoadTestError, match=words):
        workload.Mix(drift_share=drift, invalid_share=invalid)


def test_workload_refuses_an_ensemble_naming_those_served_when_it_is_not_in_the_spec(
        workload: ModuleType) -> None:
    with pytest.raises(workload.LoadTestError,
                       match=re.escape("not in configs/models.yaml, which serves: churn, cancer")):
        workload.Workload.build(["fraud"], workload.Mix())
