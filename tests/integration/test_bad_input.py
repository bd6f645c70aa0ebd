"""Bad input gets a 400 that names the input and the problem; the server keeps serving.

Requests go over raw HTTP (KServe v2 JSON) so each malformation is exactly what a careless client
would send. Two kinds of refusal are told apart by whether the request reached the project's
python step (its `nv_inference_exec_count` rises by one) or not:

- Triton core checks the request against the ensemble's config (datatype, shape, the set of
  inputs, batch size) and answers 400 before any of our code runs;
- the step (`tritonkit.tabular.schema`) checks the values: categories, NaN and infinities, the
  bounds of the spec's dataset; its message starts with the feature's name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tritonkit.serve.server import TritonServer

from ..support import (
    body_for,
    counter,
    counter_settled,
    post,
    probability,
    repeated_rows,
    with_input,
    without_input,
)

Breaker = Callable[[dict[str, Any]], dict[str, Any]]
#: The step of the embedded target (fused): where the project's checks run.
STEP = "churn_fused"

# (case id, how to break a good body, words the error must contain)
CORE_CASES: list[tuple[str, Breaker, list[str]]] = [
    ("wrong_dtype", lambda b: with_input(b, "tenure", datatype="FP64"),
     ["'tenure'", "FP64", "expects 'FP32'"]),
    ("string_for_number", lambda b: with_input(b, "tenure", datatype="BYTES", data=["twelve"]),
     ["'tenure'", "BYTES", "expects 'FP32'"]),
    ("wrong_shape", lambda b: with_input(b, "tenure", shape=[1, 2], data=[1, 2]),
     ["'tenure'", "shape", "[1,2]"]),
    ("missing_input", lambda b: without_input(b, "paymentmethod"),
     ["missing required input(s) ['paymentmethod']"]),
    ("unexpected_input", lambda b: {"inputs": [*b["inputs"], {
        "name": "favourite_colour", "shape": [1, 1], "datatype": "BYTES", "data": ["blue"]}]},
     ["expected 19 inputs but got 20", "favourite_colour"]),
    ("empty_batch", lambda b: repeated_rows(b, 0), ["got 0"]),
    ("oversized_batch", lambda b: repeated_rows(b, 257), ["batch-size must be <= 256"]),
]

# (case id, how to break a good body, the message's start, words it must also contain)
STEP_CASES: list[tuple[str, Breaker, str, list[str]]] = [
    ("unknown_category", lambda b: with_input(b, "contract", data=["Weekly"]),
     "contract: unknown category 'Weekly'", ["'Month-to-month'"]),
    ("empty_category", lambda b: with_input(b, "gender", data=[""]),
     "gender: unknown category ''", ["'Female'"]),
    ("nan", lambda b: with_input(b, "monthlycharges", data=[float("nan")]),
     "monthlycharges: NaN or infinite", []),
    ("infinity", lambda b: with_input(b, "totalcharges", data=[float("inf")]),
     "totalcharges: NaN or infinite", []),
    ("minus_infinity", lambda b: with_input(b, "tenure", data=[float("-inf")]),
     "tenure: NaN or infinite", []),
    # 1e39 does not fit FP32: Triton parses it as infinity, and the step refuses that.
    ("fp32_overflow", lambda b: with_input(b, "monthlycharges", data=[1e39]),
     "monthlycharges: NaN or infinite", []),
    ("negative_tenure", lambda b: with_input(b, "tenure", data=[-3]),
     "tenure: value -3", ["below the minimum 0"]),
    ("tenure_beyond_a_lifetime", lambda b: with_input(b, "tenure", data=[1e6]),
     "tenure: value 1e+06", ["above the maximum 1200"]),
    ("negative_charges", lambda b: with_input(b, "monthlycharges", data=[-20.5]),
     "monthlycharges: value -20.5", ["below the minimum 0"]),
    ("huge_monthly_charges", lambda b: with_input(b, "monthlycharges", data=[5e5]),
     "monthlycharges: value 500000", ["above the maximum 10000"]),
    ("huge_total_charges", lambda b: with_input(b, "totalcharges", data=[1e9]),
     "totalcharges: value 1e+09", ["above the maximum 1.2e+07"]),
    ("seniorcitizen_out_of_range", lambda b: with_input(b, "seniorcitizen", data=[7]),
     "seniorcitizen: value 7", ["above the maximum 1"]),
    ("seniorcitizen_negative", lambda b: with_input(b, "seniorcitizen", data=[-1]),
     "seniorcitizen: value -1", ["below the minimum 0"]),
]


@pytest.mark.parametrize(("case", "breaker", "words"), CORE_CASES, ids=[c[0] for c in CORE_CASES])
def test_triton_core_refuses_with_400_naming_the_input_when_request_breaks_the_config(
    triton: TritonServer, customers: list[dict[str, Any]], case: str, breaker: Breaker,
    words: list[str],
) -> None:
    executions = counter(triton, "nv_inference_exec_count", model=STEP)
    status, answer = post(triton, breaker(body_for(customers[0])))
    assert status == 400, (status, answer)
    for word in words:
        assert word in answer["error"], f"{word!r} not in {answer['error']!r}"
    assert counter(triton, "nv_inference_exec_count", model=STEP) == executions, \
        "this request reached the python step: it belongs to STEP_CASES"


@pytest.mark.parametrize(("case", "breaker", "start", "words"), STEP_CASES,
                         ids=[c[0] for c in STEP_CASES])
def test_step_refuses_with_400_naming_the_feature_when_a_value_is_impossible(
    triton: TritonServer, customers: list[dict[str, Any]], case: str, breaker: Breaker,
    start: str, words: list[str],
) -> None:
    executions = counter(triton, "nv_inference_exec_count", model=STEP)
    status, answer = post(triton, breaker(body_for(customers[0])))
    assert status == 400, (status, answer)
    # The ensemble prefixes the step's message with "in ensemble 'churn', ".
    message = answer["error"].removeprefix("in ensemble 'churn', ")
    assert message.startswith(start), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert counter_settled(triton, "nv_inference_exec_count", executions + 1,
                           model=STEP) == executions + 1


def test_triton_core_answers_500_naming_no_input_when_a_number_arrives_as_a_json_string(
    triton: TritonServer, customers: list[dict[str, Any]],
) -> None:
    # Triton quirks (docs/platform.md): its HTTP frontend answers a body that is not JSON, or a
    # number written as a JSON string ("NaN"), with 500, before any model runs. Only something
    # in front of Triton can turn these into 400s; this test fails when Triton changes that.
    status, answer = post(triton, b"\x00\xff garbage {")
    assert (status, "failed to parse the request JSON buffer" in answer["error"]) == (500, True)
    body = with_input(body_for(customers[0]), "tenure", data=["NaN"])
    status, answer = post(triton, json.dumps(body).encode())
    assert status == 500 and "attempt to access JSON non-number as double" in answer["error"]


def test_batch_with_one_bad_row_names_that_row_when_other_rows_are_valid(
    triton: TritonServer, customers: list[dict[str, Any]]
) -> None:
    body = repeated_rows(body_for(customers[0]), 5)
    for item in body["inputs"]:
        if item["name"] == "tenure":
            item["data"][3] = -1
    status, answer = post(triton, body)
    assert status == 400
    assert "tenure: value -1 at row(s) 3 is below the minimum 0" in answer["error"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_binary_tensor_refused_naming_the_feature_when_it_holds_nan_or_an_impossible_value(
    triton: TritonServer, customers: list[dict[str, Any]], protocol: str
) -> None:
    """NaN and out-of-range values sent as binary tensors (tritonclient's default), not JSON."""
    from tritonclient.utils import InferenceServerException

    from tritonkit.client.customers import columns_from_rows
    from tritonkit.tabular.contract import contract
    from tritonkit.tabular.schema import KSERVE_DATATYPES
    CHURN = contract("churn")
    TRITON_DTYPES = CHURN.triton_dtypes

    if protocol == "grpc":
        import tritonclient.grpc as module
        client: Any = module.InferenceServerClient(triton.grpc_url)
    else:
        import tritonclient.http as module  # type: ignore[no-redef]
        client = module.InferenceServerClient(triton.http_url.removeprefix("http://"))
    columns = columns_from_rows(customers[:3])
    columns["tenure"] = columns["tenure"].copy()
    columns["tenure"][1, 0] = np.nan
    columns["totalcharges"] = columns["totalcharges"].copy()
    columns["totalcharges"][2, 0] = 5e7
    inputs = []
    for name, array in columns.items():
        item = module.InferInput(name, list(array.shape), KSERVE_DATATYPES[TRITON_DTYPES[name]])
        item.set_data_from_numpy(array)
        inputs.append(item)
    try:
        with pytest.raises(InferenceServerException) as raised:
            client.infer("churn", inputs)
    finally:
        client.close()
    message = str(raised.value)
    assert "tenure: NaN or infinite value at row(s) 1" in message
    assert "totalcharges: value 5e+07 at row(s) 2 is above the maximum 1.2e+07" in message


def test_server_answers_good_requests_after_every_kind_of_bad_one(
    triton: TritonServer, customers: list[dict[str, Any]], in_process: dict[str, np.ndarray]
) -> None:
    for breaker in [c[1] for c in CORE_CASES] + [c[1] for c in STEP_CASES]:
        post(triton, breaker(body_for(customers[1])))
    # Readiness alone can lie (a dead python stub still reads "ready"); a real inference tells.
    status, answer = post(triton, body_for(customers[1]))
    assert status == 200
    assert probability(answer) == pytest.approx(in_process["churn_probability"][1, 0], abs=1e-6)
