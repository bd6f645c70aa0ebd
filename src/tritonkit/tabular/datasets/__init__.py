"""The rows of a tabular model, from its spec's `dataset`: a loader module of this package or a
CSV file, typed and checked against the features the spec names, then split by a hash of the
id column (a row never changes split, across runs and data updates).

A loader is a module here with `load(cache_dir) -> DataFrame` returning one row per id, the
target as 0/1 and the spec's feature columns (any extra column is dropped)::

    frame = load_rows(spec.models["churn"].dataset)     # datasets/telco.py's rows, checked
    splits = split(frame, "customerid", validation_fraction=0.15, test_fraction=0.15)
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from pathlib import Path

import numpy as np
import pandas as pd

from tritonkit.errors import DataError
from tritonkit.paths import CACHE, PROJECT_ROOT
from tritonkit.spec import TabularDataset


@dataclasses.dataclass(frozen=True)
class Splits:
    """Id-disjoint train / validation / test frames."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def _read(dataset: TabularDataset, cache_dir: Path) -> pd.DataFrame:
    if dataset.csv is not None:
        path = dataset.csv if dataset.csv.is_absolute() else PROJECT_ROOT / dataset.csv
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        except FileNotFoundError as exc:
            raise DataError(f"dataset CSV {path} not found") from exc
    module = importlib.import_module(f"{__name__}.{dataset.loader}")
    frame: pd.DataFrame = module.load(cache_dir)
    return frame


def load_rows(dataset: TabularDataset, cache_dir: Path = CACHE / "data") -> pd.DataFrame:
    """The dataset's rows: the id as text, numeric features as float64, categorical ones as
    stripped text, the target as 0/1; sorted by id.

    Raises:
        DataError: a column is missing, a number does not parse, an id repeats, or the target
            holds anything but 0 and 1 — each naming the column.
    """
    frame = _read(dataset, cache_dir)
    needed = [dataset.id_column, *dataset.features, dataset.target]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"dataset lacks column(s) {', '.join(missing)}; it has "
                        f"{', '.join(map(str, frame.columns))}")
    frame = frame[needed].copy()
    frame[dataset.id_column] = frame[dataset.id_column].astype(str)
    if frame[dataset.id_column].duplicated().any():
        raise DataError(f"{dataset.id_column}: ids repeat; one row per id")
    for name in dataset.numeric:
        try:
            frame[name] = pd.to_numeric(frame[name], errors="raise").astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{name}: not a number ({exc})") from exc
    for name in dataset.categorical:
        frame[name] = frame[name].astype(str).str.strip()
    target = pd.to_numeric(frame[dataset.target], errors="coerce")
    if not target.isin([0, 1]).all():
        raise DataError(f"{dataset.target}: the target must be 0 or 1 in every row")
    frame[dataset.target] = target.astype(np.int64)
    return frame.sort_values(dataset.id_column).reset_index(drop=True)


def split(frame: pd.DataFrame, id_column: str, validation_fraction: float = 0.15,
          test_fraction: float = 0.15) -> Splits:
    """Deterministic id-disjoint split by a hash of the id: a test row never leaks into a
    later training set."""
    buckets = frame[id_column].map(
        lambda cid: int(hashlib.sha256(cid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    )
    test = frame[buckets < test_fraction]
    validation = frame[(buckets >= test_fraction) & (buckets < test_fraction + validation_fraction)]
    train = frame[buckets >= test_fraction + validation_fraction]
    return Splits(
        train=train.reset_index(drop=True),
        validation=validation.reset_index(drop=True),
        test=test.reset_index(drop=True),
    )
