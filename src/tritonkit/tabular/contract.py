"""A tabular model's public contract, from the spec alone: what a client, the gateway, the
health probes and the load tests send and get back, before (or without) the trained artefacts.

The spec's `dataset` names the features, their bounds and whole-number ones; the trained
schema (`artifacts/<model>/<v>/feature_schema.json`) adds the standardisation and each
categorical feature's vocabulary, in the same order::

    churn = contract("churn")
    churn.features                      # ("tenure", ..., "paymentmethod")
    churn.triton_dtypes["seniorcitizen"]  # "TYPE_INT32"
    churn.bounds_problems({"tenure": [-3]})  # ["tenure: value -3 at row(s) 0 is below ..."]
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tritonkit.spec import DEFAULT_SPEC, TabularClassifier, TabularDataset, load_spec
from tritonkit.tabular.packed import PACKED_DTYPES, PackedColumns, pack, unpack
from tritonkit.tabular.schema import CategoricalFeature, FeatureSchema, NumericFeature


def declared_schema(dataset: TabularDataset) -> FeatureSchema:
    """The dataset's features with their bounds and whole-number flags: no standardisation and
    no vocabulary (training adds both)."""
    return FeatureSchema(
        numeric=tuple(NumericFeature(name=name, minimum=column.min, maximum=column.max,
                                     integer=column.integer)
                      for name, column in dataset.numeric.items()),
        categorical=tuple(CategoricalFeature(name=name, categories=())
                          for name in dataset.categorical))


@dataclasses.dataclass(frozen=True)
class TabularContract:
    """The tensors of one tabular model's entry points, by name and dtype."""

    model: str
    schema: FeatureSchema
    outputs: dict[str, str]
    id_column: str
    target: str
    #: numeric feature -> what a blank cell of a rows file means
    blanks: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, name: str, model: TabularClassifier) -> TabularContract:
        dataset = model.dataset
        return cls(model=name, schema=declared_schema(dataset), outputs=model.outputs,
                   id_column=dataset.id_column, target=dataset.target,
                   blanks={n: c.blank for n, c in dataset.numeric.items() if c.blank is not None})

    @property
    def packed_model(self) -> str:
        """The packed entry point (`repository.layout.step_names(model)["packed"]`)."""
        return f"{self.model}_packed"

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.schema.numeric)

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.schema.categorical)

    @property
    def features(self) -> tuple[str, ...]:
        return self.schema.names

    @property
    def probability(self) -> str:
        return next(iter(self.outputs))

    @functools.cached_property
    def triton_dtypes(self) -> dict[str, str]:
        return self.schema.triton_dtypes()

    @functools.cached_property
    def numpy_dtypes(self) -> dict[str, Any]:
        return self.schema.numpy_dtypes()

    @functools.cached_property
    def sent_dtypes(self) -> dict[str, str]:
        """Triton data type of every tensor a client sends, per-feature or packed, by name."""
        return {**self.triton_dtypes, **PACKED_DTYPES}

    @property
    def packed(self) -> PackedColumns:
        return PackedColumns.of(self.schema)

    @property
    def bounds(self) -> dict[str, tuple[float, float | None]]:
        return {f.name: (f.minimum, f.maximum) for f in self.schema.numeric}

    def bounds_problems(self, columns: Mapping[str, Any]) -> list[str]:
        return self.schema.bounds_problems(columns)

    def pack(self, columns: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The packed pair of per-feature columns (`schema.pack` in this model's order)."""
        return pack(columns, self.packed)

    def unpack(self, numeric: np.ndarray, categorical: np.ndarray) -> dict[str, np.ndarray]:
        return unpack(numeric, categorical, self.packed)


def contracts(spec_path: Path = DEFAULT_SPEC) -> dict[str, TabularContract]:
    """Every tabular model's contract, by model name."""
    spec = load_spec(spec_path)
    return {name: TabularContract.of(name, model) for name, model in spec.models.items()
            if isinstance(model, TabularClassifier)}


@functools.cache
def contract(name: str, spec_path: Path = DEFAULT_SPEC) -> TabularContract:
    """The contract of the spec's tabular model `name`.

    Raises:
        KeyError: the spec has no tabular model of that name.
    """
    found = contracts(spec_path)
    if name not in found:
        raise KeyError(f"the spec has no tabular model {name!r}; it has {sorted(found)}")
    return found[name]
