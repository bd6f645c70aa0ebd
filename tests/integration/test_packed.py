"""The packed entry point `churn_packed` on a real tritonserver: the answers of the 19-input
`churn` for every test customer (fused and split layouts, HTTP and gRPC), bad packed input
refused with a 400 naming the tensor or the feature while the server keeps serving, and drift
counted once per row whichever entry point the row came through."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tritonkit.client.churn import PACKED_MODEL_NAME, ChurnClient, Prediction
from tritonkit.client.customers import columns_from_rows
from tritonkit.drift.binning import DriftCounter, DriftLayout
from tritonkit.serve.server import TritonServer
from tritonkit.spec import TabularClassifier
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.contract import contract
from tritonkit.tabular.packed import PACKED_CATEGORICAL, PACKED_NUMERIC
from tritonkit.tabular.schema import FeatureSchema

from ..support import (
    body_for,
    counter,
    counter_settled,
    packed_body,
    post,
    probability,
    samples,
    serve,
    settled_drift,
)

CHURN = contract("churn")
PACKED_COLUMNS = CHURN.packed
pack = CHURN.pack
unpack = CHURN.unpack


Breaker = Callable[[dict[str, Any]], dict[str, Any]]
#: On the embedded target (fused) the packed entry point is itself the step that checks values.
STEP = PACKED_MODEL_NAME


@pytest.fixture(scope="module")
def split_server(repositories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[TritonServer]:
    """The split layout (`churn_packed` an ensemble: `churn_preprocess_packed` -> `churn_model`),
    the shape production has."""
    server = serve(repositories["embedded_split"], tmp_path_factory.mktemp("triton-split"))
    yield server
    server.stop(check=True)


def _client(server: TritonServer, protocol: str, packed: bool) -> ChurnClient:
    url = server.grpc_url if protocol == "grpc" else server.http_url.removeprefix("http://")
    return ChurnClient(url, protocol=protocol, packed=packed)  # type: ignore[arg-type]


def _predict(server: TritonServer, protocol: str, packed: bool, customers: list[dict[str, Any]],
             batch_size: int) -> list[Prediction]:
    client = _client(server, protocol, packed)
    try:
        return client.predict(customers, batch_size=batch_size)
    finally:
        client.close()


def _assert_same(packed: list[Prediction], plain: list[Prediction],
                 in_process: dict[str, np.ndarray]) -> None:
    got = np.array([p.churn_probability for p in packed])
    np.testing.assert_allclose(got, [p.churn_probability for p in plain], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, in_process["churn_probability"][:len(got), 0], atol=1e-6)
    assert [p.risk_level for p in packed] == [p.risk_level for p in plain]
    assert [p.model_version for p in packed] == [p.model_version for p in plain]
    assert [p.customer_id for p in packed] == [p.customer_id for p in plain]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_packed_answers_equal_the_19_input_answers_when_every_test_customer_is_sent(
    triton: TritonServer, protocol: str, customers: list[dict[str, Any]],
    in_process: dict[str, np.ndarray], churn_spec: TabularClassifier,
) -> None:
    packed = _predict(triton, protocol, True, customers, 50)
    plain = _predict(triton, protocol, False, customers, 50)
    assert len(packed) == len(customers) > 700
    _assert_same(packed, plain, in_process)
    assert {p.model_version for p in packed} == {str(churn_spec.version)}
    # one customer per request: the path most callers take
    _assert_same(_predict(triton, protocol, True, customers[:20], 1),
                 _predict(triton, protocol, False, customers[:20], 1), in_process)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_packed_ensemble_answers_as_the_19_input_ensemble_when_steps_are_split(
    split_server: TritonServer, protocol: str, customers: list[dict[str, Any]],
    in_process: dict[str, np.ndarray],
) -> None:
    _assert_same(_predict(split_server, protocol, True, customers, 50),
                 _predict(split_server, protocol, False, customers, 50), in_process)


def _with_value(feature: str, value: Any, row: int = 0) -> Breaker:
    """A breaker that puts `value` in `feature`'s column of a packed body, at `row`."""
    def breaker(body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        numeric = feature in PACKED_COLUMNS.numeric
        order = PACKED_COLUMNS.numeric if numeric else PACKED_COLUMNS.categorical
        item = body["inputs"][0 if numeric else 1]
        item["data"][row * len(order) + order.index(feature)] = value
        return body
    return breaker


def _with_tensor(name: str, **changes: Any) -> Breaker:
    """A breaker that replaces fields of the tensor `name` of a packed body."""
    def breaker(body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        for item in body["inputs"]:
            if item["name"] == name:
                item.update(changes)
        return body
    return breaker


def _numeric_data(body: dict[str, Any]) -> list[Any]:
    return list(body["inputs"][0]["data"])


def _as_19_inputs(body: dict[str, Any]) -> dict[str, Any]:
    """The customer of a one-row packed body as the 19-input contract's body."""
    values = dict(zip(PACKED_COLUMNS.numeric, body["inputs"][0]["data"], strict=True))
    values.update(zip(PACKED_COLUMNS.categorical, body["inputs"][1]["data"], strict=True))
    return body_for(values)


# (case id, how to break a good one-customer packed body, words the error must contain)
CORE_CASES: list[tuple[str, Breaker, list[str]]] = [
    ("numeric_too_narrow", lambda b: _with_tensor(
        PACKED_NUMERIC, shape=[1, 3], data=_numeric_data(b)[:3])(b),
     ["'numeric'", "Expected [-1,4], got [1,3]"]),
    ("categorical_too_narrow", lambda b: _with_tensor(
        PACKED_CATEGORICAL, shape=[1, 14], data=b["inputs"][1]["data"][:14])(b),
     ["'categorical'", "Expected [-1,15], got [1,14]"]),
    ("numeric_fp64", _with_tensor(PACKED_NUMERIC, datatype="FP64"),
     ["'numeric'", "FP64", "expects 'FP32'"]),
    ("numbers_as_strings", lambda b: _with_tensor(
        PACKED_NUMERIC, datatype="BYTES", data=[str(v) for v in _numeric_data(b)])(b),
     ["'numeric'", "BYTES", "expects 'FP32'"]),
    ("categories_as_numbers", _with_tensor(PACKED_CATEGORICAL, datatype="FP32",
                                           data=[0.0] * 15),
     ["'categorical'", "FP32", "expects 'BYTES'"]),
    ("rows_differ", lambda b: _with_tensor(
        PACKED_NUMERIC, shape=[2, 4], data=_numeric_data(b) * 2)(b),
     ["'numeric'", "batch size does not match other inputs"]),
    ("missing_categorical", lambda b: {"inputs": b["inputs"][:1]},
     ["missing required input(s) ['categorical']"]),
    ("the_19_inputs", _as_19_inputs, ["expected 2 inputs but got 19"]),
]

# (case id, how to break a good body, the message's start, words it must also contain)
STEP_CASES: list[tuple[str, Breaker, str, list[str]]] = [
    ("unknown_category", _with_value("contract", "Weekly"),
     "contract: unknown category 'Weekly' at row(s) 0", ["'Month-to-month'"]),
    ("empty_category", _with_value("gender", ""), "gender: unknown category ''", ["'Female'"]),
    ("nan", _with_value("monthlycharges", float("nan")), "monthlycharges: NaN or infinite", []),
    ("infinity", _with_value("totalcharges", float("inf")), "totalcharges: NaN or infinite", []),
    ("negative_tenure", _with_value("tenure", -3), "tenure: value -3", ["below the minimum 0"]),
    ("seniorcitizen_fraction", _with_value("seniorcitizen", 0.5),
     "seniorcitizen: value 0.5 at row(s) 0 is not a whole number", []),
    ("seniorcitizen_out_of_range", _with_value("seniorcitizen", 7),
     "seniorcitizen: value 7", ["above the maximum 1"]),
]


@pytest.mark.parametrize(("case", "breaker", "words"), CORE_CASES, ids=[c[0] for c in CORE_CASES])
def test_packed_request_refused_with_400_naming_the_tensor_when_it_breaks_the_config(
    triton: TritonServer, customers: list[dict[str, Any]], case: str, breaker: Breaker,
    words: list[str],
) -> None:
    executions = counter(triton, "nv_inference_exec_count", model=STEP)
    status, answer = post(triton, breaker(packed_body(customers[:1])), model=STEP)
    assert status == 400, (status, answer)
    for word in words:
        assert word in answer["error"], f"{word!r} not in {answer['error']!r}"
    assert counter(triton, "nv_inference_exec_count", model=STEP) == executions


@pytest.mark.parametrize(("case", "breaker", "start", "words"), STEP_CASES,
                         ids=[c[0] for c in STEP_CASES])
def test_packed_request_refused_with_400_naming_the_feature_when_a_value_is_impossible(
    triton: TritonServer, customers: list[dict[str, Any]], case: str, breaker: Breaker,
    start: str, words: list[str],
) -> None:
    executions = counter(triton, "nv_inference_exec_count", model=STEP)
    status, answer = post(triton, breaker(packed_body(customers[:1])), model=STEP)
    assert status == 400, (status, answer)
    assert answer["error"].startswith(start), answer["error"]
    for word in words:
        assert word in answer["error"], f"{word!r} not in {answer['error']!r}"
    assert counter_settled(triton, "nv_inference_exec_count", executions + 1,
                           model=STEP) == executions + 1


def test_packed_batch_names_the_bad_row_when_the_other_rows_are_valid(
    triton: TritonServer, customers: list[dict[str, Any]]
) -> None:
    body = _with_value("seniorcitizen", 0.25, row=3)(packed_body(customers[:5]))
    status, answer = post(triton, body, model=STEP)
    assert status == 400
    assert answer["error"] == "seniorcitizen: value 0.25 at row(s) 3 is not a whole number"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_binary_packed_tensors_refused_naming_the_feature_when_values_are_impossible(
    triton: TritonServer, customers: list[dict[str, Any]], protocol: str
) -> None:
    """The same checks for binary tensors (tritonclient's encoding), several problems at once."""
    numeric, categorical = pack(columns_from_rows(customers[:4]))
    numeric[1, PACKED_COLUMNS.numeric.index("tenure")] = np.nan
    numeric[2, PACKED_COLUMNS.numeric.index("seniorcitizen")] = 0.5
    categorical[3, PACKED_COLUMNS.categorical.index("paymentmethod")] = b"Cheque"
    client = _client(triton, protocol, packed=True)
    try:
        with pytest.raises(InferenceServerException) as raised:
            client.infer_tensors({PACKED_NUMERIC: numeric, PACKED_CATEGORICAL: categorical})
    finally:
        client.close()
    message = str(raised.value)
    assert "tenure: NaN or infinite value at row(s) 1" in message
    assert "seniorcitizen: value 0.5 at row(s) 2 is not a whole number" in message
    assert "paymentmethod: unknown category 'Cheque' at row(s) 3" in message


def test_server_answers_both_entry_points_after_every_kind_of_bad_packed_request(
    triton: TritonServer, customers: list[dict[str, Any]], in_process: dict[str, np.ndarray]
) -> None:
    for breaker in [c[1] for c in CORE_CASES] + [c[1] for c in STEP_CASES]:
        assert post(triton, breaker(packed_body(customers[1:2])), model=STEP)[0] == 400
    expected = in_process["churn_probability"][1, 0]
    status, answer = post(triton, packed_body(customers[1:2]), model=STEP)
    assert status == 200 and probability(answer) == pytest.approx(expected, abs=1e-6)
    status, answer = post(triton, body_for(customers[1]))
    assert status == 200 and probability(answer) == pytest.approx(expected, abs=1e-6)


# -- drift: one series, counted once per row ------------------------------------------------

@pytest.fixture(scope="module", params=["fused", "split"])
def layout_server(request: pytest.FixtureRequest, triton: TritonServer,
                  split_server: TritonServer) -> TritonServer:
    return triton if request.param == "fused" else split_server


def _wait_for(server: TritonServer, layout: DriftLayout, before: np.ndarray, rows: float,
              predictions: float, timeout_s: float = 15.0) -> np.ndarray:
    """The published vector once `rows` rows and `predictions` predictions more than `before`
    are on /metrics (the steps flush every second), then one flush interval more."""
    deadline = time.monotonic() + timeout_s
    risk = slice(layout.risk_first, layout.risk_first + 3)
    while True:
        now = layout.vector(samples(server))
        if (now[layout.rows] - before[layout.rows] >= rows
                and now[risk].sum() - before[risk].sum() >= predictions):
            time.sleep(1.5)  # a later flush would show double counting
            return layout.vector(samples(server))
        if time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def test_both_entry_points_count_each_row_once_into_the_same_drift_series(
    layout_server: TritonServer, artifacts: TabularArtifacts, schema: FeatureSchema,
    customers: list[dict[str, Any]], in_process: dict[str, np.ndarray],
    churn_spec: TabularClassifier,
) -> None:
    layout = DriftLayout.from_profile(json.loads(artifacts.profile.read_text()), "churn",
                                      str(churn_spec.version))
    before = settled_drift(layout_server, layout)
    half = len(customers) // 2
    _predict(layout_server, "http", False, customers[:half], 50)
    _predict(layout_server, "grpc", True, customers[half:], 50)
    fraction = _with_value("seniorcitizen", 0.5)(packed_body(customers[:1]))
    unknown = _with_value("contract", "Weekly")(packed_body(customers[1:2]))
    for body in (fraction, unknown):
        assert post(layout_server, body, model=STEP)[0] == 400

    expected = DriftCounter(layout)
    columns = {n: a.reshape(-1) for n, a in columns_from_rows(customers).items()}
    encoded = schema.encode_batch(columns)
    expected.count_features(encoded.numbers, encoded.codes)
    expected.count_predictions(in_process["churn_probability"], in_process["risk_level"])
    for body, reason in ((fraction, "out_of_bounds"), (unknown, "unknown_category")):
        numeric = np.array(body["inputs"][0]["data"], dtype=np.float32).reshape(-1, 4)
        categorical = np.array([v.encode() for v in body["inputs"][1]["data"]],
                               dtype=object).reshape(-1, 15)
        encoded = schema.encode_batch(unpack(numeric, categorical))
        expected.count_features(encoded.numbers, encoded.codes,
                                np.zeros_like(encoded.codes, dtype=bool))
        expected.count_rejected(reason, 1)
    want = np.zeros(len(layout))
    for index, count in expected.take():
        want[index] = count

    got = _wait_for(layout_server, layout, before, want[layout.rows],
                    len(customers)) - before
    differ = [(layout.series[i], got[i], want[i]) for i in np.flatnonzero(got != want)]
    assert not differ, differ[:10]
    assert layout.window(got).rows == len(customers) + 2
    # both Triton models published: one series per instance, summed by the reader
    instances = {labels["model_instance"] for name, labels, value in samples(layout_server)
                 if name == "tritonkit_rows_total" and labels.get("model") == "churn" and value}
    assert any(i.startswith(f"{STEP}_") or i.startswith("churn_preprocess_packed_")
               for i in instances), instances
    assert any(i.startswith(("churn_fused_", "churn_preprocess_"))
               and "packed" not in i for i in instances), instances
