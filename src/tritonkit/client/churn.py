"""A client for the `churn` ensemble over HTTP or gRPC (tritonclient), and customer readers.

    client = ChurnClient("127.0.0.1:8000", protocol="http")
    for p in client.predict(read_customers(Path("customers.csv"))):
        print(p.churn_probability, p.risk_level, p.model_version)

With `packed=True` it calls `churn_packed`, the same model behind two input tensors instead of
19 (`tritonkit.features.PACKED_*`; README, "The packed entry point"), for the same Predictions.

Bad input fails before anything is sent, with a `CustomerError` naming the row and the field
(``row 3 (customer 7590-VHVEG): tenure: '' is not a number``); an unreachable server raises
`ServerUnavailableError`, an error answer `ServerError`, each naming the URL.
"""

from __future__ import annotations

import csv
import dataclasses
import http.client
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonkit.errors import CustomerError, ServerError, ServerUnavailableError
from tritonkit.features import (
    ALL_FEATURES,
    CATEGORICAL_FEATURES,
    KSERVE_DATATYPES,
    NUMERIC_BOUNDS,
    NUMERIC_FEATURES,
    NUMPY_DTYPES,
    OUTPUT_DTYPES,
    PACKED_CATEGORICAL,
    PACKED_DTYPES,
    PACKED_NUMERIC,
    TRITON_DTYPES,
    bounds_problems,
    pack,
)

__all__ = [  # KSERVE_DATATYPES: re-exported for callers that built requests from this module
    "KSERVE_DATATYPES", "MODEL_NAME", "OUTPUTS", "PACKED_MODEL_NAME", "ChurnClient", "Prediction",
    "Protocol", "columns_from_rows", "kserve_json_inputs", "read_customers",
]

Protocol = Literal["http", "grpc"]
MODEL_NAME = "churn"
#: The packed entry point: the same answers for `numeric` and `categorical` (features.PACKED_*).
#: `repository.layout.step_names(MODEL_NAME)["packed"]`, not imported: that pulls the spec's
#: pydantic models into every client (tests/unit/test_packed.py holds the two equal).
PACKED_MODEL_NAME = f"{MODEL_NAME}_packed"
#: Triton data type of every tensor a client sends, per-feature or packed, by name.
_SENT_DTYPES = {**TRITON_DTYPES, **PACKED_DTYPES}
OUTPUTS = tuple(OUTPUT_DTYPES)
#: Status codes with which Triton blames the request rather than itself (HTTP, gRPC).
_BAD_REQUEST_STATUSES = frozenset({"400", "StatusCode.INVALID_ARGUMENT"})
#: gRPC status codes of a server that cannot be reached or did not answer in time.
_UNREACHABLE_STATUSES = frozenset({"StatusCode.UNAVAILABLE"})
_TIMEOUT_STATUSES = frozenset({"StatusCode.DEADLINE_EXCEEDED"})


@dataclasses.dataclass(frozen=True)
class Prediction:
    customer: str
    churn_probability: float
    risk_level: str
    model_version: str
    #: True when the fallback model answered instead (`resilient.ResilientChurnClient`)
    degraded: bool = False


def _label(index: int, row: Any) -> str:
    """How a message names a row: its index in the input, and its customerid when it has one."""
    customer = row.get("customerid") if isinstance(row, Mapping) else None
    if customer is None or str(customer).strip() == "":
        return f"row {index}"
    return f"row {index} (customer {str(customer).strip()})"


def _number(name: str, value: Any) -> float | None:
    """`value` of the numeric feature `name` as a float, or None when it is not a number.

    NaN, infinities and numbers no customer can have come back as they are: `columns_from_rows`
    refuses them against NUMERIC_BOUNDS.
    """
    if isinstance(value, str):
        text = value.strip()
        # A blank totalcharges is a customer not billed yet (tenure 0): 0.0, as in training.
        if text == "" and name == "totalcharges":
            return 0.0
        try:
            return float(text)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    try:
        return float(value)
    except OverflowError:  # an int beyond float64: refused as infinite by the bounds check
        return math.inf


def _coerce(name: str, value: Any) -> Any:
    """A field as read from a file: categories stripped, numbers parsed (kept as they are when
    they do not parse, so that `columns_from_rows` names the row and the field)."""
    if name in CATEGORICAL_FEATURES:
        return "" if value is None else str(value).strip()
    number = _number(name, value)
    return value if number is None else number


