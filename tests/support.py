"""Helpers shared by the tests: a real tritonserver on free ports, raw KServe v2 HTTP calls,
request bodies built from real customers, and Prometheus counters read from Triton's /metrics.

    server = serve(repository, tmp_path)
    status, answer = post(server, body_for(customer))
    status, answer = post(server, packed_body([customer]), model="churn_packed")
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tritonkit.client.customers import columns_from_rows, kserve_json_inputs
from tritonkit.drift.binning import DriftLayout
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import ServerSettings, TritonServer
from tritonkit.spec import Spec
from tritonkit.tabular.contract import contract
from tritonkit.tabular.packed import PACKED_CATEGORICAL, PACKED_NUMERIC

CHURN = contract("churn")
pack = CHURN.pack


#: Under CI (`CI=true`, as .ci/run sets it) a test whose tool is missing fails: a skip there
#: would be a check that did not run and a green build that says it did.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_tool(reason: str) -> NoReturn:
    """Skip the test for `reason` (a tool or package it needs is missing, with its fix), or
    fail it under CI, where .ci/run installs every tool."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run installs it, so its absence is a failure)",
                    pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, fix: str, *alternatives: str) -> str:
    """The path of the command `name` (or the first of `alternatives` found); else
    `missing_tool`, naming the fix (e.g. "apt-get install wrk")."""
    for candidate in (name, *alternatives):
        found = shutil.which(candidate) or shutil.which(candidate, path="/usr/bin")
        if found:
            return found
    missing_tool(f"{name} is not installed ({fix})")


def serve(repository: Path, log_dir: Path, **settings: Any) -> TritonServer:
    """Start a real tritonserver on free ports (extra keyword arguments go to ServerSettings)."""
    server_settings = ServerSettings(
        model_repository=repository,
        http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
        log_file=log_dir / "tritonserver.log",
        **settings,
    )
    return TritonServer(server_settings).start(timeout_s=120)


def body_for(customer: dict[str, Any]) -> dict[str, Any]:
    """One customer as a KServe v2 JSON request body."""
    return {"inputs": kserve_json_inputs(customer)}


def post(
    triton: TritonServer, payload: bytes | dict[str, Any], model: str = "churn"
) -> tuple[int, dict[str, Any]]:
    """POST an inference request over raw HTTP; returns (status, parsed JSON answer)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(
        f"{triton.http_url}/v2/models/{model}/infer", data=data,
        headers={"Content-Type": "application/json"}, method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:  # an unclosed error response is a ResourceWarning (an error here) at GC
            return exc.code, json.loads(exc.read())


def probability(answer: dict[str, Any]) -> float:
    """The first churn probability of a KServe v2 JSON answer."""
    out = {o["name"]: o["data"] for o in answer["outputs"]}
    return float(out["churn_probability"][0])


def with_input(body: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    """A copy of `body` whose input `name` has the given fields replaced."""
    body = copy.deepcopy(body)
    for item in body["inputs"]:
        if item["name"] == name:
            item.update(changes)
    return body


def without_input(body: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of `body` without the input `name`."""
    body = copy.deepcopy(body)
    body["inputs"] = [i for i in body["inputs"] if i["name"] != name]
    return body


def repeated_rows(body: dict[str, Any], rows: int) -> dict[str, Any]:
    """A copy of a one-customer `body` with that customer repeated `rows` times."""
    body = copy.deepcopy(body)
    for item in body["inputs"]:
        item["shape"] = [rows, 1]
        item["data"] = item["data"] * rows
    return body


_SAMPLE = re.compile(r'^(\w+)\{([^}]*)\}\s+(\S+)$')


def samples(triton: TritonServer) -> list[tuple[str, dict[str, str], float]]:
    """Every labelled sample on Triton's /metrics as (name, labels, value)."""
    with urllib.request.urlopen(triton.metrics_url, timeout=10) as response:
        text = response.read().decode()
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            out.append((match.group(1), labels, float(match.group(3))))
    return out


def settled_drift(triton: TritonServer, layout: DriftLayout, timeout_s: float = 15.0
                  ) -> np.ndarray:
    """The drift series `layout.vector` reads from /metrics once the counts of earlier requests
    are flushed (unchanged over more than the steps' 1 s flush interval): a vector taken sooner
    would leave the last requests of the test before to the next test's difference."""
    deadline = time.monotonic() + timeout_s
    last = layout.vector(samples(triton))
    while time.monotonic() < deadline:
        time.sleep(1.2)
        now = layout.vector(samples(triton))
        if np.array_equal(now, last):
            break
        last = now
    return last


def counter(triton: TritonServer, metric: str, **labels: str) -> float:
    """Sum of one Prometheus metric's samples on Triton's /metrics that carry `labels`."""
    return sum(value for name, found, value in samples(triton)
               if name == metric and all(found.get(k) == v for k, v in labels.items()))


