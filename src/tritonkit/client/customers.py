"""Rows read and checked before anything is sent: CSV or JSON readers, and the column arrays a
request carries, in the ensemble's data types. Every function takes the tabular model's
`contract` (`tritonkit.tabular.contract`; default: churn's, the public `/predict` contract).

    customers = read_customers(Path("customers.csv"))      # CustomerError names row and field
    columns = columns_from_rows(customers)                 # {"tenure": float32 [rows, 1], ...}
    inputs = kserve_json_inputs(customers[0])              # one KServe v2 JSON request's inputs
    rows = read_customers(Path("test.csv"), contract=contract("cancer"))

Bad input fails with a `CustomerError` naming the row and the field
(``row 3 (customerid 7590-VHVEG): tenure: '' is not a number``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tritonkit.errors import CustomerError
from tritonkit.tabular.contract import TabularContract
from tritonkit.tabular.contract import contract as contract_of
from tritonkit.tabular.schema import KSERVE_DATATYPES

#: The model whose contract the functions here use when given none: `/predict`'s.
DEFAULT_MODEL = "churn"


def _contract(given: TabularContract | None) -> TabularContract:
    return given if given is not None else contract_of(DEFAULT_MODEL)


def held_out_example(model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """The first held-out row of a tabular model (`artifacts/<model>/<version>/test.csv`, made
    by `make build-engines`): a valid request for banners and examples.

    Raises:
        OSError: the model is not built.
    """
    from tritonkit.paths import ARTIFACTS
    from tritonkit.spec import load_spec

    version = load_spec().models[model].version
    contract = contract_of(model)
    return read_customers(ARTIFACTS / model / str(version) / "test.csv", limit=1,
                          contract=contract)[0]


def _label(index: int, row: Any, contract: TabularContract) -> str:
    """How a message names a row: its index in the input, and its id when it has one."""
    customer = row.get(contract.id_column) if isinstance(row, Mapping) else None
    if customer is None or str(customer).strip() == "":
        return f"row {index}"
    return f"row {index} ({contract.id_column} {str(customer).strip()})"


def _number(name: str, value: Any, contract: TabularContract) -> float | None:
    """`value` of the numeric feature `name` as a float, or None when it is not a number.

    NaN, infinities and numbers no real row can have come back as they are:
    `columns_from_rows` refuses them against the contract's bounds.
    """
    if isinstance(value, str):
        text = value.strip()
        # what a blank cell means, where the spec says (churn: a totalcharges not billed yet)
        if text == "" and name in contract.blanks:
            return contract.blanks[name]
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


def _coerce(name: str, value: Any, contract: TabularContract) -> Any:
    """A field as read from a file: categories stripped, numbers parsed (kept as they are when
    they do not parse, so that `columns_from_rows` names the row and the field)."""
    if name in contract.categorical:
        return "" if value is None else str(value).strip()
    number = _number(name, value, contract)
    return value if number is None else number


def read_customers(path: Path, limit: int | None = None,
                   contract: TabularContract | None = None) -> list[dict[str, Any]]:
    """Rows from a CSV with the model's feature columns or a JSON list of objects; extra columns
    are kept.

    Args:
        path: a `.json` file holding a list of objects, or a CSV file with a header row.
        limit: read only the first `limit` rows (the rest are not checked either).
        contract: the model's contract (default: churn's).

    Returns:
        One dict per row: keys lower-cased, numbers parsed (a blank cell as the spec says),
        every check of `columns_from_rows` passed.

    Raises:
        OSError: the file cannot be opened.
        CustomerError: the file is not customer CSV or JSON, or a customer has a bad field; the
            message names the file, then the row and the field.
    """
    contract = _contract(contract)
    try:
        rows = (_json_rows(path, limit) if path.suffix.lower() == ".json"
                else _csv_rows(path, limit, contract))
        customers = []
        for row in rows:
            lowered = {str(k).strip().lower(): v for k, v in row.items()}
            customers.append({k: _coerce(k, v, contract) if k in contract.features else v
                              for k, v in lowered.items()})
        columns_from_rows(customers, contract)  # refuse a bad file before anything is sent
    except CustomerError as exc:
        raise CustomerError(f"{path}: {exc}") from None
    return customers


def _csv_rows(path: Path, limit: int | None, contract: TabularContract
              ) -> list[dict[str, Any]]:
    """The rows of a CSV file with every feature column and one cell per column in each row."""
    try:
        # utf-8-sig: a spreadsheet's byte-order mark would otherwise stick to the first column.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            try:
                return _checked_csv_rows(reader, limit, contract)
            except csv.Error as exc:
                raise CustomerError(
                    f"not a valid CSV file: line {reader.line_num}: {exc}"
                ) from None
    except UnicodeDecodeError as exc:
        raise CustomerError(
            f"not a CSV text file: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
            "is not UTF-8"
        ) from None


def _checked_csv_rows(reader: csv.DictReader[str], limit: int | None,
                      contract: TabularContract) -> list[dict[str, Any]]:
    header = reader.fieldnames
    features = contract.features
    kind = f"{contract.model} CSV"
    if not header:
        raise CustomerError(f"empty file: expected a CSV header row with the {kind} columns")
    names = [str(h).strip().lower() for h in header]
    missing = [name for name in features if name not in names]
    if len(missing) == len(features):
        shown = ",".join(header)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise CustomerError(
            f"not a {kind}: its header row {shown!r} has none of the columns "
            f"{', '.join(features[:3])}, ... (a header row with the feature columns comes first)"
        )
    if missing:
        raise CustomerError(f"not a {kind}: missing column(s) {', '.join(missing)}")
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
                f"{_label(index, lowered, contract)}: line {reader.line_num} has {cells} cells "
                f"where the header has {len(header)}{where}"
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


def columns_from_rows(rows: Sequence[Mapping[str, Any]],
                      contract: TabularContract | None = None) -> dict[str, np.ndarray]:
    """Column arrays [rows, 1] in the ensemble's dtypes, after every check a client can make.

    Numbers are checked as float64 against the contract's bounds before the cast, so 1e39 is
    refused rather than sent as an infinite float32. Categories need the trained schema: the
    server checks those.

    Raises:
        CustomerError: naming the first bad row (index in `rows`, its id when present) and
            the field: a missing field, a number that does not parse, NaN or an infinity, a
            number outside the bounds, or a fraction where the input is an integer.
    """
    contract = _contract(contract)
    size = len(rows)
    numbers = {name: np.empty(size, dtype=np.float64) for name in contract.numeric}
    texts = {name: np.empty(size, dtype=np.object_) for name in contract.categorical}
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise CustomerError(
                f"row {index}: expected a mapping of field names to values, got "
                f"{type(row).__name__}"
            )
        for name in contract.features:
            if name not in row:
                raise CustomerError(f"{_label(index, row, contract)}: {name}: missing field")
            value = row[name]
            if name in texts:
                texts[name][index] = str(value).encode()
                continue
            number = _number(name, value, contract)
            if number is None:
                raise CustomerError(
                    f"{_label(index, row, contract)}: {name}: {value!r} is not a number")
            numbers[name][index] = number
    found = [problem for name in contract.numeric
             if (problem := _first_problem(name, numbers[name], contract)) is not None]
    if found:
        index, message = min(found, key=lambda problem: problem[0])
        raise CustomerError(f"{_label(index, rows[index], contract)}: {message}")
    columns = {}
    dtypes = contract.numpy_dtypes
    for name in contract.features:
        array = numbers[name].astype(dtypes[name]) if name in numbers else texts[name]
        columns[name] = array.reshape(-1, 1)
    return columns


def _first_problem(name: str, column: np.ndarray, contract: TabularContract
                   ) -> tuple[int, str] | None:
    """(row, message) of the first value of a float64 column that the input `name` cannot take.

    The bounds and their messages are `bounds_problems`'s: on the prefix of the column that ends
    at the first bad row it reports that row alone, with its index in the whole input.
    """
    bounds_problems = contract.bounds_problems
    if bounds_problems({name: column}):
        low, high = 0, column.size - 1  # the shortest prefix with a problem ends at `high`
        while low < high:
            middle = (low + high) // 2
            if bounds_problems({name: column[: middle + 1]}):
                high = middle
            else:
                low = middle + 1
        return high, bounds_problems({name: column[: high + 1]})[0]
    if np.issubdtype(contract.numpy_dtypes[name], np.integer):
        fractions = np.flatnonzero(column != np.trunc(column))
        if fractions.size:
            index = int(fractions[0])
            minimum, maximum = contract.bounds[name]
            allowed = (f"{minimum:g} or {maximum:g}"
                       if maximum is not None and maximum - minimum == 1 else "a whole number")
            return index, f"{name}: {float(column[index])!r} is not {allowed}"
    return None


def kserve_json_inputs(customer: Mapping[str, Any], contract: TabularContract | None = None
                       ) -> list[dict[str, Any]]:
    """One row as the `inputs` list of a KServe v2 JSON request (curl, wrk, tests)."""
    contract = _contract(contract)
    columns = columns_from_rows([customer], contract)
    inputs = []
    for name, dtype in contract.triton_dtypes.items():
        value = columns[name].item()
        inputs.append({
            "name": name, "shape": [1, 1], "datatype": KSERVE_DATATYPES[dtype],
            "data": [value.decode() if isinstance(value, bytes) else value],
        })
    return inputs