def read_customers(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Customers from a CSV (Telco columns) or a JSON list of objects; extra columns are kept.

    Args:
        path: a `.json` file holding a list of objects, or a CSV file with a header row.
        limit: read only the first `limit` customers (the rest are not checked either).

    Returns:
        One dict per customer: keys lower-cased, numbers parsed (a blank totalcharges is 0.0),
        every check of `columns_from_rows` passed.

    Raises:
        OSError: the file cannot be opened.
        CustomerError: the file is not customer CSV or JSON, or a customer has a bad field; the
            message names the file, then the row and the field.
    """
    try:
        rows = _json_rows(path, limit) if path.suffix.lower() == ".json" else _csv_rows(path, limit)
        customers = []
        for row in rows:
            lowered = {str(k).strip().lower(): v for k, v in row.items()}
            customers.append(
                {k: _coerce(k, v) if k in ALL_FEATURES else v for k, v in lowered.items()}
            )
        columns_from_rows(customers)  # refuse a bad file before anything is sent
    except CustomerError as exc:
        raise CustomerError(f"{path}: {exc}") from None
    return customers


def _csv_rows(path: Path, limit: int | None) -> list[dict[str, Any]]:
    """The rows of a CSV file with every Telco column and one cell per column in each row."""
    try:
        # utf-8-sig: a spreadsheet's byte-order mark would otherwise stick to the first column.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            try:
                return _checked_csv_rows(reader, limit)
            except csv.Error as exc:
                raise CustomerError(
                    f"not a valid CSV file: line {reader.line_num}: {exc}"
                ) from None
    except UnicodeDecodeError as exc:
        raise CustomerError(
            f"not a CSV text file: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
            "is not UTF-8"
        ) from None


def _checked_csv_rows(reader: csv.DictReader[str], limit: int | None) -> list[dict[str, Any]]:
    header = reader.fieldnames
    if not header:
        raise CustomerError("empty file: expected a CSV header row with the Telco columns")
    names = [str(h).strip().lower() for h in header]
    missing = [name for name in ALL_FEATURES if name not in names]
    if len(missing) == len(ALL_FEATURES):
        shown = ",".join(header)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise CustomerError(
            f"not a Telco customer CSV: its header row {shown!r} has none of the columns "
            f"{', '.join(ALL_FEATURES[:3])}, ... (a header row with the Telco columns comes first)"
        )
    if missing:
        raise CustomerError(f"not a Telco customer CSV: missing column(s) {', '.join(missing)}")
    rows: list[dict[str, Any]] = []
    for index, row in enumerate(reader):
        if limit is not None and index >= limit:
            break
        extra = row.pop(None, None) or []  # cells past the header (DictReader's restkey)
        absent = [h for h in header if row.get(h) is None]  # a short row's missing cells
        if extra or absent:
            lowered = {str(k).strip().lower(): v for k, v in row.items()}
            cells = len(header) - len(absent) + len(extra)
            where = f" (no {', '.join(absent[:3])})" if absent else ""
            raise CustomerError(
                f"{_label(index, lowered)}: line {reader.line_num} has {cells} cells where "
                f"the header has {len(header)}{where}"
            )
        rows.append(row)
    return rows


def _json_rows(path: Path, limit: int | None) -> list[dict[str, Any]]:
    """The objects of a JSON file holding a list of objects."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CustomerError(
            f"not a JSON text file: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
            "is not UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        raise CustomerError(f"not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise CustomerError(f"expected a JSON list of customer objects, got a JSON {_kind(data)}")
    rows = data if limit is None else data[:limit]
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise CustomerError(
                f"row {index}: expected a JSON object of customer fields, got a JSON {_kind(row)}"
            )
    return rows


def _kind(value: Any) -> str:
    """The JSON name of a parsed JSON value's type."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def columns_from_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Column arrays [rows, 1] in the ensemble's dtypes, after every check a client can make.

    Numbers are checked as float64 against NUMERIC_BOUNDS before the cast, so 1e39 is refused
    rather than sent as an infinite float32. Categories need the trained schema: the server
    checks those.

    Raises:
        CustomerError: naming the first bad row (index in `rows`, customerid when present) and
            the field: a missing field, a number that does not parse, NaN or an infinity, a
            number outside NUMERIC_BOUNDS, or a fraction where the input is an integer.
    """
    size = len(rows)
    numbers = {name: np.empty(size, dtype=np.float64) for name in NUMERIC_FEATURES}
    texts = {name: np.empty(size, dtype=np.object_) for name in CATEGORICAL_FEATURES}
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise CustomerError(
                f"row {index}: expected a mapping of field names to values, got "
                f"{type(row).__name__}"
            )
        for name in ALL_FEATURES:
            if name not in row:
                raise CustomerError(f"{_label(index, row)}: {name}: missing field")
            value = row[name]
            if name in texts:
                texts[name][index] = str(value).encode()
                continue
            number = _number(name, value)
            if number is None:
                raise CustomerError(f"{_label(index, row)}: {name}: {value!r} is not a number")
            numbers[name][index] = number
    found = [problem for name in NUMERIC_FEATURES
             if (problem := _first_problem(name, numbers[name])) is not None]
    if found:
        index, message = min(found, key=lambda problem: problem[0])
        raise CustomerError(f"{_label(index, rows[index])}: {message}")
    columns = {}
    for name in ALL_FEATURES:
        array = numbers[name].astype(NUMPY_DTYPES[name]) if name in numbers else texts[name]
        columns[name] = array.reshape(-1, 1)
    return columns


def _first_problem(name: str, column: np.ndarray) -> tuple[int, str] | None:
    """(row, message) of the first value of a float64 column that the input `name` cannot take.

    The bounds and their messages are `bounds_problems`'s: on the prefix of the column that ends
    at the first bad row it reports that row alone, with its index in the whole input.
    """
    if bounds_problems({name: column}):
        low, high = 0, column.size - 1  # the shortest prefix with a problem ends at `high`
        while low < high:
            middle = (low + high) // 2
            if bounds_problems({name: column[: middle + 1]}):
                high = middle
            else:
                low = middle + 1
        return high, bounds_problems({name: column[: high + 1]})[0]
    if np.issubdtype(NUMPY_DTYPES[name], np.integer):
        fractions = np.flatnonzero(column != np.trunc(column))
        if fractions.size:
            index = int(fractions[0])
            minimum, maximum = NUMERIC_BOUNDS[name]
            allowed = (f"{minimum:g} or {maximum:g}" if maximum - minimum == 1
                       else "a whole number")
            return index, f"{name}: {float(column[index])!r} is not {allowed}"
    return None


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
    """Calls the ensemble, or with `packed` the packed entry point; one request per
    `batch_size` customers."""

    def __init__(self, url: str, protocol: Protocol = "http", timeout_s: float = 10.0,
                 packed: bool = False) -> None:
        self.url = url
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.packed = packed
        self.model_name = PACKED_MODEL_NAME if packed else MODEL_NAME
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
        """One inference request with the given columns, unchecked; returns the outputs by name.

        The raw call, for sending columns a client would refuse (tests of the server's checks):
        `predict` checks the customers and names the URL in its errors. A packed client packs
        the columns into `numeric` and `categorical` first.

        Raises:
            tritonclient.utils.InferenceServerException: with the server's message (for bad
                input it names the feature and the problem).
        """
        if self.packed:
            numeric, categorical = pack(columns)
            return self.infer_tensors({PACKED_NUMERIC: numeric, PACKED_CATEGORICAL: categorical})
        return self.infer_tensors(columns)

    def infer_tensors(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request to this client's model with these tensors as they are (binary over
        HTTP), each sent as the contract's data type for its name; the outputs by name."""
        inputs = []
        for name, array in tensors.items():
            wire = KSERVE_DATATYPES.get(_SENT_DTYPES.get(name, ""), "BYTES")
            item = self._module.InferInput(name, list(array.shape), wire)
            item.set_data_from_numpy(array)
            inputs.append(item)
        outputs = [self._module.InferRequestedOutput(n) for n in OUTPUTS]
        kwargs: dict[str, Any] = {"outputs": outputs}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        result = self._client.infer(self.model_name, inputs, **kwargs)
        return {n: result.as_numpy(n) for n in OUTPUTS}

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
                    customer=str(row.get("customerid", start + i)),
                    churn_probability=float(out["churn_probability"][i, 0]),
                    risk_level=out["risk_level"][i, 0].decode(),
                    model_version=out["model_version"][i, 0].decode(),
                ))
        return predictions

    def _infer(self, columns: Mapping[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
        """`infer_columns` with tritonclient's failures raised as this package's errors."""
        where = f"Triton at {self.url} ({self.protocol})"
        hint = f"is `make up` running, and is {self.url} its {self.protocol} port?"
        slow = (f"{where} did not answer within {self.timeout_s:g} s: is it overloaded? "
                "raise the timeout (predict.py --timeout-s)")
        try:
            return self.infer_columns(columns)
        except TimeoutError as exc:  # http; a subclass of OSError
            raise ServerUnavailableError(slow) from exc
        except OSError as exc:  # http: refused, unknown host, reset
            raise ServerUnavailableError(
                f"cannot reach {where}: {exc.strerror or exc}; {hint}"
            ) from exc
        except http.client.HTTPException as exc:  # http: a port that does not speak HTTP/1.1
            raise ServerUnavailableError(
                f"cannot reach {where}: its answer is not HTTP; {hint}"
            ) from exc
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            message = " ".join(str(exc.message()).split())  # one line, whatever the server sent
            if status in _TIMEOUT_STATUSES:
                raise ServerUnavailableError(slow) from exc
            if status in _UNREACHABLE_STATUSES:
                raise ServerUnavailableError(f"cannot reach {where}: {message}; {hint}") from exc
            rows = len(next(iter(columns.values()), ()))
            if status.startswith("StatusCode."):
                shown = status.replace("StatusCode.", "gRPC ")
            else:
                shown = f"HTTP {status}" if status else "an error"
            counted = f" (its row numbers count from row {start})" if start else ""
            raise ServerError(
                f"{where} answered {shown} for rows {start}-{start + rows - 1}{counted}: "
                f"{message}",
                bad_request=status in _BAD_REQUEST_STATUSES,
            ) from exc

    def close(self) -> None:
        self._client.close()
