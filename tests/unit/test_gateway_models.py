"""The gateway's typed contract without Triton: every problem named by its field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from tritonkit.features import ALL_FEATURES, CATEGORICAL_FEATURES, NUMERIC_BOUNDS, FeatureSchema
from tritonkit.gateway.auth import KeyStore, add_key, ensure_dev_keys, presented_key
from tritonkit.gateway.fallback import FallbackModel
from tritonkit.gateway.models import ContractModels, customer_row, problems


@pytest.fixture(scope="module")
def models(schema: FeatureSchema) -> ContractModels:
    return ContractModels.build(schema, max_batch=4)


@pytest.fixture(scope="module")
def valid(customers: list[dict[str, Any]]) -> dict[str, Any]:
    features = {name: customers[0][name] for name in ALL_FEATURES}
    features["seniorcitizen"] = int(features["seniorcitizen"])
    return {"customer_id": customers[0]["customerid"], "features": features}


def _problems(model: type[BaseModel], body: Any) -> list[dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(raw)
    return problems(caught.value)


def _with(valid: dict[str, Any], **features: Any) -> dict[str, Any]:
    return {**valid, "features": {**valid["features"], **features}}


def test_contract_accepts_a_customer_when_every_feature_is_valid(
        models: ContractModels, valid: dict[str, Any]) -> None:
    parsed = models.predict.model_validate_json(json.dumps(valid))
    assert customer_row(parsed) == valid["features"]


@pytest.mark.parametrize("name", ALL_FEATURES)
def test_contract_names_the_feature_when_its_value_is_out_of_range_or_unknown(
        models: ContractModels, valid: dict[str, Any], name: str) -> None:
    wrong = "Sometimes" if name in CATEGORICAL_FEATURES else int(NUMERIC_BOUNDS[name][1]) + 1
    found = _problems(models.predict, _with(valid, **{name: wrong}))
    assert [p["field"] for p in found] == [f"features.{name}"]
    expected = "Input should be" if name in CATEGORICAL_FEATURES else "less than or equal"
    assert expected in found[0]["message"]


@pytest.mark.parametrize("name", ALL_FEATURES)
def test_contract_names_the_feature_when_its_type_is_wrong(
        models: ContractModels, valid: dict[str, Any], name: str) -> None:
    wrong: Any = 3 if name in CATEGORICAL_FEATURES else "12"
    found = _problems(models.predict, _with(valid, **{name: wrong}))
    assert [p["field"] for p in found] == [f"features.{name}"]


def test_contract_lists_every_problem_when_several_fields_are_wrong(
        models: ContractModels, valid: dict[str, Any]) -> None:
    body = _with(valid, tenure=-1, contract="Weekly", colour="blue")
    del body["features"]["gender"]
    found = {p["field"]: p["message"] for p in _problems(models.predict, body)}
    assert set(found) == {"features.tenure", "features.contract", "features.colour",
                          "features.gender"}
    assert found["features.colour"].startswith("unknown field")
    assert found["features.gender"].startswith("missing field")
    assert "(got -1)" in found["features.tenure"]


def test_contract_refuses_booleans_and_fractions_when_a_number_is_expected(
        models: ContractModels, valid: dict[str, Any]) -> None:
    assert [p["field"] for p in _problems(models.predict, _with(valid, tenure=True))] == [
        "features.tenure"]
    assert [p["field"] for p in _problems(models.predict, _with(valid, seniorcitizen=0.5))] == [
        "features.seniorcitizen"]


def test_contract_refuses_nan_when_json_carries_it(models: ContractModels,
                                                   valid: dict[str, Any]) -> None:
    raw = json.dumps(_with(valid, monthlycharges=float("nan"))).encode()
    found = _problems(models.predict, raw)
    assert found == [{"field": "features.monthlycharges",
                      "message": "Input should be a finite number (got nan)"}]


@pytest.mark.parametrize("raw", [b"{nope", b"", b"\xff\xfe", b'{"customer_id": "a",'])
def test_contract_answers_a_body_problem_when_json_is_malformed(
        models: ContractModels, raw: bytes) -> None:
    found = _problems(models.predict, raw)
    assert found[0]["field"] == "body" and found[0]["message"].startswith("not valid JSON")


def test_contract_names_the_row_when_a_batch_customer_is_wrong(
        models: ContractModels, valid: dict[str, Any]) -> None:
    body = {"customers": [valid, _with(valid, paymentmethod="Cash")]}
    assert [p["field"] for p in _problems(models.batch, body)] == [
        "customers.1.features.paymentmethod"]
    too_many = {"customers": [valid] * 5}
    assert [p["field"] for p in _problems(models.batch, too_many)] == ["customers"]


def test_contract_refuses_an_empty_customer_id_when_one_is_sent(
        models: ContractModels, valid: dict[str, Any]) -> None:
    assert [p["field"] for p in _problems(models.predict, {**valid, "customer_id": ""})] == [
        "customer_id"]


def test_fallback_model_ranks_customers_like_the_labels_when_read_from_artefacts(
        artifacts: Any, customers: list[dict[str, Any]]) -> None:
    from sklearn.metrics import roc_auc_score

    model = FallbackModel.load(artifacts.fallback)
    assert model.version == "1-fallback"
    p = [model.probability(c) for c in customers]
    auc = roc_auc_score([int(c["churn"]) for c in customers], p)
    assert auc == pytest.approx(model.test_roc_auc, abs=1e-9)
    assert auc > 0.8


def test_key_store_knows_a_key_only_by_its_hash_when_one_is_added(tmp_path: Any) -> None:
    path = tmp_path / "keys.json"
    key = add_key(path, name="billing")
    assert key not in path.read_text()
    store = KeyStore.load(path)
    owner = store.authenticate(key)
    assert owner is not None and owner.name == "billing" and owner.role == "caller"
    assert store.authenticate(key[:-1] + "x") is None and store.authenticate(None) is None


def test_dev_keys_stay_the_same_when_asked_again(tmp_path: Any) -> None:
    first = ensure_dev_keys(tmp_path / "keys.json")
    assert ensure_dev_keys(tmp_path / "keys.json") == first
    store = KeyStore.load(tmp_path / "keys.json")
    assert store.authenticate(first["admin"]).role == "admin"  # type: ignore[union-attr]


def test_key_header_wins_over_bearer_when_both_are_sent() -> None:
    headers = [(b"authorization", b"Bearer second"), (b"x-api-key", b"first")]
    assert presented_key(headers) == "first"
    assert presented_key([(b"authorization", b"bearer only")]) == "only"
