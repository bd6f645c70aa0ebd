"""The packed contract (`numeric` and `categorical` instead of one tensor per feature): packing
and unpacking, their refusals, and the `<model>_packed` configs each target renders."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from tritonkit.client.churn import OUTPUTS, PACKED_MODEL_NAME
from tritonkit.client.customers import columns_from_rows
from tritonkit.repository.config import read_config
from tritonkit.repository.layout import step_names
from tritonkit.tabular.contract import contract
from tritonkit.tabular.packed import (
    PACKED_CATEGORICAL,
    PACKED_DTYPES,
    PACKED_NUMERIC,
    PackedColumns,
    fraction_problems,
    fractional_rows,
    packed_problems,
)
from tritonkit.tabular.schema import FeatureSchema

CHURN = contract("churn")
INTEGER = CHURN.schema.integer_features
CATEGORICAL_FEATURES = CHURN.categorical
INTEGER_FEATURES = CHURN.schema.integer_features
NUMERIC_FEATURES = CHURN.numeric
PACKED_COLUMNS = CHURN.packed
pack = CHURN.pack
unpack = CHURN.unpack



@pytest.fixture()
def columns(customers: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return columns_from_rows(customers[:7])


def test_packed_columns_are_the_schemas_numeric_then_categorical_features(
    schema: FeatureSchema
) -> None:
    assert PackedColumns.of(schema) == PACKED_COLUMNS
    assert PACKED_COLUMNS.numeric == NUMERIC_FEATURES == tuple(f.name for f in schema.numeric)
    assert PACKED_COLUMNS.categorical == CATEGORICAL_FEATURES
    assert PACKED_DTYPES == {PACKED_NUMERIC: "TYPE_FP32", PACKED_CATEGORICAL: "TYPE_STRING"}
    assert INTEGER_FEATURES == ("seniorcitizen",)
    assert PACKED_MODEL_NAME == step_names("churn")["packed"] == "churn_packed"


def test_unpack_gives_views_of_the_columns_that_pack_made(columns: dict[str, np.ndarray]) -> None:
    numeric, categorical = pack(columns)
    assert (numeric.dtype, numeric.shape) == (np.float32, (7, len(NUMERIC_FEATURES)))
    assert (categorical.dtype, categorical.shape) == (object, (7, len(CATEGORICAL_FEATURES)))
    unpacked = unpack(numeric, categorical)
    assert list(unpacked) == [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]
    for name, column in unpacked.items():
        assert column.shape == (7,)
        assert np.shares_memory(column, numeric if name in NUMERIC_FEATURES else categorical)
        np.testing.assert_array_equal(column, columns[name].reshape(-1))


def test_encoding_unpacked_columns_equals_encoding_the_19_columns_bit_for_bit(
    schema: FeatureSchema, columns: dict[str, np.ndarray]
) -> None:
    unpacked = unpack(*pack(columns))
    plain = schema.encode_batch(columns)
    packed = schema.encode_batch(unpacked)
    np.testing.assert_array_equal(packed.matrix, plain.matrix)
    np.testing.assert_array_equal(packed.numbers, plain.numbers)
    np.testing.assert_array_equal(packed.codes, plain.codes)
    assert not packed.bad.any()
    assert schema.validate(unpacked) == [] and fraction_problems(unpacked, INTEGER) == []
    assert fractional_rows(unpacked, INTEGER) is None


@pytest.mark.parametrize(("change", "words"), [
    (lambda n, c: (n[:, :3], c), ["numeric: expected shape [rows, 4]", "got [7, 3]",
                                  "tenure, monthlycharges, totalcharges, seniorcitizen"]),
    (lambda n, c: (n, c[:, :14]), ["categorical: expected shape [rows, 15]", "got [7, 14]"]),
    (lambda n, c: (n.reshape(-1), c), ["numeric: expected shape [rows, 4]", "got [28]"]),
    (lambda n, c: (n.astype(np.float64), c), ["numeric: expected FP32, got dtype float64"]),
    (lambda n, c: (n.astype(np.int32), c), ["numeric: expected FP32, got dtype int32"]),
    (lambda n, c: (n, np.zeros(c.shape, dtype=np.float32)),
     ["categorical: expected BYTES, got dtype float32"]),
    (lambda n, c: (n[:5], c), ["numeric has 5 row(s) and categorical 7",
                               "one row per customer in both"]),
    (lambda n, c: (n[:0], c[:0]), ["empty batch"]),
])
def test_packed_problems_name_the_tensor_when_shape_dtype_or_rows_are_wrong(
    columns: dict[str, np.ndarray], change: Any, words: list[str]
) -> None:
    numeric, categorical = change(*pack(columns))
    message = "; ".join(packed_problems(numeric, categorical, CHURN.packed))
    for word in words:
        assert word in message, message
    with pytest.raises(ValueError) as raised:
        unpack(numeric, categorical)
    assert str(raised.value) == message


def test_fractions_in_whole_number_features_are_found_naming_feature_and_rows(
    schema: FeatureSchema, columns: dict[str, np.ndarray]
) -> None:
    numeric, categorical = pack(columns)
    senior = NUMERIC_FEATURES.index("seniorcitizen")
    numeric[[2, 5], senior] = [0.5, 0.999]
    numeric[4, senior] = np.nan  # validate's to name, not a fraction
    numeric[6, senior] = 1.0
    unpacked = unpack(numeric, categorical)
    rows = fractional_rows(unpacked, INTEGER)
    assert rows is not None and list(np.flatnonzero(rows)) == [2, 5]
    assert fraction_problems(unpacked, INTEGER) == [
        "seniorcitizen: value 0.5 at row(s) 2, 5 is not a whole number"]
    # in bounds, so the encoder alone would take them: the step refuses them by this check
    assert list(np.flatnonzero(schema.encode_batch(unpacked).bad)) == [4]


def test_pack_refuses_missing_columns_and_columns_of_different_lengths(
    columns: dict[str, np.ndarray]
) -> None:
    with pytest.raises(ValueError, match=re.escape("missing column(s): contract")):
        pack({k: v for k, v in columns.items() if k != "contract"})
    with pytest.raises(ValueError, match="different numbers of rows"):
        pack({**columns, "tenure": columns["tenure"][:3]})


# -- rendered configs ------------------------------------------------------------------------

def _config(repository: Path, model: str) -> mc.ModelConfig:
    return read_config(repository / model / "config.pbtxt")


def _io(tensors: Any) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (mc.DataType.Name(t.data_type), list(t.dims)) for t in tensors}


PACKED_INPUTS = {PACKED_NUMERIC: ("TYPE_FP32", [4]), PACKED_CATEGORICAL: ("TYPE_STRING", [15])}


def _without(config: mc.ModelConfig, *fields: str) -> mc.ModelConfig:
    copy = mc.ModelConfig()
    copy.CopyFrom(config)
    for field in fields:
        copy.ClearField(field)
    return copy


def test_embedded_serves_the_packed_pair_as_a_second_fused_step_without_an_ensemble(
    repositories: dict[str, Path]
) -> None:
    repository = repositories["embedded"]
    packed, fused = _config(repository, "churn_packed"), _config(repository, "churn_fused")
    ensemble = _config(repository, "churn")
    assert packed.backend == "python" and packed.platform == ""
    assert _io(packed.input) == PACKED_INPUTS
    assert _io(packed.output) == _io(fused.output) == _io(ensemble.output)
    assert [o.name for o in packed.output] == list(OUTPUTS)
    # the fused step's instances, batching and drift parameters; the ensemble's cache
    assert _without(packed, "name", "input", "model_warmup", "response_cache") == \
        _without(fused, "name", "input", "model_warmup")
    assert packed.parameters["drift_model"].string_value == "churn"
    assert packed.response_cache.enable == ensemble.response_cache.enable
    for name in ("model.py", "model.onnx", "features.py", "feature_schema.json",
                 "reference_profile.json", "drift_publisher.py"):
        assert (repository / "churn_packed" / "1" / name).read_bytes() == \
            (repository / "churn_fused" / "1" / name).read_bytes(), name
    every = [read_config(p) for p in repository.glob("*/config.pbtxt")]
    assert not [c.name for c in every for s in c.ensemble_scheduling.step
                if s.model_name == "churn_packed"]


@pytest.mark.parametrize("target", ["embedded", "embedded_split", "production"])
def test_packed_warmup_samples_are_customers_the_step_accepts_when_rendered(
    repositories: dict[str, Path], target: str, schema: FeatureSchema
) -> None:
    step = "churn_packed" if target == "embedded" else "churn_preprocess_packed"
    folder = repositories[target] / step
    config = _config(repositories[target], step)
    assert [w.batch_size for w in config.model_warmup] == [1, 32]
    for sample in config.model_warmup:
        assert {n: (mc.DataType.Name(i.data_type), list(i.dims))
                for n, i in sample.inputs.items()} == PACKED_INPUTS
        numeric = np.frombuffer((folder / "warmup" / PACKED_NUMERIC).read_bytes(),
                                dtype=np.float32).reshape(1, 4)
        raw = (folder / "warmup" / PACKED_CATEGORICAL).read_bytes()
        values = []
        while raw:
            (length,) = struct.unpack("<I", raw[:4])
            values.append(raw[4:4 + length])
            raw = raw[4 + length:]
        columns = unpack(numeric, np.array([values], dtype=object))
        assert schema.validate(columns) == [] and fraction_problems(columns, INTEGER) == []


@pytest.mark.parametrize("target", ["embedded_split", "production"])
def test_split_targets_render_a_packed_ensemble_sharing_the_model_steps(
    repositories: dict[str, Path], target: str
) -> None:
    repository = repositories[target]
    packed, ensemble = _config(repository, "churn_packed"), _config(repository, "churn")
    assert packed.platform == "ensemble"
    assert _io(packed.input) == PACKED_INPUTS
    assert _io(packed.output) == _io(ensemble.output)
    assert packed.max_batch_size == ensemble.max_batch_size
    assert packed.response_cache.enable == ensemble.response_cache.enable
    first, *rest = packed.ensemble_scheduling.step
    assert first.model_name == "churn_preprocess_packed"
    assert dict(first.input_map) == {PACKED_NUMERIC: PACKED_NUMERIC,
                                     PACKED_CATEGORICAL: PACKED_CATEGORICAL}
    # after the first step, the very steps (and tensors) of the 19-input ensemble
    assert list(rest) == list(ensemble.ensemble_scheduling.step)[1:]
    assert dict(first.output_map) == dict(ensemble.ensemble_scheduling.step[0].output_map)
    step, plain = (_config(repository, "churn_preprocess_packed"),
                   _config(repository, "churn_preprocess"))
    assert step.backend == "python"
    assert _io(step.input) == PACKED_INPUTS
    assert _without(step, "name", "input", "model_warmup") == \
        _without(plain, "name", "input", "model_warmup")
    assert not (repository / "churn_preprocess_packed" / "1" / "model.onnx").exists()
    assert (repository / "churn_preprocess_packed" / "1" / "model.py").read_bytes() == \
        (repository / "churn_preprocess" / "1" / "model.py").read_bytes()
