"""Data set checks, the split, the feature encoder against sklearn, and ONNX parity."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from tritonkit.errors import DataError, ParityError
from tritonkit.paths import CACHE
from tritonkit.spec import RiskThresholds, TabularClassifier
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.contract import contract
from tritonkit.tabular.datasets import load_rows, split
from tritonkit.tabular.datasets.telco import CSV_SHA256, WHEEL_FILE, clean, read_csvs
from tritonkit.tabular.export import append_head, check_parity, export_core
from tritonkit.tabular.schema import FeatureSchema

CHURN = contract("churn")
ALL_FEATURES = CHURN.features

@pytest.fixture(scope="module")
def frame(artifacts: TabularArtifacts, churn_spec: TabularClassifier) -> pd.DataFrame:
    return load_rows(churn_spec.dataset)


def test_load_telco_has_one_row_per_customer_when_wheel_test_csv_repeats_train(
    frame: pd.DataFrame,
) -> None:
    raw = read_csvs(CACHE / "data" / WHEEL_FILE)
    assert len(raw) == 4930 + 2113
    assert len(frame) == 4930 == frame["customerid"].nunique()
    assert frame["totalcharges"].notna().all()
    assert set(frame["churn"]) == {0, 1}


def test_split_is_customer_disjoint_and_deterministic_when_run_twice(frame: pd.DataFrame) -> None:
    a, b = split(frame, "customerid"), split(frame.sample(frac=1, random_state=1), "customerid")
    ids = [set(s["customerid"]) for s in (a.train, a.validation, a.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(len(i) for i in ids) == len(frame)
    assert set(a.test["customerid"]) == set(b.test["customerid"])
    assert 0.12 < len(a.test) / len(frame) < 0.18


def test_read_csvs_refuses_wheel_when_csv_sha256_differs(tmp_path: Path) -> None:
    fake = tmp_path / WHEEL_FILE
    with zipfile.ZipFile(fake, "w") as archive:
        for member in CSV_SHA256:
            archive.writestr(member, "customerid,churn\nx,No\n")
    with pytest.raises(DataError, match="sha256"):
        read_csvs(fake)


def test_clean_turns_blank_totalcharges_into_zero_when_customer_is_new() -> None:
    row = {n: "Yes" for n in ALL_FEATURES} | {
        "customerid": "1", "tenure": "0", "monthlycharges": "20", "totalcharges": " ",
        "seniorcitizen": "0", "churn": "No"}
    out = clean(pd.DataFrame([row]))
    assert float(out.loc[0, "totalcharges"]) == 0.0


def test_schema_encode_equals_sklearn_column_transformer_on_every_test_row(
    artifacts: TabularArtifacts, schema: FeatureSchema, customers: list[dict[str, Any]]
) -> None:
    pipeline = joblib.load(artifacts.sklearn)
    frame = pd.DataFrame(customers)
    expected = pipeline.named_steps["encode"].transform(frame[list(ALL_FEATURES)])
    got = schema.encode({n: frame[n].to_numpy() for n in ALL_FEATURES})
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_encode_checked_flags_only_bad_rows_when_batch_mixes_good_and_bad(
    schema: FeatureSchema, customers: list[dict[str, Any]]
) -> None:
    frame = pd.DataFrame(customers[:6])
    columns = {n: frame[n].to_numpy().copy() for n in ALL_FEATURES}
    columns["contract"][1] = "Weekly"
    columns["tenure"][3] = np.inf
    columns["monthlycharges"][4] = -1.0
    _, bad = schema.encode_checked(columns)
    assert list(np.flatnonzero(bad)) == [1, 3, 4]
    problems = " | ".join(schema.validate(columns))
    assert "contract: unknown category 'Weekly' at row(s) 1" in problems
    assert "tenure: NaN or infinite value at row(s) 3" in problems
    assert "monthlycharges: value -1 at row(s) 4 is below the minimum 0" in problems


def test_validate_names_missing_and_unexpected_inputs_when_columns_differ(
    schema: FeatureSchema, customers: list[dict[str, Any]]
) -> None:
    columns = {n: np.array([customers[0][n]]) for n in ALL_FEATURES if n != "gender"}
    columns["favourite_colour"] = np.array(["blue"])
    problems = " | ".join(schema.validate(columns))
    assert "missing input(s): gender" in problems
    assert "unexpected input(s): favourite_colour" in problems


def test_onnx_matches_sklearn_within_1e5_on_every_test_row(
    artifacts: TabularArtifacts, schema: FeatureSchema, churn_spec: TabularClassifier
) -> None:
    pipeline = joblib.load(artifacts.sklearn)
    test = pd.read_csv(artifacts.test_rows)
    report = check_parity(pipeline, schema, str(artifacts.onnx), test, churn_spec.risk_thresholds)
    assert report["rows"] == len(test) > 700
    assert report["max_abs_diff"] <= 1e-5


def test_check_parity_raises_when_graph_uses_other_thresholds(
    artifacts: TabularArtifacts, schema: FeatureSchema, churn_spec: TabularClassifier
) -> None:
    pipeline = joblib.load(artifacts.sklearn)
    test = pd.read_csv(artifacts.test_rows)
    wrong = append_head(export_core(pipeline, schema, CHURN.probability),
                        RiskThresholds(medium=0.1, high=0.9), "1")
    with pytest.raises(ParityError, match="risk_level"):
        check_parity(pipeline, schema, wrong, test, churn_spec.risk_thresholds)


def test_saved_model_ranks_held_out_customers_like_published_telco_results(
    artifacts: TabularArtifacts, schema: FeatureSchema, churn_spec: TabularClassifier
) -> None:
    """ROC-AUC recomputed on the customer-disjoint test split, from the saved sklearn pipeline
    and from the ONNX graph that is served; metrics.json must report what they give."""
    from sklearn.metrics import roc_auc_score
    TARGET_COLUMN = CHURN.target

    from tritonkit.tabular.export import predict, session

    pipeline = joblib.load(artifacts.sklearn)
    test = pd.read_csv(artifacts.test_rows)
    assert len(test) > 700
    labels = test[TARGET_COLUMN].to_numpy()
    sklearn_auc = roc_auc_score(labels, pipeline.predict_proba(test[list(ALL_FEATURES)])[:, 1])
    served = predict(session(str(artifacts.onnx)),
                     schema.encode({n: test[n].to_numpy() for n in ALL_FEATURES}))
    onnx_auc = roc_auc_score(labels, served["churn_probability"].reshape(-1))
    # Published Telco results are 0.84-0.86; below 0.83 the pipeline or the split broke.
    assert sklearn_auc > 0.83
    assert abs(onnx_auc - sklearn_auc) < 1e-4
    assert artifacts.load_metrics()["test"]["roc_auc"] == pytest.approx(sklearn_auc, abs=1e-12)


def test_reference_profile_bins_sum_to_one_for_every_feature(artifacts: TabularArtifacts) -> None:
    import json

    profile = json.loads(artifacts.profile.read_text())
    for name, entry in profile["numeric"].items():
        assert len(entry["fractions"]) == len(entry["edges"]) + 1, name
        assert abs(sum(entry["fractions"]) - 1) < 1e-9, name
        assert entry["edges"] == sorted(set(entry["edges"])), name
    for name, entry in profile["categorical"].items():
        assert abs(sum(entry["frequencies"].values()) - 1) < 1e-9, name
    assert abs(sum(profile["prediction"]["probability_fractions"]) - 1) < 1e-9
    assert 0.2 < profile["label_positive_rate"] < 0.33
