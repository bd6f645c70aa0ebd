"""A client for the `churn` ensemble over HTTP or gRPC (tritonclient).

    client = ChurnClient("127.0.0.1:8000", protocol="http")
    for p in client.predict(read_customers(Path("customers.csv"))):   # client.customers
        print(p.churn_probability, p.risk_level, p.model_version)

With `packed=True` it calls `churn_packed`, the same model behind two input tensors instead of
19 (`tritonkit.tabular.schema.PACKED_*`; docs/contract.md, "The packed entry point"), for the
same Predictions. The tensors' names and dtypes are churn's contract, from the spec
(`tritonkit.tabular.contract`).

Bad input fails before anything is sent, with a `CustomerError` naming the row and the field
(`tritonkit.client.customers`); an unreachable server raises `ServerUnavailableError`, an error
answer `ServerError`, each naming the URL (`tritonkit.client.triton`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tritonkit.client.customers import columns_from_rows
from tritonkit.client.triton import TritonClient, WireProtocol
from tritonkit.tabular.contract import contract
from tritonkit.tabular.packed import PACKED_CATEGORICAL, PACKED_NUMERIC
from tritonkit.tabular.schema import KSERVE_DATATYPES

__all__ = ["MODEL_NAME", "OUTPUTS", "PACKED_MODEL_NAME", "ChurnClient", "Prediction"]

CHURN = contract("churn")
MODEL_NAME = CHURN.model
#: The packed entry point: the same answers for `numeric` and `categorical` (schema.PACKED_*).
PACKED_MODEL_NAME = CHURN.packed_model
OUTPUTS = tuple(CHURN.outputs)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The answer for one customer: from Triton (`ChurnClient`), from the gateway's `/predict`
    (`resilient.ResilientChurnClient`, whose wire schema is `gateway.models.Prediction`), or
    from the fallback model."""

    customer_id: str
    churn_probability: float
    risk_level: str
    model_version: str
    #: True when the fallback model answered instead (`resilient.ResilientChurnClient`)
    degraded: bool = False


class ChurnClient(TritonClient):
    """Calls the ensemble, or with `packed` the packed entry point; one request per
    `batch_size` customers."""

    def __init__(self, url: str, protocol: WireProtocol = "http", timeout_s: float = 10.0,
                 packed: bool = False) -> None:
        super().__init__(url, protocol, timeout_s)
        self.packed = packed
        self.model_name = PACKED_MODEL_NAME if packed else MODEL_NAME

    def infer_columns(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference request with the given columns, unchecked; returns the outputs by name.

        The raw call, for sending columns a client would refuse (tests of the server's checks):
        `predict` checks the customers and names the URL in its errors. A packed client packs
        the columns into `numeric` and `categorical` first.

        Raises:
            tritonclient.utils.InferenceServerException: with the server's message (for bad
                input it names the feature and the problem).
        """
        if self.packed:
            numeric, categorical = CHURN.pack(columns)
            return self.infer_tensors({PACKED_NUMERIC: numeric, PACKED_CATEGORICAL: categorical})
        return self.infer_tensors(columns)

    def infer_tensors(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request to this client's model with these tensors as they are (binary over
        HTTP), each sent as the contract's data type for its name; the outputs by name."""
        return self.send(self.model_name, [
            (name, array, KSERVE_DATATYPES.get(CHURN.sent_dtypes.get(name, ""), "BYTES"))
            for name, array in tensors.items()], OUTPUTS)

    def predict(self, customers: Sequence[Mapping[str, Any]], batch_size: int = 64
                ) -> list[Prediction]:
        """Predictions for every customer, in order.

        Every customer is checked (`columns_from_rows`) before the first request is sent.

        Raises:
            CustomerError: a customer has a bad field; the message names its row and the field.
            ServerUnavailableError: the server cannot be reached or did not answer in time.
            ServerError: the server answered with an error (its message, on one line).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        columns = columns_from_rows(customers)
        predictions: list[Prediction] = []
        for start in range(0, len(customers), batch_size):
            stop = min(start + batch_size, len(customers))
            out = self._infer({n: a[start:stop] for n, a in columns.items()}, start)
            for i, row in enumerate(customers[start:stop]):
                predictions.append(Prediction(
                    customer_id=str(row.get("customerid", start + i)),
                    churn_probability=float(out["churn_probability"][i, 0]),
                    risk_level=out["risk_level"][i, 0].decode(),
                    model_version=out["model_version"][i, 0].decode(),
                ))
        return predictions

    def _infer(self, columns: Mapping[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
        """`infer_columns` with tritonclient's failures raised as this package's errors."""
        rows = len(next(iter(columns.values()), ()))
        return self.call(lambda: self.infer_columns(columns), start, rows)
