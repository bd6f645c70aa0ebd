"""`make bench`'s suite in its smoke form: real tritonserver processes, the naive server, wrk
and h2load, a second per point. Checks the table, the files and that every run was counted by
tritonserver as the client saw it (the suite raises otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..support import require_tool

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow]


@pytest.fixture(autouse=True)
def load_generators() -> None:
    require_tool("wrk", "make system-deps: apt-get install wrk")
    require_tool("h2load", "make system-deps: apt-get install nghttp2-client")


#: How the suite names a tritonserver that died of SIGSEGV (bench/suite.py `settled`).
SEGFAULT = "exit code -11"


@pytest.mark.timeout(600)  # a run, and a second one after a crash
def test_suite_prints_ratios_and_writes_table_json_and_plot_when_run_quick(tmp_path: Path
                                                                           ) -> None:
    output = tmp_path / "suite.json"
    command = [sys.executable, "bench/suite.py", "--quick", "--duration-s", "1", "--output",
               str(output)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280,
                         check=False)
    if run.returncode != 0 and SEGFAULT in run.stderr:
        # tritonserver 2.51 itself crashed (SIGSEGV in pthread_mutex_lock at the first requests
        # of a run, seen in CI: docs/platform.md): once more, and a second crash fails
        print(f"tritonserver crashed with SIGSEGV; running the suite again:\n"
              f"{run.stderr[-2000:]}")
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280,
                             check=False)
    assert run.returncode == 0, run.stderr[-8000:]
    result = json.loads(output.read_text())
    cases = {(r["case"], r["connections"]) for r in result["rows"]}
    for case in ("naive Flask http_json", "churn http_json", "churn grpc", "no-op step grpc",
                 "churn batching off grpc"):
        assert {(case, 1), (case, 64)} <= cases, case
    for row in result["rows"]:
        assert row["failed"] == 0 and row["requests_per_s"] > 0 and row["p99_ms"] >= row[
            "p50_ms"] > 0, row
    figures = result["figures"]
    assert {"churn/naive throughput c=64, grpc", "churn/no-op step throughput c=64, grpc",
            "churn p50 c=1 above no-op step ms, grpc",
            "share of per-request cost batching amortizes, grpc"} <= set(figures)
    assert "churn/naive throughput c=64, grpc" in run.stdout
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| churn grpc |" in output.with_suffix(".md").read_text()
