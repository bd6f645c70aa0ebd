"""Things that start no tritonserver: a start that cannot work is refused with its fix, and the
naive baseline answers like the in-process model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonkit.errors import ServerStartError
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import ServerSettings, TritonServer
from tritonkit.tabular.artifacts import TabularArtifacts

from ..support import body_for, with_input


def _settings(repository: Path) -> ServerSettings:
    return ServerSettings(model_repository=repository, http_port=free_port(),
                          grpc_port=free_port(), metrics_port=free_port())


def test_start_raises_with_fix_when_repository_is_empty(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="make build-engines"):
        TritonServer(_settings(tmp_path)).start()


def test_naive_baseline_answers_like_the_ensemble_when_given_the_same_body(
    artifacts: TabularArtifacts, customers: list[dict[str, Any]], in_process: dict[str, np.ndarray]
) -> None:
    from tritonkit.baseline.naive_server import create_app

    app = create_app(artifacts).test_client()
    answer = app.post("/v2/models/churn/infer", json=body_for(customers[5])).get_json()
    out = {o["name"]: o["data"][0] for o in answer["outputs"]}
    assert abs(out["churn_probability"] - in_process["churn_probability"][5, 0]) < 1e-6


@pytest.mark.parametrize(("name", "value", "words"), [
    ("tenure", -1, "tenure: value -1 at row(s) 0 is below the minimum 0"),
    ("tenure", 1e6, "tenure: value 1e+06 at row(s) 0 is above the maximum 1200"),
    ("monthlycharges", float("nan"), "monthlycharges: NaN or infinite value at row(s) 0"),
    ("totalcharges", float("inf"), "totalcharges: NaN or infinite value at row(s) 0"),
    ("contract", "Weekly", "contract: unknown category 'Weekly'"),
])
def test_naive_baseline_refuses_like_the_ensemble_when_a_value_is_impossible(
    artifacts: TabularArtifacts, customers: list[dict[str, Any]], name: str, value: Any,
    words: str,
) -> None:
    from tritonkit.baseline.naive_server import create_app

    app = create_app(artifacts).test_client()
    body = with_input(body_for(customers[5]), name, data=[value])
    response = app.post("/v2/models/churn/infer", data=json.dumps(body),
                        content_type="application/json")
    assert response.status_code == 400
    assert words in response.get_json()["error"]


def test_free_port_never_hands_out_a_port_twice_when_called_in_a_row() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_server_settings_refuse_one_port_for_two_services(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(ServerStartError, match="must differ"):
        ServerSettings(model_repository=tmp_path, http_port=port, grpc_port=free_port(),
                       metrics_port=port)
