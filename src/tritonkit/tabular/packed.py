"""A tabular model's packed entry point: the same rows as two tensors instead of one per
feature, and their checks.

`<model>_packed` takes `numeric` FP32 [rows, numeric features] and `categorical` BYTES
[rows, categorical features] (a model without features of a kind has no tensor of it). This file
depends on numpy alone, because the repository builder copies it beside the python-backend
step, as it does `schema.py`::

    order = PackedColumns.of(schema)
    numeric, categorical = pack(columns, order)     # per-feature columns -> the two tensors
    columns = unpack(numeric, categorical, order)   # and back, as views
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# `<model>_packed` takes the same rows as two tensors instead of one per feature: per-tensor
# handling in tritonserver and the python backend is what many inputs cost (a step that did no
# work answered ~7,000 req/s with churn's 19 and 12,800-14,800 with two; docs/contract.md,
# "The packed entry point").

#: Names of the two tensors of the packed entry point.
PACKED_NUMERIC = "numeric"
PACKED_CATEGORICAL = "categorical"
#: Triton data type of each packed tensor: every number travels as FP32, every category as BYTES.
PACKED_DTYPES: dict[str, str] = {PACKED_NUMERIC: "TYPE_FP32", PACKED_CATEGORICAL: "TYPE_STRING"}


@dataclasses.dataclass(frozen=True)
class PackedColumns:
    """Which feature each column of the packed tensors holds: a schema's numeric features in
    order, then its categorical features in order. A model without features of a kind has no
    tensor of that kind (`tensors`); a step reads its absent one as [rows, 0]."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def tensors(self) -> tuple[str, ...]:
        """The packed tensors the entry point takes."""
        return tuple(name for name, features in ((PACKED_NUMERIC, self.numeric),
                                                 (PACKED_CATEGORICAL, self.categorical))
                     if features)

    @classmethod
    def of(cls, schema: Any) -> PackedColumns:
        """The order of a `FeatureSchema` (anything with `numeric` and `categorical`
        features)."""
        return cls(numeric=tuple(f.name for f in schema.numeric),
                   categorical=tuple(c.name for c in schema.categorical))


def packed_problems(numeric: np.ndarray, categorical: np.ndarray,
                    order: PackedColumns) -> list[str]:
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
           order: PackedColumns) -> dict[str, np.ndarray]:
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


def pack(columns: Mapping[str, Any], order: PackedColumns
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
    count = next(iter(rows.values()), 0)
    numeric = np.empty((count, len(numbers)), dtype=np.float32)
    for j, column in enumerate(numbers):
        numeric[:, j] = column
    categorical = np.empty((count, len(texts)), dtype=object)
    for k, column in enumerate(texts):
        categorical[:, k] = column
    return numeric, categorical


def fractional_rows(columns: Mapping[str, np.ndarray], integer_features: Sequence[str]
                    ) -> np.ndarray | None:
    """bool [rows]: rows whose integer features hold a finite fraction; None when none does
    (the serving hot path: no messages, `fraction_problems` has those)."""
    found = None
    for name in integer_features:
        values = np.asarray(columns[name]).reshape(-1)
        rows = np.isfinite(values) & (values != np.trunc(values))
        if rows.any():
            found = rows if found is None else found | rows
    return found


def fraction_problems(columns: Mapping[str, np.ndarray], integer_features: Sequence[str]
                      ) -> list[str]:
    """An integer feature's value that is not whole, naming the feature and the rows (NaN and
    infinities are `validate`'s)."""
    problems = []
    for name in integer_features:
        if name not in columns:
            continue
        values = np.asarray(columns[name]).reshape(-1).astype(np.float64, copy=False)
        rows = np.flatnonzero(np.isfinite(values) & (values != np.trunc(values)))
        if rows.size:
            problems.append(f"{name}: value {values[rows[0]]:g} at row(s) {_rows(rows)} is not a "
                            "whole number")
    return problems



def _rows(rows: Sequence[int] | np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(r)) for r in list(rows)[:limit])
    return shown + (f" (+{len(rows) - limit} more)" if len(rows) > limit else "")
