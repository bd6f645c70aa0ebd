"""A tabular model's feature schema: validation and encoding of raw feature columns.

One definition, used by training, the parity checks, the clients and the Triton preprocessing
step. It depends on numpy alone, because the repository builder copies this file beside the
python-backend step (the NGC container has numpy, not this package). Each numeric feature
carries its bounds and whether it is whole (its Triton dtype: INT32, else FP32); each
categorical one its training vocabulary (BYTES on the wire)::

    schema = FeatureSchema.load(Path("artifacts/churn/1/feature_schema.json"))
    schema.triton_dtypes()["seniorcitizen"]       # "TYPE_INT32"
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

#: KServe v2 wire datatype of each Triton config data type the contract uses.
KSERVE_DATATYPES: dict[str, str] = {
    "TYPE_FP32": "FP32", "TYPE_INT32": "INT32", "TYPE_STRING": "BYTES",
}
#: numpy dtype of each Triton config data type the contract uses.
NUMPY_OF_TRITON: dict[str, Any] = {
    "TYPE_FP32": np.float32, "TYPE_INT32": np.int32, "TYPE_STRING": np.object_,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NumericFeature:
    """A numeric input: allowed range and the standardisation the model was trained with."""

    name: str
    mean: float = 0.0
    scale: float = 1.0
    minimum: float = 0.0
    maximum: float | None = None
    #: a whole number: sent as INT32 on the per-feature contract, checked whole when packed
    integer: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class CategoricalFeature:
    """A categorical input and its training vocabulary (one-hot order)."""

    name: str
    categories: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureSchema:
    """All inputs of a tabular model, and how to turn raw columns into the model's matrix."""

    numeric: tuple[NumericFeature, ...]
    categorical: tuple[CategoricalFeature, ...]

    def triton_dtypes(self) -> dict[str, str]:
        """Triton data type of each raw input of the ensemble, in schema order."""
        dtypes = {f.name: "TYPE_INT32" if f.integer else "TYPE_FP32" for f in self.numeric}
        dtypes.update({c.name: "TYPE_STRING" for c in self.categorical})
        return dtypes

    def numpy_dtypes(self) -> dict[str, Any]:
        """numpy dtype a client sends for each input."""
        return {name: NUMPY_OF_TRITON[t] for name, t in self.triton_dtypes().items()}

    @property
    def integer_features(self) -> tuple[str, ...]:
        """Numeric features the per-feature contract carries as integers: in the packed
        `numeric` tensor they are FP32, so that they are whole is checked by value."""
        return tuple(f.name for f in self.numeric if f.integer)

    def bounds_problems(self, columns: Mapping[str, Any]) -> list[str]:
        """Problems of the numeric columns present in `columns` against their bounds: NaN,
        infinities and numbers no real row can have, each naming the feature and the rows
        (what a client checks before sending; the categories need the trained vocabulary)."""
        problems: list[str] = []
        for feature in self.numeric:
            if feature.name in columns:
                problems += _numeric_problems(feature, np.asarray(columns[feature.name]))
        return problems

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
