"""A third tabular model, added as a spec entry and a CSV file only, is built, gated, documented
and served by the same code as churn and cancer: what adding a model to the tabular family
takes (docs/building.md, "Adding a tabular model").

The test writes a loan-default CSV and a spec whose one model reads it, builds it with
`tritonkit build` in a project root of its own (TRITONKIT_ROOT: artefacts, caches and the
rendered repository land there), serves the repository on a real tritonserver and holds the
answers to the scikit-learn model the build trained.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml

from tritonkit.paths import PROJECT_ROOT
from tritonkit.serve.server import TritonServer
from tritonkit.tabular.packed import PACKED_CATEGORICAL, PACKED_NUMERIC

from ..support import post, serve

pytestmark = pytest.mark.integration

NAME = "loans"
NUMERIC = ("income", "debt_ratio", "years_employed")
PURPOSES = ("car", "home", "education", "business")


def _write_rows(path: Path, rows: int = 900) -> None:
    """Loan applications whose default depends on the debt ratio, the income and the purpose."""
    rng = np.random.default_rng(17)
    income = rng.lognormal(10.5, 0.5, rows).round(2)
    debt = rng.gamma(2.0, 0.2, rows).round(4)
    years = rng.integers(0, 40, rows)
    purpose = rng.choice(PURPOSES, rows)
    logit = (-1.0 + 3.0 * debt - 0.8 * (np.log(income) - 10.5) - 0.04 * years
             + np.select([purpose == "business", purpose == "education"], [0.9, 0.4], 0.0))
    default = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["application", *NUMERIC, "purpose", "defaulted"])
        for i in range(rows):
            writer.writerow([f"A{i:05d}", income[i], debt[i], years[i], purpose[i], default[i]])


def _spec(root: Path, rows_csv: Path) -> Path:
    shipped = yaml.safe_load((PROJECT_ROOT / "configs" / "models.yaml").read_text())
    spec = {
        "targets": {"embedded": shipped["targets"]["embedded"]},
        "models": {NAME: {
            "family": "tabular_classifier",
            "description": "Loan default from a CSV the test wrote.",
            "version": 1,
            "max_batch_size": 64,
            "dataset": {
                "csv": str(rows_csv), "id_column": "application", "target": "defaulted",
                "numeric": {"income": {"max": 1.0e8}, "debt_ratio": {"max": 100},
                            "years_employed": {"max": 100, "integer": True}},
                "categorical": ["purpose"],
            },
            "probability": "default_probability",
            "risk_thresholds": {"medium": 0.3, "high": 0.6},
            "training": {"regularization_grid": [0.1, 1.0], "validation_fraction": 0.15,
                         "test_fraction": 0.2},
            "variants": {"build": ["fp32", "optimized"], "serve": {"embedded": "fp32"}},
            "gate": {"max_abs_delta_p": {"fp32": 1.0e-6, "optimized": 1.0e-5},
                     "max_roc_auc_drop": 0.002, "min_risk_agreement": 0.97},
            "steps": {"preprocess": {"instances": {"embedded": 1}},
                      "model": {"instances": {"embedded": 1}}},
            "warmup_batch_sizes": [1],
            "drift_metrics": {"enabled": True, "flush_interval_s": 0.2},
        }},
    }
    path = root / "configs" / "models.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project root where `tritonkit build` built and rendered the new model."""
    root = tmp_path_factory.mktemp("new-model")
    rows_csv = root / "loans.csv"
    _write_rows(rows_csv)
    spec = _spec(root, rows_csv)
    env = {**os.environ, "TRITONKIT_ROOT": str(root)}
    done = subprocess.run([sys.executable, "-m", "tritonkit.cli", "build", "--spec", str(spec)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.fixture(scope="module")
def triton(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = serve(built / "model_repository", tmp_path_factory.mktemp("new-model-logs"))
    yield server
    server.stop(check=True)


def test_build_trains_gates_and_documents_the_model_from_its_spec_entry_alone(
    built: Path,
) -> None:
    folder = built / "artifacts" / NAME / "1"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["split"]["method"] == "sha256(application) buckets, id-disjoint"
    assert metrics["test"]["roc_auc"] > 0.7  # the rows carry a real signal
    gates = json.loads((folder / "gates.json").read_text())["gates"]
    assert gates["fp32"]["passed"] and gates["optimized"]["passed"]
    schema = json.loads((folder / "feature_schema.json").read_text())
    assert [f["name"] for f in schema["numeric"]] == list(NUMERIC)
    assert [f["integer"] for f in schema["numeric"]] == [False, False, True]
    assert schema["categorical"][0]["categories"] == sorted(PURPOSES)
    card = (folder / "MODEL_CARD.md").read_text()
    assert f"ROC-AUC **{metrics['test']['roc_auc']:.4f}**" in card
    served = sorted(p.name for p in (built / "model_repository").iterdir() if p.is_dir())
    assert served == [NAME, f"{NAME}_fused", f"{NAME}_packed"]


def test_triton_answers_the_new_model_as_the_trained_pipeline_does(
    built: Path, triton: TritonServer,
) -> None:
    folder = built / "artifacts" / NAME / "1"
    test = pd.read_csv(folder / "test.csv", dtype={"purpose": str})
    pipeline = joblib.load(folder / "pipeline.joblib")
    expected = pipeline.predict_proba(test[[*NUMERIC, "purpose"]])[:, 1]
    rows = test.head(20)
    inputs = [{"name": n, "shape": [len(rows), 1], "datatype": "FP32", "data": rows[n].tolist()}
              for n in NUMERIC if n != "years_employed"]
    inputs.append({"name": "years_employed", "shape": [len(rows), 1], "datatype": "INT32",
                   "data": [int(v) for v in rows["years_employed"]]})
    inputs.append({"name": "purpose", "shape": [len(rows), 1], "datatype": "BYTES",
                   "data": rows["purpose"].tolist()})
    status, answer = post(triton, {"inputs": inputs}, model=NAME)
    assert status == 200, answer
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    assert set(outputs) == {"default_probability", "risk_level", "model_version"}
    got = np.array(outputs["default_probability"])
    assert np.max(np.abs(got - expected[:20])) < 1e-5
    assert outputs["model_version"] == ["1"] * 20

    packed = [{"name": PACKED_NUMERIC, "shape": [len(rows), 3], "datatype": "FP32",
               "data": rows[list(NUMERIC)].to_numpy(np.float32).reshape(-1).tolist()},
              {"name": PACKED_CATEGORICAL, "shape": [len(rows), 1], "datatype": "BYTES",
               "data": rows["purpose"].tolist()}]
    status, answer = post(triton, {"inputs": packed}, model=f"{NAME}_packed")
    assert status == 200, answer
    packed_p = next(o["data"] for o in answer["outputs"] if o["name"] == "default_probability")
    assert np.max(np.abs(np.array(packed_p) - got)) < 1e-6


def test_bad_input_to_the_new_model_is_refused_naming_the_feature(
    triton: TritonServer,
) -> None:
    body = {"inputs": [
        {"name": "income", "shape": [1, 1], "datatype": "FP32", "data": [40000.0]},
        {"name": "debt_ratio", "shape": [1, 1], "datatype": "FP32", "data": [0.3]},
        {"name": "years_employed", "shape": [1, 1], "datatype": "INT32", "data": [4]},
        {"name": "purpose", "shape": [1, 1], "datatype": "BYTES", "data": ["yacht"]}]}
    status, answer = post(triton, body, model=NAME)
    assert status == 400 and "purpose: unknown category 'yacht'" in answer["error"]
    fraction = {"inputs": [
        {"name": PACKED_NUMERIC, "shape": [1, 3], "datatype": "FP32", "data": [4e4, 0.3, 2.5]},
        {"name": PACKED_CATEGORICAL, "shape": [1, 1], "datatype": "BYTES", "data": ["car"]}]}
    status, answer = post(triton, fraction, model=f"{NAME}_packed")
    assert status == 400 and "years_employed: value 2.5" in answer["error"]
    assert "not a whole number" in answer["error"]


def test_the_new_models_steps_publish_its_drift_counters(triton: TritonServer) -> None:
    deadline = time.monotonic() + 20
    lines: list[str] = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(triton.metrics_url, timeout=10) as response:
            lines = [line for line in response.read().decode().splitlines()
                     if line.startswith("tritonkit_feature_bin_total")
                     and f'model="{NAME}"' in line]
        if any('feature="debt_ratio"' in line for line in lines):
            break
        time.sleep(0.5)
    assert any('feature="debt_ratio"' in line for line in lines), lines[:5]