def counter_settled(triton: TritonServer, metric: str, at_least: float, timeout_s: float = 5.0,
                    **labels: str) -> float:
    """`counter` once it reaches `at_least`, or as it is after `timeout_s`. Triton counts an
    execution after the stub's answer went out: read at once, under load, the counter can
    still trail the answer (CI saw it for 4 requests in a row)."""
    deadline = time.monotonic() + timeout_s
    while (value := counter(triton, metric, **labels)) < at_least \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def with_queue_delay(spec: Spec, delay_us: int) -> Spec:
    """A copy of `spec` whose steps wait up to `delay_us` to gather a dynamic batch."""
    data = spec.model_dump()
    for pipeline in data["models"].values():
        for step in pipeline["steps"].values():
            step["dynamic_batching"]["max_queue_delay_us"] = delay_us
    return Spec.model_validate(data)


def poisoned(model: onnx.ModelProto, column: int) -> onnx.ModelProto:
    """A copy of the churn graph that raises inside onnxruntime for every row whose encoded
    `column` is 1 (a Gather out of bounds), and answers as before for the other rows."""
    model = copy.deepcopy(model)
    graph = model.graph
    raw = "churn_probability_before_poison"
    for node in graph.node:
        for names in (node.input, node.output):
            for k, name in enumerate(names):
                if name == "churn_probability":
                    names[k] = raw
    graph.initializer.extend([
        numpy_helper.from_array(np.array([column], dtype=np.int64), "poison_start"),
        numpy_helper.from_array(np.array([column + 1], dtype=np.int64), "poison_end"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "poison_axis"),
        numpy_helper.from_array(np.array(1000, dtype=np.int64), "poison_scale"),
        numpy_helper.from_array(np.zeros(2, dtype=np.float32), "poison_table"),
    ])
    graph.node.extend([
        helper.make_node("Slice", ["features", "poison_start", "poison_end", "poison_axis"],
                         ["poison_flag"]),
        helper.make_node("Cast", ["poison_flag"], ["poison_flag_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["poison_flag_int", "poison_scale"], ["poison_index"]),
        helper.make_node("Gather", ["poison_table", "poison_index"], ["poison_zero"], axis=0),
        helper.make_node("Add", [raw, "poison_zero"], ["churn_probability"]),
    ])
    onnx.checker.check_model(model)
    return model


def customers_csv(test_rows: Path, path: Path, rows: int, **cells: str) -> Path:
    """The first `rows` customers of the CSV `test_rows` (the artefacts' test.csv) written to
    `path`; `cells` maps "row:column" to a new cell."""
    with open(test_rows, newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or ())
        lines = [row for _, row in zip(range(rows), reader, strict=False)]
    for where, value in cells.items():
        index, column = where.split(":")
        lines[int(index)][column] = value
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(lines)
    return path


def batch_body(customers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several customers as one KServe v2 JSON request body, one row each."""
    bodies = [body_for(c) for c in customers]
    return {"inputs": [
        {**item, "shape": [len(bodies), 1], "data": [b["inputs"][k]["data"][0] for b in bodies]}
        for k, item in enumerate(bodies[0]["inputs"])
    ]}


def packed_body(customers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Customers as one KServe v2 JSON request body of the packed entry point: `numeric`
    [rows, 4] and `categorical` [rows, 15] (features.pack of the client's checked columns)."""
    numeric, categorical = pack(columns_from_rows(customers))
    return {"inputs": [
        {"name": PACKED_NUMERIC, "shape": list(numeric.shape), "datatype": "FP32",
         "data": numeric.reshape(-1).tolist()},
        {"name": PACKED_CATEGORICAL, "shape": list(categorical.shape), "datatype": "BYTES",
         "data": [v.decode() for v in categorical.reshape(-1)]},
    ]}


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (from /proc/*/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid ...; comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def stub_pids(triton: TritonServer, model: str) -> list[int]:
    """PIDs of the python stubs that this `triton` (found by its HTTP port) runs for `model`,
    and no other server's: several tritonservers may run on the machine."""
    flag = f"--http-port={triton.settings.http_port}".encode()
    servers = [int(path.parent.name) for path in Path("/proc").glob("[0-9]*/cmdline")
               if (argv := _argv(path)) and argv[0].endswith(b"/tritonserver") and flag in argv]
    return [child for server in servers for child in children(server)
            if (argv := _argv(Path(f"/proc/{child}/cmdline")))
            and argv[0].endswith(b"/triton_python_backend_stub")
            and any(f"/{model}/".encode() in arg for arg in argv[1:2])]


def _argv(cmdline: Path) -> list[bytes]:
    """A process's command line from /proc/<pid>/cmdline; [] once it has gone."""
    try:
        return cmdline.read_bytes().split(b"\0")
    except OSError:
        return []


def build(*args: str, root: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `tritonkit build` (what `make build-engines` runs) in a subprocess; `root` stands
    in for the checkout (TRITONKIT_ROOT)."""
    env = {**os.environ, **({"TRITONKIT_ROOT": str(root)} if root else {})}
    return subprocess.run([sys.executable, "-m", "tritonkit.cli", "build", *args],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
