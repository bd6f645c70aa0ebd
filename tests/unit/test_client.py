"""The client refuses customers no server should see, naming the row and the field, and says
which URL failed when the server cannot be reached; no tritonserver is started."""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonkit.client.churn import ChurnClient
from tritonkit.client.customers import columns_from_rows, read_customers
from tritonkit.errors import CustomerError, ServerUnavailableError
from tritonkit.serve.ports import free_port
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.contract import contract

from ..support import customers_csv

CHURN = contract("churn")
NUMERIC_BOUNDS = CHURN.bounds




def _changed(customers: list[dict[str, Any]], row: int, **fields: Any) -> list[dict[str, Any]]:
    """Copies of the first five customers, with `fields` of customer `row` replaced."""
    rows = [dict(c) for c in customers[:5]]
    rows[row].update(fields)
    return rows


def _refusal(rows: list[dict[str, Any]]) -> str:
    with pytest.raises(CustomerError) as info:
        columns_from_rows(rows)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_columns_from_rows_refuses_seniorcitizen_when_it_is_a_fraction(
    customers: list[dict[str, Any]]
) -> None:
    # 1.0 and "1" are the flag 1; 0.7 must not be sent as 0 (an int32 cast truncates).
    for value in (1.0, "1", 1):
        assert columns_from_rows(_changed(customers, 2, seniorcitizen=value))[
            "seniorcitizen"][2, 0] == 1
    customer = customers[2]["customerid"]
    message = _refusal(_changed(customers, 2, seniorcitizen=0.7))
    assert message == f"row 2 (customerid {customer}): seniorcitizen: 0.7 is not 0 or 1"


def test_read_customers_names_row_and_field_when_tenure_is_empty(
    artifacts: TabularArtifacts, tmp_path: Path
) -> None:
    # A blank totalcharges is a customer not billed yet: 0.0, as in training.
    blank = {"0:totalcharges": " "}
    billed = read_customers(customers_csv(artifacts.test_rows, tmp_path / "billed.csv", 3,
                                          **blank))
    assert billed[0]["totalcharges"] == 0.0
    path = customers_csv(artifacts.test_rows, tmp_path / "bad.csv", 3, **{"1:tenure": ""})
    with pytest.raises(CustomerError) as info:
        read_customers(path)
    customer = billed[1]["customerid"]
    assert str(info.value) == f"{path}: row 1 (customerid {customer}): tenure: '' is not a number"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "inf", 10**400])
def test_columns_from_rows_refuses_number_when_it_is_not_finite(
    customers: list[dict[str, Any]], value: Any
) -> None:
    message = _refusal(_changed(customers, 3, tenure=value))
    assert message.startswith(f"row 3 (customerid {customers[3]['customerid']}): tenure: ")
    assert "NaN or infinite value" in message


def test_columns_from_rows_refuses_number_when_float32_would_make_it_infinite(
    customers: list[dict[str, Any]]
) -> None:
    # float32 tops out near 3.4e38: a cast after the check would send infinity.
    message = _refusal(_changed(customers, 1, monthlycharges=1e39))
    maximum = NUMERIC_BOUNDS["monthlycharges"][1]
    assert message.startswith(f"row 1 (customerid {customers[1]['customerid']}): monthlycharges: ")
    assert f"above the maximum {maximum:g}" in message


@pytest.mark.parametrize(("name", "value", "words"), [
    ("tenure", 1e6, "above the maximum"),
    ("tenure", -1, "below the minimum"),
    ("totalcharges", "2e7", "above the maximum"),
    ("seniorcitizen", 2, "above the maximum"),
])
def test_columns_from_rows_refuses_number_when_outside_numeric_bounds(
    customers: list[dict[str, Any]], name: str, value: Any, words: str
) -> None:
    message = _refusal(_changed(customers, 4, **{name: value}))
    assert message.startswith(f"row 4 (customerid {customers[4]['customerid']}): {name}: ")
    assert words in message


def test_columns_from_rows_names_first_bad_row_when_several_rows_are_bad(
    customers: list[dict[str, Any]]
) -> None:
    rows = _changed(customers, 4, tenure=math.nan)
    rows[2]["monthlycharges"] = 1e6
    assert _refusal(rows).startswith(f"row 2 (customerid {customers[2]['customerid']}): "
                                     "monthlycharges: value 1e+06 at row(s) 2 is above")


