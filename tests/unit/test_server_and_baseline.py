"""Things that start no tritonserver: a start that cannot work is refused with its fix, and the
naive baseline answers like the in-process model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonkit.artifacts import ChurnArtifacts
from tritonkit.errors import ServerStartError
from tritonkit.serve.server import ServerSettings, TritonServer, free_port


def _settings(repository: Path) -> ServerSettings:
    return ServerSettings(model_repository=repository, http_port=free_port(),
                          grpc_port=free_port(), metrics_port=free_port())


def test_start_raises_with_fix_when_repository_is_empty(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="make build-engines"):
        TritonServer(_settings(tmp_path)).start()


def test_naive_baseline_answers_like_the_ensemble_when_given_the_same_body(
    artifacts: ChurnArtifacts, customers: list[dict[str, Any]], in_process: dict[str, np.ndarray]
) -> None:
    from tritonkit.baseline.naive_server import create_app

    from ..support import body_for

    app = create_app(artifacts).test_client()
    answer = app.post("/v2/models/churn/infer", json=body_for(customers[5])).get_json()
    out = {o["name"]: o["data"][0] for o in answer["outputs"]}
    assert abs(out["churn_probability"] - in_process["churn_probability"][5, 0]) < 1e-6
    bad = body_for(customers[5])
    bad["inputs"][0]["data"] = [-1]
    response = app.post("/v2/models/churn/infer", json=bad)
    assert response.status_code == 400 and "tenure" in response.get_json()["error"]
