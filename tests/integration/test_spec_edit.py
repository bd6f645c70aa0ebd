"""Editing the spec reaches the served answers: what `make up` does (build-engines, then
serve) after a change that is baked into the ONNX graph."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tritonkit.paths import PROJECT_ROOT
from tritonkit.spec import DEFAULT_SPEC

from ..support import body_for, build, post, serve


def test_spec_edit_is_served_when_built_again(
    tmp_path: Path, customers: list[dict[str, Any]], in_process: dict[str, np.ndarray]
) -> None:
    """What `make up` does (build-engines, then serve) after a first build, once the high-risk
    threshold moved:
    the threshold is baked into the ONNX graph, so the build must retrain/re-export and
    re-render, and the server must answer with the new levels."""
    root = tmp_path / "checkout"
    (root / "configs").mkdir(parents=True)
    (root / ".cache").mkdir()
    os.symlink(PROJECT_ROOT / ".cache" / "data", root / ".cache" / "data")
    shutil.copy2(PROJECT_ROOT / "configs" / "alerts.yaml", root / "configs")
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    data["models"] = {"churn": data["models"]["churn"]}
    probabilities = in_process["churn_probability"].reshape(-1)
    # a customer served as "high" today, and a threshold just above its probability
    row = int(np.flatnonzero(in_process["risk_level"].reshape(-1).astype(str) == "high")[0])
    spec_path = root / "configs" / "models.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    first = build("--target", "embedded", root=root)
    assert first.returncode == 0, first.stderr[-3000:]
    data["models"]["churn"]["risk_thresholds"]["high"] = round(float(probabilities[row]) + 0.01, 4)
    spec_path.write_text(yaml.safe_dump(data))
    built = build("--target", "embedded", root=root)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "training and exporting" in built.stderr  # the graph holds the thresholds
    server = serve(root / "model_repository", tmp_path)
    try:
        status, answer = post(server, body_for(customers[row]))
        assert status == 200, answer
        levels = {o["name"]: o["data"] for o in answer["outputs"]}
        assert levels["risk_level"] == ["medium"]
    finally:
        server.stop()