def test_columns_from_rows_names_row_and_field_when_a_field_is_missing(
    customers: list[dict[str, Any]]
) -> None:
    rows = _changed(customers, 2)
    del rows[2]["tenure"]
    del rows[2]["customerid"]  # a row without an id is named by its index alone
    assert _refusal(rows) == "row 2: tenure: missing field"


@pytest.mark.parametrize(("text", "words"), [
    ('{"tenure": 1}', "expected a JSON list of customer objects, got a JSON object"),
    ('"customers"', "expected a JSON list of customer objects, got a JSON string"),
    ("[[1, 2]]", "row 0: expected a JSON object of customer fields, got a JSON array"),
    ("[1,", "not valid JSON: "),
])
def test_read_customers_refuses_file_when_json_is_not_a_list_of_objects(
    tmp_path: Path, text: str, words: str
) -> None:
    path = tmp_path / "customers.json"
    path.write_text(text)
    with pytest.raises(CustomerError, match=f"^{re.escape(f'{path}: {words}')}"):
        read_customers(path)


def test_read_customers_names_missing_columns_when_csv_lacks_telco_columns(
    artifacts: TabularArtifacts, tmp_path: Path
) -> None:
    lines = artifacts.test_rows.read_text().splitlines()[:3]
    header = lines[0].split(",")
    drop = [header.index("tenure"), header.index("contract")]
    path = tmp_path / "customers.csv"
    path.write_text("\n".join(
        ",".join(c for i, c in enumerate(line.split(",")) if i not in drop) for line in lines
    ) + "\n")
    with pytest.raises(CustomerError) as info:
        read_customers(path)
    assert str(info.value) == (
        f"{path}: not a churn CSV: missing column(s) tenure, contract"
    )
    path.write_text("Dear customer,\nthis is a letter, not a table.\n")
    with pytest.raises(CustomerError, match="has none of the columns tenure"):
        read_customers(path)


@pytest.mark.parametrize(("change", "words"), [
    (lambda line: line + ",surplus", "line 3 has 22 cells where the header has 21"),
    (lambda line: ",".join(line.split(",")[:19]), "line 3 has 19 cells where the header has 21 "
                                                   "(no paymentmethod, churn)"),
])
def test_read_customers_names_row_when_csv_row_has_extra_or_missing_cells(
    artifacts: TabularArtifacts, tmp_path: Path, change: Any, words: str
) -> None:
    lines = artifacts.test_rows.read_text().splitlines()[:4]
    lines[2] = change(lines[2])
    path = tmp_path / "customers.csv"
    path.write_text("\n".join(lines) + "\n")
    customer = lines[2].split(",")[0]
    with pytest.raises(CustomerError) as info:
        read_customers(path)
    assert str(info.value) == f"{path}: row 1 (customerid {customer}): {words}"


def test_read_customers_refuses_file_when_it_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(CustomerError, match=r"not a CSV text file: byte 0x89 at offset 0"):
        read_customers(path)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_predict_raises_server_unavailable_naming_url_when_nothing_listens(
    customers: list[dict[str, Any]], protocol: Any
) -> None:
    url = f"127.0.0.1:{free_port()}"
    client = ChurnClient(url, protocol=protocol, timeout_s=5)
    try:
        with pytest.raises(ServerUnavailableError) as info:
            client.predict(customers[:2])
    finally:
        client.close()
    message = str(info.value)
    assert f"cannot reach Triton at {url} ({protocol})" in message
    assert "Connection refused" in message and "is `make up` running" in message


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_predict_raises_server_unavailable_when_server_never_answers(
    customers: list[dict[str, Any]], protocol: Any, silent_port: int
) -> None:
    url = f"127.0.0.1:{silent_port}"
    client = ChurnClient(url, protocol=protocol, timeout_s=0.5)
    try:
        with pytest.raises(ServerUnavailableError, match=re.escape(
                f"Triton at {url} ({protocol}) did not answer within 0.5 s")):
            client.predict(customers[:2])
    finally:
        client.close()

