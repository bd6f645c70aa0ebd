"""A client for the `churn` ensemble over HTTP or gRPC (tritonclient), and customer readers.

    client = ChurnClient("127.0.0.1:8000", protocol="http")
    for p in client.predict(read_customers(Path("customers.csv"))):
        print(p.churn_probability, p.risk_level, p.model_version)
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tritonkit.features import ALL_FEATURES, CATEGORICAL_FEATURES, NUMPY_DTYPES, TRITON_DTYPES

Protocol = Literal["http", "grpc"]
MODEL_NAME = "churn"
OUTPUTS = ("churn_probability", "risk_level", "model_version")
#: KServe v2 datatype of each Triton config type the ensemble uses.
KSERVE_DATATYPES = {"TYPE_FP32": "FP32", "TYPE_INT32": "INT32", "TYPE_STRING": "BYTES"}


@dataclasses.dataclass(frozen=True)
class Prediction:
    customer: str
    churn_probability: float
    risk_level: str
    model_version: str


def _coerce(name: str, value: Any) -> Any:
    if name in CATEGORICAL_FEATURES:
        return "" if value is None else str(value).strip()
    if isinstance(value, str):
        value = value.strip()
        # A blank totalcharges is a customer not billed yet (tenure 0): 0.0, as in training.
        if value == "" and name == "totalcharges":
            return 0.0
        return float(value)
    return value


def read_customers(path: Path) -> list[dict[str, Any]]:
    """Customers from a CSV (Telco columns) or a JSON list of objects; extra columns are kept."""
    if path.suffix.lower() == ".json":
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of customer objects")
    else:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    customers = []
    for row in rows:
        lowered = {str(k).strip().lower(): v for k, v in row.items()}
        customers.append(
            {k: _coerce(k, v) if k in ALL_FEATURES else v for k, v in lowered.items()}
        )
    return customers


def columns_from_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Column arrays [rows, 1] in the ensemble's dtypes; a missing field raises KeyError."""
    columns = {}
    for name in ALL_FEATURES:
        missing = [i for i, row in enumerate(rows) if name not in row]
        if missing:
            raise KeyError(f"customer(s) at row(s) {missing[:5]} lack the field {name!r}")
        values = [row[name] for row in rows]
        if NUMPY_DTYPES[name] is np.object_:
            array = np.array([str(v).encode() for v in values], dtype=np.object_)
        else:
            array = np.array(values, dtype=NUMPY_DTYPES[name])
        columns[name] = array.reshape(-1, 1)
    return columns


def kserve_json_inputs(customer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One customer as the `inputs` list of a KServe v2 JSON request (curl, wrk, tests)."""
    columns = columns_from_rows([customer])
    inputs = []
    for name in ALL_FEATURES:
        value = columns[name].item()
        inputs.append({
            "name": name, "shape": [1, 1], "datatype": KSERVE_DATATYPES[TRITON_DTYPES[name]],
            "data": [value.decode() if isinstance(value, bytes) else value],
        })
    return inputs


class ChurnClient:
    """Calls the ensemble; one request per `batch_size` customers."""

    def __init__(self, url: str, protocol: Protocol = "http", timeout_s: float = 10.0) -> None:
        self.protocol = protocol
        self.timeout_s = timeout_s
        if protocol == "http":
            import tritonclient.http as module
            self._client: Any = module.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        elif protocol == "grpc":
            import tritonclient.grpc as module
            self._client = module.InferenceServerClient(url)
        else:
            raise ValueError(f"protocol must be 'http' or 'grpc', not {protocol!r}")
        self._module = module

    def infer_columns(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference request with the given columns; returns the outputs by name.

        Raises:
            tritonclient.utils.InferenceServerException: with the server's message (for bad
                input it names the feature and the problem).
        """
        inputs = []
        for name, array in columns.items():
            wire = KSERVE_DATATYPES.get(TRITON_DTYPES.get(name, ""), "BYTES")
            item = self._module.InferInput(name, list(array.shape), wire)
            item.set_data_from_numpy(array)
            inputs.append(item)
        outputs = [self._module.InferRequestedOutput(n) for n in OUTPUTS]
        kwargs: dict[str, Any] = {"outputs": outputs}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        result = self._client.infer(MODEL_NAME, inputs, **kwargs)
        return {n: result.as_numpy(n) for n in OUTPUTS}

    def predict(self, customers: Sequence[Mapping[str, Any]], batch_size: int = 64
                ) -> list[Prediction]:
        """Predictions for every customer, in order."""
        predictions: list[Prediction] = []
        for start in range(0, len(customers), batch_size):
            chunk = customers[start:start + batch_size]
            out = self.infer_columns(columns_from_rows(chunk))
            for i, row in enumerate(chunk):
                predictions.append(Prediction(
                    customer=str(row.get("customerid", start + i)),
                    churn_probability=float(out["churn_probability"][i, 0]),
                    risk_level=out["risk_level"][i, 0].decode(),
                    model_version=out["model_version"][i, 0].decode(),
                ))
        return predictions

    def close(self) -> None:
        self._client.close()

