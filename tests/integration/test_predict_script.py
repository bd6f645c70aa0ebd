"""scripts/predict.py against a real tritonserver: a table for good customers, and for every
expected failure one `error:` line on stderr, no traceback and the documented exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonkit.paths import PROJECT_ROOT
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import TritonServer
from tritonkit.tabular.artifacts import TabularArtifacts

from ..support import customers_csv

#: Exit codes documented in `predict.py --help`.
BAD_INPUT, UNREACHABLE = 1, 3


def _predict(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/predict.py", *args],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60,
    )


def _error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one `error:` line of a failed run, after checking its exit code and its silence."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    return lines[0]


def test_predict_script_prints_every_customer_when_input_is_json(
    triton: TritonServer, customers: list[dict[str, Any]], in_process: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    path = tmp_path / "customers.json"
    path.write_text(json.dumps(customers[:4]))
    result = subprocess.run(
        [sys.executable, "scripts/predict.py", str(path), "--protocol", "grpc",
         "--url", triton.grpc_url],
        capture_output=True, text=True, check=True, cwd=PROJECT_ROOT, timeout=60,
    )
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == [c["customerid"] for c in customers[:4]]
    for i, row in enumerate(rows):
        assert abs(float(row[1]) - in_process["churn_probability"][i, 0]) < 1e-4
        assert row[2] == in_process["risk_level"][i, 0]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_predict_script_prints_the_same_table_when_packed(
    triton: TritonServer, artifacts: TabularArtifacts, protocol: str
) -> None:
    url = triton.grpc_url if protocol == "grpc" else triton.http_url.removeprefix("http://")
    args = [str(artifacts.test_rows), "--limit", "6", "--protocol", protocol, "--url", url]
    plain, packed = _predict(*args), _predict(*args, "--packed")
    assert (plain.returncode, packed.returncode) == (0, 0), packed.stderr
    assert packed.stdout == plain.stdout and len(packed.stdout.splitlines()) == 7


def test_predict_script_prints_server_message_when_packed_customer_is_refused(
    triton: TritonServer, artifacts: TabularArtifacts, tmp_path: Path
) -> None:
    path = customers_csv(artifacts.test_rows, tmp_path / "customers.csv", 3,
                         **{"1:contract": "Weekly"})
    line = _error_line(_predict(str(path), "--packed", "--url",
                                triton.http_url.removeprefix("http://")), BAD_INPUT)
    assert "answered HTTP 400 for rows 0-2" in line
    assert "contract: unknown category 'Weekly' at row(s) 1" in line


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_predict_script_exits_unreachable_naming_url_when_connection_is_refused(
    artifacts: TabularArtifacts, protocol: str
) -> None:
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = _predict(str(artifacts.test_rows), "--limit", "3", "--protocol", protocol,
                      "--url", url)
    line = _error_line(result, UNREACHABLE)
    assert f"cannot reach Triton at {url} ({protocol})" in line
    assert "Connection refused" in line and "is `make up` running" in line


@pytest.mark.parametrize(("content", "words"), [
    ("customerID,gender,MonthlyCharges\n7590-VHVEG,Female,29.85\n",
     "not a churn CSV: missing column(s) tenure, totalcharges, seniorcitizen, partner"),
    ("Dear customer,\nthis is a letter, not a table.\n",
     "not a churn CSV: its header row 'Dear customer,' has none of the columns"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a CSV text file: byte 0x89 at offset 0"),
])
def test_predict_script_exits_bad_input_naming_problem_when_csv_is_malformed(
    triton: TritonServer, tmp_path: Path, content: str | bytes, words: str
) -> None:
    path = tmp_path / "customers.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = _predict(str(path), "--url", triton.http_url)
    assert _error_line(result, BAD_INPUT).startswith(f"error: {path}: {words}")


def test_predict_script_exits_bad_input_naming_row_when_csv_row_has_an_extra_cell(
    triton: TritonServer, artifacts: TabularArtifacts, tmp_path: Path
) -> None:
    lines = artifacts.test_rows.read_text().splitlines()[:4]
    lines[3] += ",surplus"
    path = tmp_path / "customers.csv"
    path.write_text("\n".join(lines) + "\n")
    result = _predict(str(path), "--url", triton.http_url)
    customer = lines[3].split(",")[0]
    assert _error_line(result, BAD_INPUT) == (
        f"error: {path}: row 2 (customerid {customer}): line 4 has 22 cells where the header "
        "has 21"
    )


@pytest.mark.parametrize(("cell", "value", "problem"), [
    ("tenure", "", "tenure: '' is not a number"),
    ("seniorcitizen", "0.7", "seniorcitizen: 0.7 is not 0 or 1"),
    ("monthlycharges", "1e39", "monthlycharges: value 1e+39 at row(s) 2 is above the maximum"),
])
def test_predict_script_exits_bad_input_naming_row_and_field_when_csv_row_is_bad(
    triton: TritonServer, artifacts: TabularArtifacts, customers: list[dict[str, Any]],
    tmp_path: Path, cell: str, value: str, problem: str,
) -> None:
    path = customers_csv(artifacts.test_rows, tmp_path / "customers.csv", 4,
                         **{f"2:{cell}": value})
    result = _predict(str(path), "--protocol", "grpc", "--url", triton.grpc_url)
    line = _error_line(result, BAD_INPUT)
    assert line.startswith(
        f"error: {path}: row 2 (customerid {customers[2]['customerid']}): {problem}"
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_predict_script_prints_server_message_on_one_line_when_category_is_unknown(
    triton: TritonServer, artifacts: TabularArtifacts, tmp_path: Path, protocol: str
) -> None:
    # Only the server knows the trained categories: it answers 400 / INVALID_ARGUMENT.
    unknown = {"1:internetservice": "Satellite"}
    path = customers_csv(artifacts.test_rows, tmp_path / "customers.csv", 4, **unknown)
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    result = _predict(str(path), "--protocol", protocol, "--url", url)
    line = _error_line(result, BAD_INPUT)
    assert f"Triton at {url.removeprefix('http://')} ({protocol})" in line
    assert "for rows 0-3:" in line
    assert "internetservice: unknown category 'Satellite' at row(s) 1" in line


def test_predict_script_says_where_row_numbers_start_when_bad_row_is_in_a_later_request(
    triton: TritonServer, artifacts: TabularArtifacts, tmp_path: Path
) -> None:
    # The client sends 64 customers a request; the server numbers rows within its request.
    path = customers_csv(artifacts.test_rows, tmp_path / "customers.csv", 70,
                         **{"66:contract": "Lifetime"})
    result = _predict(str(path), "--url", triton.http_url)
    line = _error_line(result, BAD_INPUT)
    assert "for rows 64-69 (its row numbers count from row 64):" in line
    assert "contract: unknown category 'Lifetime' at row(s) 2" in line
