"""The Locust load tests (loadtests/) against a real Triton: short headless runs of the HTTP and
gRPC users, their reports and exit codes, and the client's request count against Triton's own.

Locust runs as a subprocess, never imported here: it monkey-patches the process with gevent.
Each run lasts a few seconds; Locust's percentiles are whole milliseconds under 100 ms.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tritonkit.serve.server import TritonServer

from ..support import counter

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = "loadtests/locustfile.py"
#: Exit code of a run that broke a threshold (loadtests/thresholds.py).
THRESHOLD_EXIT_CODE = 3
LOOSE = ["--max-p95-ms", "5000", "--max-p99-ms", "10000", "--max-fail-ratio", "0"]
#: Each request Triton's python step refuses counts as two failures of the ensemble
#: (docs/platform.md, "Quirks of Triton 2.51 and what the project does about them": the row
#: "Request counters of an ensemble of python steps").
FAILURES_PER_REFUSAL = 2

pytestmark = pytest.mark.slow


def locust(triton: TritonServer, folder: Path, *args: str, run_time_s: int = 6, users: int = 4
           ) -> subprocess.CompletedProcess[str]:
    """A headless Locust run against `triton`; CSV files `<folder>/run_*.csv`, HTML report
    `<folder>/report.html`. LOCUST_* variables of the caller's environment are left out."""
    command = [
        str(Path(sys.executable).with_name("locust")), "-f", LOCUSTFILE, "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{run_time_s}s",
        "--host", triton.http_url, "--grpc-url", triton.grpc_url,
        "--csv", str(folder / "run"), "--html", str(folder / "report.html"),
        # Users finish the request they are in, so every answer Triton counts is counted here.
        "--stop-timeout", "5", "--exit-code-on-error", "1",
        # the test server serves churn alone (conftest)
        "--ensembles", "churn", *args,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env, check=False)


def stats(folder: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Rows of `<folder>/run_stats.csv` by (Type, Name); the total is ("", "Aggregated")."""
    with open(folder / "run_stats.csv", newline="") as handle:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}


def answered(rows: dict[tuple[str, str], dict[str, str]]) -> int:
    """Requests that succeeded and are not refusals the test expected (`... expect 400`)."""
    return sum(int(r["Request Count"]) - int(r["Failure Count"])
               for (kind, name), r in rows.items()
               if kind and "expect 400" not in name)


def test_locust_http_users_pass_and_match_triton_request_count_when_thresholds_are_loose(
        triton: TritonServer, tmp_path: Path) -> None:
    before = counter(triton, "nv_inference_request_success", model="churn")
    done = locust(triton, tmp_path, "TritonJsonUser", "TritonBinaryUser", *LOOSE)
    served = counter(triton, "nv_inference_request_success", model="churn") - before

    assert done.returncode == 0, done.stderr[-3000:]
    assert "threshold ok --max-p95-ms 5000" in done.stderr
    assert "threshold ok --max-fail-ratio 0" in done.stderr
    rows = stats(tmp_path)
    total = rows[("", "Aggregated")]
    assert {("POST", "churn"), ("POST", "churn (binary)")} <= set(rows)
    assert int(total["Failure Count"]) == 0
    assert int(total["Request Count"]) > 100
    # The client's count of answered requests is Triton's count of successes, to the request.
    assert answered(rows) == int(total["Request Count"]) == served
    for name in ("run_stats_history.csv", "run_failures.csv", "run_exceptions.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    html = (tmp_path / "report.html").read_text()
    assert "churn (binary)" in html


def test_locust_grpc_user_counts_answers_and_refusals_as_triton_does_when_traffic_is_mixed(
        triton: TritonServer, tmp_path: Path) -> None:
    """Two Locust processes; drifted and invalid shares: answers and expected 400s are
    successes on the client, and Triton counts the same answers and refusals."""
    before_ok = counter(triton, "nv_inference_request_success", model="churn")
    before_failed = counter(triton, "nv_inference_request_failure", model="churn")
    done = locust(triton, tmp_path, "TritonGrpcUser", "--processes", "2",
                  "--drift-share", "0.2", "--invalid-share", "0.1", *LOOSE)
    served = counter(triton, "nv_inference_request_success", model="churn") - before_ok
    failed = counter(triton, "nv_inference_request_failure", model="churn") - before_failed

    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "terminate called" not in done.stderr
    rows = stats(tmp_path)
    names = {name for kind, name in rows if kind == "gRPC"}
    assert names == {"churn", "churn [drifted]", "churn [unseen category, expect 400]",
                     "churn [invalid, expect 400]"}
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0
    refused = sum(int(r["Request Count"]) for (_, name), r in rows.items()
                  if "expect 400" in name)
    assert refused > 0
    assert answered(rows) == served
    assert refused * FAILURES_PER_REFUSAL == failed


def test_locust_exits_3_naming_the_threshold_when_p95_is_above_it(
        triton: TritonServer, tmp_path: Path) -> None:
    """A p95 of 0.001 ms cannot be met (Locust reports at least 1 ms for anything slower than
    0.5 ms, and a Triton round trip from Python is slower)."""
    done = locust(triton, tmp_path, "TritonJsonUser", "--max-p95-ms", "0.001",
                  "--max-fail-ratio", "0", run_time_s=3, users=2)

    assert done.returncode == THRESHOLD_EXIT_CODE, done.stderr[-3000:]
    assert "threshold BROKEN --max-p95-ms 0.001: p95 was" in done.stderr
    assert "threshold ok --max-fail-ratio 0" in done.stderr
    assert int(stats(tmp_path)[("", "Aggregated")]["Request Count"]) > 0
    assert (tmp_path / "report.html").exists()


def test_locust_step_shape_raises_users_in_steps_when_shape_is_step(
        triton: TritonServer, tmp_path: Path) -> None:
    done = locust(triton, tmp_path, "TritonJsonUser", "--shape", "step", "--shape-steps", "2",
                  run_time_s=4, users=4)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "Shape test updating to 2 users" in done.stderr
    assert "Shape test updating to 4 users" in done.stderr
