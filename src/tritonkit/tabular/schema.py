"""The churn model's feature schema: validation and encoding of raw feature columns.

One definition, used by training, the parity checks, the clients and the Triton preprocessing
step. It depends on numpy alone, because the repository builder copies this file beside the
python-backend step (the NGC container has numpy, not this package)::

    schema = FeatureSchema.load(Path("artifacts/churn/1/feature_schema.json"))
    errors = schema.validate(columns)             # [] or ["tenure: value -3 at row(s) 0 is below…"]
    matrix = schema.encode(columns)               # float32 [rows, schema.width]
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Numeric inputs in the order the model sees them (their Triton dtypes: TRITON_DTYPES).
NUMERIC_FEATURES: tuple[str, ...] = ("tenure", "monthlycharges", "totalcharges", "seniorcitizen")
#: Categorical inputs (Telco CSV column names), in the order the model sees them.
CATEGORICAL_FEATURES: tuple[str, ...] = (
    "gender",
    "partner",
    "dependents",
    "phoneservice",
    "multiplelines",
    "internetservice",
    "onlinesecurity",
    "onlinebackup",
    "deviceprotection",
    "techsupport",
    "streamingtv",
    "streamingmovies",
    "contract",
    "paperlessbilling",
    "paymentmethod",
)
ALL_FEATURES: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES

#: Triton data type of each raw input of the `churn` ensemble.
TRITON_DTYPES: dict[str, str] = {
    **{name: "TYPE_FP32" for name in ("tenure", "monthlycharges", "totalcharges")},
    "seniorcitizen": "TYPE_INT32",
    **{name: "TYPE_STRING" for name in CATEGORICAL_FEATURES},
}
#: The outputs of the `churn` ensemble, each [rows, 1]: name -> Triton data type. The exporter,
#: the repository builder, the clients and the baseline all read them from here.
OUTPUT_DTYPES: dict[str, str] = {
    "churn_probability": "TYPE_FP32",
    "risk_level": "TYPE_STRING",  # "low" / "medium" / "high", from the spec's risk_thresholds
    "model_version": "TYPE_STRING",
}
#: KServe v2 wire datatype of each Triton config data type the contract uses.
KSERVE_DATATYPES: dict[str, str] = {
    "TYPE_FP32": "FP32", "TYPE_INT32": "INT32", "TYPE_STRING": "BYTES",
}
#: The range a real customer's number can take, (minimum, maximum) per numeric feature: the
#: Triton step, the clients and the naive baseline refuse anything outside it, naming the feature.
#: These are physical limits, far wider than the training data (tenure <= 72 months, monthly
#: charges <= 119, total charges <= 8,685): a wider value is a bug upstream, not a customer.
NUMERIC_BOUNDS: dict[str, tuple[float, float]] = {
    "tenure": (0.0, 1200.0),  # months: 100 years
    "monthlycharges": (0.0, 10_000.0),  # per month
    "totalcharges": (0.0, 12_000_000.0),  # 1,200 months at the highest monthly charge
    "seniorcitizen": (0.0, 1.0),  # a 0/1 flag
}
#: numpy dtype a client sends for each input.
NUMPY_DTYPES: dict[str, Any] = {
    **{name: np.float32 for name in ("tenure", "monthlycharges", "totalcharges")},
    "seniorcitizen": np.int32,
    **{name: np.object_ for name in CATEGORICAL_FEATURES},
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NumericFeature:
    """A numeric input: allowed range and the standardisation the model was trained with."""

    name: str
    mean: float
    scale: float
    minimum: float = 0.0
    maximum: float | None = None

    @classmethod
    def bounded(cls, name: str, *, mean: float = 0.0, scale: float = 1.0) -> NumericFeature:
        """The feature `name` with its NUMERIC_BOUNDS."""
        minimum, maximum = NUMERIC_BOUNDS[name]
        return cls(name=name, mean=mean, scale=scale, minimum=minimum, maximum=maximum)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CategoricalFeature:
    """A categorical input and its training vocabulary (one-hot order)."""

    name: str
    categories: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureSchema:
    """All inputs of the churn model, and how to turn raw columns into the model's matrix."""

    numeric: tuple[NumericFeature, ...]
    categorical: tuple[CategoricalFeature, ...]

    @property
    def width(self) -> int:
        """Number of columns of the encoded matrix."""
        return len(self.numeric) + sum(len(c.categories) for c in self.categorical)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.numeric) + tuple(f.name for f in self.categorical)

    @functools.cached_property
    def _tables(self) -> _Tables:
        """Arrays and lookups of `encode_batch`, built once per schema object (a cache keyed
        by the schema would hash every feature and category on each call)."""
        return _tables(self)

    # -- validation ---------------------------------------------------------------------------
    def validate(self, columns: Mapping[str, np.ndarray]) -> list[str]:
        """Every problem with a batch of raw columns, each message naming its feature.

        Args:
            columns: feature name -> 1-D array (numbers, or bytes/str for categoricals).

        Returns:
            Human-readable problems; empty when the batch can be encoded.
        """
        problems: list[str] = []
        missing = [name for name in self.names if name not in columns]
        if missing:
            problems.append(f"missing input(s): {', '.join(missing)}")
        unknown = sorted(set(columns) - set(self.names))
        if unknown:
            problems.append(f"unexpected input(s): {', '.join(unknown)}")
        sizes = {name: np.asarray(columns[name]).size for name in self.names if name in columns}
        if sizes and len(set(sizes.values())) > 1:
            problems.append(f"inputs have different numbers of rows: {sizes}")
        if any(size == 0 for size in sizes.values()):
            problems.append("empty batch: every input needs at least one row")
        for feature in self.numeric:
            if feature.name in columns:
                problems += _numeric_problems(feature, np.asarray(columns[feature.name]))
        for cat in self.categorical:
            if cat.name in columns:
                problems += _categorical_problems(cat, np.asarray(columns[cat.name]))
        return problems

    # -- encoding -----------------------------------------------------------------------------
    def encode_batch(self, columns: Mapping[str, np.ndarray]) -> EncodedBatch:
        """Encode a batch and flag the rows that cannot be trusted, in one vectorised pass.

        This is the serving hot path: it never formats messages (call `validate` on the
        requests that hold a flagged row for those).

        Args:
            columns: feature name -> array of one value per row (any shape that flattens).

        Returns:
            The matrix, the mask of rows that cannot be trusted, and the raw numbers and
            category codes (what the drift counters count).
        """
        # Single customers are the common request: every line below is one numpy call (or a
        # C-level map), never a Python loop over rows; with the tables cached on the schema a
        # one-row batch takes ~3x less than with np.stack/errstate and a cache keyed by hash.
        tables = self._tables
        numbers = np.array([np.asarray(columns[name]).reshape(-1) for name in tables.numeric],
                           dtype=np.float64).T
        rows = numbers.shape[0]
        out = np.zeros((rows, tables.width), dtype=np.float32)
        # NaN compares False without a warning (numpy < 2 and 2.x alike); isfinite flags it
        bad = ~np.isfinite(numbers).all(axis=1)
        bad |= (numbers < tables.minimum).any(axis=1) | (numbers > tables.maximum).any(axis=1)
        out[:, : len(self.numeric)] = (numbers - tables.mean) / tables.scale
        # Index of each (categorical feature, row) in that feature's categories; -1: unknown.
        codes = np.array(
            [list(map(lookup.get, np.asarray(columns[name]).reshape(-1).tolist(), _MINUS_ONES))
             for name, lookup in tables.lookups],
            dtype=np.int64,
        ).reshape(len(tables.lookups), rows)
        unknown = codes < 0
        if unknown.any():
            bad |= unknown.any(axis=0)
            hot = np.where(unknown, 0, codes) + tables.offsets[:, None]
        else:
            hot = codes + tables.offsets[:, None]
        out[np.arange(rows)[None, :], hot] = 1.0
        return EncodedBatch(matrix=out, bad=bad, numbers=numbers, codes=codes)

    def encode_checked(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(matrix, bad) of `encode_batch`: float32 [rows, width] of standardised numerics then
        one-hot categoricals, and a bool [rows] mask of rows with a non-finite or out-of-range
        number or an unknown category (their matrix rows are meaningless)."""
        batch = self.encode_batch(columns)
        return batch.matrix, batch.bad

    def encode(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Like `encode_checked`, but raises ValueError naming every problem of a bad batch."""
        matrix, bad = self.encode_checked(columns)
        if bad.any():
            raise ValueError("; ".join(self.validate(columns)))
        return matrix

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": [dataclasses.asdict(f) for f in self.numeric],
            "categorical": [
                {"name": c.name, "categories": list(c.categories)} for c in self.categorical
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSchema:
        return cls(
            numeric=tuple(NumericFeature(**f) for f in data["numeric"]),
            categorical=tuple(
                CategoricalFeature(name=c["name"], categories=tuple(c["categories"]))
                for c in data["categorical"]
            ),
        )

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> FeatureSchema:
        return cls.from_dict(json.loads(Path(path).read_text()))


def bounds_problems(columns: Mapping[str, Any]) -> list[str]:
    """Problems of the numeric columns present in `columns` against NUMERIC_BOUNDS.

    What a client can check before sending (the categories need the trained schema): NaN,
    infinities and numbers no customer can have, each message naming the feature and the rows.
    """
    problems: list[str] = []
    for name in NUMERIC_FEATURES:
        if name in columns:
            problems += _numeric_problems(NumericFeature.bounded(name), np.asarray(columns[name]))
    return problems


# -- the packed entry point -----------------------------------------------------------------
# `<model>_packed` takes the same customers as two tensors instead of one per feature: per-tensor
# handling in tritonserver and the python backend is what 19 inputs cost (a step that did no
# work answered ~7,000 req/s with them and 12,800-14,800 with two; README, "The packed entry
# point").

#: Names of the two tensors of the packed entry point.
PACKED_NUMERIC = "numeric"
PACKED_CATEGORICAL = "categorical"
#: Triton data type of each packed tensor: every number travels as FP32, every category as BYTES.
PACKED_DTYPES: dict[str, str] = {PACKED_NUMERIC: "TYPE_FP32", PACKED_CATEGORICAL: "TYPE_STRING"}
#: Numeric features the 19-input contract carries as integers: in `numeric` they are FP32, so
#: that they are whole is checked by value (`fractional_rows`, `fraction_problems`).
INTEGER_FEATURES: tuple[str, ...] = tuple(
    name for name in NUMERIC_FEATURES if TRITON_DTYPES[name] == "TYPE_INT32")


@dataclasses.dataclass(frozen=True)
class PackedColumns:
    """Which feature each column of the packed tensors holds: a schema's numeric features in
    order, then its categorical features in order."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @classmethod
    def of(cls, schema: FeatureSchema) -> PackedColumns:
        return cls(numeric=tuple(f.name for f in schema.numeric),
                   categorical=tuple(c.name for c in schema.categorical))


#: The clients' order; the trained schema is built from the same constants (the repository
#: builder refuses a schema in another order).
PACKED_COLUMNS = PackedColumns(numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES)


def packed_problems(numeric: np.ndarray, categorical: np.ndarray,
                    order: PackedColumns = PACKED_COLUMNS) -> list[str]:
    """What keeps two arrays from being a packed batch, each message naming the tensor.

    Shapes and dtypes only (cheap enough for every request); the values are
    `FeatureSchema.validate`'s and `fraction_problems`' to judge.
    """
    problems = []
    for name, array, features, wire, kinds in (
            (PACKED_NUMERIC, numeric, order.numeric, "FP32", "f"),
            (PACKED_CATEGORICAL, categorical, order.categorical, "BYTES", "OSU")):
        if array.ndim != 2 or array.shape[1] != len(features):
            problems.append(
                f"{name}: expected shape [rows, {len(features)}] (columns "
                f"{', '.join(features)}), got {list(array.shape)}")
        if array.dtype.kind not in kinds or (wire == "FP32" and array.dtype != np.float32):
            problems.append(f"{name}: expected {wire}, got dtype {array.dtype}")
    if problems:
        return problems
    if numeric.shape[0] != categorical.shape[0]:
        return [f"{PACKED_NUMERIC} has {numeric.shape[0]} row(s) and {PACKED_CATEGORICAL} "
                f"{categorical.shape[0]}: one row per customer in both"]
    if numeric.shape[0] == 0:
        return ["empty batch: every input needs at least one row"]
    return []


def unpack(numeric: np.ndarray, categorical: np.ndarray,
           order: PackedColumns = PACKED_COLUMNS) -> dict[str, np.ndarray]:
    """The per-feature columns of a packed batch, as `validate` and `encode_batch` take them:
    views of the two arrays, no copies.

    Raises:
        ValueError: `packed_problems`, naming the tensor.
    """
    problems = packed_problems(numeric, categorical, order)
    if problems:
        raise ValueError("; ".join(problems))
    columns = dict(zip(order.numeric, numeric.T, strict=True))
    columns.update(zip(order.categorical, categorical.T, strict=True))
    return columns


def pack(columns: Mapping[str, Any], order: PackedColumns = PACKED_COLUMNS
         ) -> tuple[np.ndarray, np.ndarray]:
    """(numeric float32 [rows, n], categorical object [rows, m]) of per-feature columns, each
    holding one value per row (any shape that flattens). Values are not checked.

    Raises:
        ValueError: a feature is missing, or the columns differ in rows.
    """
    missing = [name for name in (*order.numeric, *order.categorical) if name not in columns]
    if missing:
        raise ValueError(f"missing column(s): {', '.join(missing)}")
    numbers = [np.asarray(columns[name]).reshape(-1) for name in order.numeric]
    texts = [np.asarray(columns[name], dtype=object).reshape(-1) for name in order.categorical]
    rows = {name: column.shape[0] for name, column in
            zip((*order.numeric, *order.categorical), (*numbers, *texts), strict=True)}
    if len(set(rows.values())) > 1:
        raise ValueError(f"columns have different numbers of rows: {rows}")
    numeric = np.empty((numbers[0].shape[0], len(numbers)), dtype=np.float32)
    for j, column in enumerate(numbers):
        numeric[:, j] = column
    categorical = np.empty((texts[0].shape[0], len(texts)), dtype=object)
    for k, column in enumerate(texts):
        categorical[:, k] = column
    return numeric, categorical


def fractional_rows(columns: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """bool [rows]: rows whose INTEGER_FEATURES hold a finite fraction; None when none does
    (the serving hot path: no messages, `fraction_problems` has those)."""
    found = None
    for name in INTEGER_FEATURES:
        values = np.asarray(columns[name]).reshape(-1)
        rows = np.isfinite(values) & (values != np.trunc(values))
        if rows.any():
            found = rows if found is None else found | rows
    return found


def fraction_problems(columns: Mapping[str, np.ndarray]) -> list[str]:
    """An INTEGER_FEATURES value that is not whole, naming the feature and the rows (NaN and
    infinities are `validate`'s)."""
    problems = []
    for name in INTEGER_FEATURES:
        if name not in columns:
            continue
        values = np.asarray(columns[name]).reshape(-1).astype(np.float64, copy=False)
        rows = np.flatnonzero(np.isfinite(values) & (values != np.trunc(values)))
        if rows.size:
            problems.append(f"{name}: value {values[rows[0]]:g} at row(s) {_rows(rows)} is not a "
                            "whole number")
    return problems


@dataclasses.dataclass(frozen=True)
class EncodedBatch:
    """What `FeatureSchema.encode_batch` makes of a batch of raw columns."""

    #: float32 [rows, width]: standardised numerics, then one-hot categoricals.
    matrix: np.ndarray
    #: bool [rows]: a non-finite or out-of-bounds number, or an unknown category.
    bad: np.ndarray
    #: float64 [rows, numeric features]: the raw numbers, in schema order.
    numbers: np.ndarray
    #: int64 [categorical features, rows]: index in the feature's categories, -1 if unknown.
    codes: np.ndarray


#: The default of `lookup.get` for every value of a column: -1, an unknown category.
_MINUS_ONES = itertools.repeat(-1)


@functools.cache
def _lookup(cat: CategoricalFeature) -> dict[Any, int]:
    """Category -> one-hot index, accepting both str and the bytes Triton hands over."""
    table: dict[Any, int] = {}
    for i, value in enumerate(cat.categories):
        table[value] = i
        table[value.encode()] = i
    return table


@dataclasses.dataclass(frozen=True)
class _Tables:
    mean: np.ndarray
    scale: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    lookups: tuple[tuple[str, dict[Any, int]], ...]
    offsets: np.ndarray
    numeric: tuple[str, ...]
    width: int


def _tables(schema: FeatureSchema) -> _Tables:
    """Arrays and category lookups that `encode_batch` needs, built once per schema."""
    lookups = []
    offsets = []
    offset = len(schema.numeric)
    for cat in schema.categorical:
        lookups.append((cat.name, _lookup(cat)))
        offsets.append(offset)
        offset += len(cat.categories)
    return _Tables(
        mean=np.array([f.mean for f in schema.numeric]),
        scale=np.array([f.scale for f in schema.numeric]),
        minimum=np.array([f.minimum for f in schema.numeric]),
        maximum=np.array([np.inf if f.maximum is None else f.maximum for f in schema.numeric]),
        lookups=tuple(lookups),
        offsets=np.array(offsets, dtype=np.int64),
        numeric=tuple(f.name for f in schema.numeric),
        width=schema.width,
    )


def _numeric_problems(feature: NumericFeature, values: np.ndarray) -> list[str]:
    if values.dtype.kind not in "fiub":
        return [f"{feature.name}: expected numbers, got dtype {values.dtype}"]
    values = values.reshape(-1).astype(np.float64, copy=False)
    problems = []
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad)
        problems.append(
            f"{feature.name}: NaN or infinite value at row(s) {_rows(rows)}; send a finite number"
        )
    finite = np.where(bad, feature.minimum, values)
    low = finite < feature.minimum
    if low.any():
        rows = np.flatnonzero(low)
        problems.append(
            f"{feature.name}: value {finite[rows[0]]:g} at row(s) {_rows(rows)} is below the "
            f"minimum {feature.minimum:g}"
        )
    if feature.maximum is not None:
        high = finite > feature.maximum
        if high.any():
            rows = np.flatnonzero(high)
            problems.append(
                f"{feature.name}: value {finite[rows[0]]:g} at row(s) {_rows(rows)} is above "
                f"the maximum {feature.maximum:g}"
            )
    return problems


def _categorical_problems(cat: CategoricalFeature, values: np.ndarray) -> list[str]:
    lookup = _lookup(cat)
    flat = values.reshape(-1)
    if values.dtype.kind in "fiub":
        return [f"{cat.name}: expected a string category, got dtype {values.dtype}"]
    bad_rows = [i for i, v in enumerate(flat) if v not in lookup]
    if not bad_rows:
        return []
    shown = flat[bad_rows[0]]
    text = shown.decode(errors="replace") if isinstance(shown, bytes) else str(shown)
    return [
        f"{cat.name}: unknown category {text[:60]!r} at row(s) {_rows(np.array(bad_rows))}; "
        f"expected one of {', '.join(repr(c) for c in cat.categories)}"
    ]


def _rows(rows: Sequence[int] | np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(r)) for r in list(rows)[:limit])
    return shown + (f" (+{len(rows) - limit} more)" if len(rows) > limit else "")
