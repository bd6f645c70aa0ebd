"""The churn ensemble on a real tritonserver agrees with the in-process ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonkit.client.churn import ChurnClient
from tritonkit.serve.server import TritonServer
from tritonkit.spec import TabularClassifier

from ..support import serve


def _client(triton: TritonServer, protocol: str) -> ChurnClient:
    url = triton.grpc_url if protocol == "grpc" else triton.http_url.removeprefix("http://")
    return ChurnClient(url, protocol=protocol)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ensemble_probabilities_equal_in_process_onnx_when_every_test_row_is_sent(
    triton: TritonServer, protocol: str, customers: list[dict[str, Any]],
    in_process: dict[str, np.ndarray], churn_spec: TabularClassifier,
) -> None:
    client = _client(triton, protocol)
    predictions = client.predict(customers, batch_size=50)
    client.close()
    assert len(predictions) == len(customers) > 700
    got = np.array([p.churn_probability for p in predictions])
    expected = in_process["churn_probability"].reshape(-1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    levels = np.array([p.risk_level for p in predictions])
    np.testing.assert_array_equal(levels, in_process["risk_level"].reshape(-1))
    assert {p.model_version for p in predictions} == {str(churn_spec.version)}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ensemble_answers_single_customer_requests_when_batch_is_one(
    triton: TritonServer, protocol: str, customers: list[dict[str, Any]],
    in_process: dict[str, np.ndarray],
) -> None:
    client = _client(triton, protocol)
    got = [client.predict([c])[0].churn_probability for c in customers[:20]]
    client.close()
    np.testing.assert_allclose(got, in_process["churn_probability"][:20, 0], atol=1e-6)


def test_risk_levels_follow_spec_thresholds_when_probabilities_span_them(
    triton: TritonServer, customers: list[dict[str, Any]], churn_spec: TabularClassifier
) -> None:
    client = _client(triton, "http")
    predictions = client.predict(customers, batch_size=100)
    client.close()
    p = np.array([x.churn_probability for x in predictions])
    levels = np.array([x.risk_level for x in predictions])
    t = churn_spec.risk_thresholds
    # The test split reaches every level, so each rule is exercised.
    assert set(levels) == {"low", "medium", "high"}
    assert (levels[p >= t.high] == "high").all()
    assert (levels[(p >= t.medium) & (p < t.high)] == "medium").all()
    assert (levels[p < t.medium] == "low").all()


def test_split_layout_matches_in_process_onnx_when_steps_are_not_fused(
    repositories: dict[str, Path], tmp_path: Path, customers: list[dict[str, Any]],
    in_process: dict[str, np.ndarray],
) -> None:
    # preprocess -> model as two python steps: the layout of a target without fusing, and
    # the code path of the standalone onnxruntime step.
    server = serve(repositories["embedded_split"], tmp_path)
    try:
        client = _client(server, "grpc")
        predictions = client.predict(customers, batch_size=50)
        client.close()
    finally:
        server.stop()
    got = np.array([p.churn_probability for p in predictions])
    np.testing.assert_allclose(got, in_process["churn_probability"].reshape(-1), atol=1e-6)
    levels = np.array([p.risk_level for p in predictions])
    np.testing.assert_array_equal(levels, in_process["risk_level"].reshape(-1))

