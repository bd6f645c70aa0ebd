"""One load generator for every protocol the benchmarks compare: h2load (nghttp2-client, C).

h2load speaks HTTP/1.1 (`--h1`: KServe v2 JSON and the binary tensor extension) and HTTP/2,
which is what gRPC runs on: a gRPC call is an HTTP/2 POST of a length-prefixed protobuf to
`/inference.GRPCInferenceService/ModelInfer`. One client for all three keeps the client's cost
equal across protocols, and `--log-file` gives every request's latency to the microsecond.

h2load sees HTTP statuses only (a gRPC error still travels as HTTP 200), so every run is checked
against tritonserver's own counters: a run counts only if the server saw exactly the requests the
client completed, and none failed (`ServerCounts`).

Closed loop (`closed`): C connections, each sends its next request when the last one is answered.
Open loop (`open_loop`): requests leave on a schedule (`--rps` per connection) whether or not
earlier ones are answered, so a slow server cannot slow the client down and hide its latency
(coordinated omission). A connection holds one request at a time, so the schedule can slip only
when a request takes longer than connections / rate; the result says when it did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2
from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor

from tritonkit.client.customers import kserve_json_inputs

LoadProtocol = Literal["http_json", "http_binary", "grpc"]
PROTOCOLS: tuple[LoadProtocol, ...] = ("http_json", "http_binary", "grpc")
#: The Debian package of each load tool the benchmarks run (`make system-deps` installs them).
TOOL_PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client"}


def tool_missing(tool: str) -> str | None:
    """How to install the load tool `tool` when it is not on PATH, else None."""
    if shutil.which(tool) is None:
        return f"{tool} not found: apt-get install {TOOL_PACKAGES[tool]} (make system-deps)"
    return None


def start_benchmark(*tools: str) -> bool:
    """What a benchmark's `main` does first: log with times on stderr, and check that the load
    `tools` it runs are installed; False, after one `error:` line on stderr, when one is not."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for tool in tools:
        missing = tool_missing(tool)
        if missing is not None:
            print(f"error: {missing}", file=sys.stderr)
            return False
    return True


@dataclasses.dataclass(frozen=True)
class Request:
    """One request body for one protocol, ready for h2load."""

    protocol: LoadProtocol
    path: str
    body: bytes
    headers: tuple[str, ...]


def json_request(model: str, columns: Mapping[str, np.ndarray]) -> Request:
    inputs = []
    for name, values in columns.items():
        data = [v.decode() if isinstance(v, bytes) else v.item() for v in values.reshape(-1)]
        inputs.append({"name": name, "shape": list(values.shape),
                       "datatype": np_to_triton_dtype(values.dtype), "data": data})
    body = json.dumps({"inputs": inputs}, separators=(",", ":")).encode()
    return Request("http_json", f"/v2/models/{model}/infer", body,
                   ("Content-Type: application/json",))


def binary_request(model: str, columns: Mapping[str, np.ndarray]) -> Request:
    """The binary tensor extension, as tritonclient's HTTP client sends it."""
    inputs = []
    for name, values in columns.items():
        tensor = triton_http.InferInput(name, list(values.shape), np_to_triton_dtype(values.dtype))
        tensor.set_data_from_numpy(values, binary_data=True)
        inputs.append(tensor)
    body, json_size = triton_http.InferenceServerClient.generate_request_body(inputs)
    headers = ["Content-Type: application/octet-stream"]
    if json_size is not None:
        headers.append(f"Inference-Header-Content-Length: {json_size}")
    return Request("http_binary", f"/v2/models/{model}/infer", body, tuple(headers))


def grpc_request(model: str, columns: Mapping[str, np.ndarray]) -> Request:
    """A ModelInferRequest with raw contents, as tritonclient's gRPC client sends it."""
    message = service_pb2.ModelInferRequest(model_name=model)
    for name, values in columns.items():
        message.inputs.add(name=name, datatype=np_to_triton_dtype(values.dtype),
                           shape=list(values.shape))
        if values.dtype == np.object_:
            serialized = serialize_byte_tensor(values)  # one bytes object, length-prefixed items
            raw = serialized.item() if serialized.size else b""
        else:
            raw = np.ascontiguousarray(values).tobytes()
        message.raw_input_contents.append(raw)
    payload = message.SerializeToString()
    framed = b"\x00" + struct.pack(">I", len(payload)) + payload
    return Request("grpc", "/inference.GRPCInferenceService/ModelInfer", framed,
                   ("content-type: application/grpc", "te: trailers"))


def make_request(protocol: LoadProtocol, model: str, columns: Mapping[str, np.ndarray]) -> Request:
    return {"http_json": json_request, "http_binary": binary_request,
            "grpc": grpc_request}[protocol](model, columns)


@dataclasses.dataclass(frozen=True)
class Result:
    """What one load run saw: answered requests and their latency percentiles (ms)."""

    client: str  # "wrk" or "h2load"
    mode: str  # "closed" or "open"
    connections: int
    target_rate: float | None
    duration_s: float
    completed: int
    failed: int  # non-2xx, refused or broken
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.completed / self.duration_s

    def percentile(self, q: int) -> float:
        """p50, p90 or p99 in ms."""
        return {50: self.p50_ms, 90: self.p90_ms, 99: self.p99_ms}[q]

    @property
    def kept_schedule(self) -> bool:
        """Open loop: whether the client sent at (nearly) the rate asked for."""
        return self.target_rate is None or (self.completed + self.failed) >= (
            0.97 * self.target_rate * self.duration_s)

    def row(self) -> dict[str, Any]:
        return {"client": self.client, "mode": self.mode, "connections": self.connections,
                "target_rate": self.target_rate, "requests_per_s": round(self.requests_per_s, 1),
                "p50_ms": round(self.p50_ms, 3), "p90_ms": round(self.p90_ms, 3),
                "p99_ms": round(self.p99_ms, 3), "completed": self.completed,
                "failed": self.failed, "kept_schedule": self.kept_schedule}


def _percentiles(latencies_ms: np.ndarray) -> tuple[float, float, float]:
    if not latencies_ms.size:
        return (float("nan"),) * 3
    p50, p90, p99 = np.percentile(latencies_ms, [50, 90, 99])
    return float(p50), float(p90), float(p99)


@contextlib.contextmanager
def _request_body(tool: str, request: Request) -> Iterator[Path]:
    """`body`, holding the request's body, in a temporary folder for one run of `tool`."""
    missing = tool_missing(tool)
    if missing is not None:
        raise RuntimeError(missing)
    with tempfile.TemporaryDirectory(prefix=f"{tool}-") as work:
        body = Path(work) / "body"
        body.write_bytes(request.body)
        yield body


def _h2load(base_url: str, request: Request, extra: Sequence[str], duration_s: float | None
            ) -> tuple[int, int, tuple[float, float, float], float]:
    """(answered, failed, percentiles of the answered, seconds it took) of one h2load run;
    `duration_s` None: as long as `extra`'s request count takes."""
    with _request_body("h2load", request) as body:
        log = body.with_name("log.tsv")
        cmd = ["h2load", "-t1", "-m1", f"--log-file={log}", "-d", str(body), *extra]
        if duration_s is not None:
            cmd.append(f"-D{duration_s:g}")
        if request.protocol != "grpc":
            cmd.append("--h1")
        for header in request.headers:
            cmd += ["-H", header]
        cmd.append(base_url.rstrip("/") + request.path)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=(duration_s or 600) + 60)
        if out.returncode != 0:
            raise RuntimeError(f"h2load failed ({out.returncode}): {out.stderr or out.stdout}")
        rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    status = np.array([int(r[1]) for r in rows], dtype=np.int64)
    micros = np.array([int(r[2]) for r in rows], dtype=np.float64)
    ok = (status >= 200) & (status < 300)
    # requests h2load gave up on (reset, timed out) are not in the log
    match = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, "
                      r"\d+ failed, (\d+) errored, (\d+) timeout", out.stdout)
    lost = int(match.group(1)) + int(match.group(2)) if match else 0
    took = re.search(r"finished in ([\d.]+)(ms|s),", out.stdout)
    took_s = (float(took.group(1)) / (1000 if took.group(2) == "ms" else 1) if took
              else duration_s or 0.0)
    return (int(np.count_nonzero(ok)), int(np.count_nonzero(~ok)) + lost,
            _percentiles(micros[ok] / 1e3), took_s)


def _wrk(url: str, request: Request, connections: int, duration_s: float
         ) -> tuple[int, int, tuple[float, float, float]]:
    """(answered, failed, percentiles over all requests) of one wrk run."""
    with _request_body("wrk", request) as body:
        lua = body.with_name("request.lua")
        headers = "".join(
            f'wrk.headers["{h.split(":", 1)[0]}"] = "{h.split(":", 1)[1].strip()}"\n'
            for h in request.headers)
        lua.write_text(f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*all")\n'
                       f'f:close()\nwrk.method = "POST"\n{headers}')
        threads = 1 if connections == 1 else 2
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--latency",
               "-s", str(lua), url.rstrip("/") + request.path]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             timeout=duration_s + 60).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    failed = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(int(g) for g in errors.groups()) if errors else 0)
    quantiles = tuple(_ms(re.search(rf"^\s+{q}%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
                      for q in (50, 90, 99))
    return total - (int(non_2xx.group(1)) if non_2xx else 0), failed, quantiles  # type: ignore[return-value]


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def closed(base_url: str, request: Request, connections: int, duration_s: float) -> Result:
    """A closed loop of `connections`: wrk over HTTP/1.1, h2load over gRPC.

    wrk is the HTTP client because h2load stalls on servers that close connections (the naive
    Flask server speaks HTTP/1.0); on Triton the two agree (bench/suite.py prints both).
    """
    if request.protocol == "grpc":
        return closed_h2load(base_url, request, connections, duration_s)
    completed, failed, (p50, p90, p99) = _wrk(base_url, request, connections, duration_s)
    return Result("wrk", "closed", connections, None, duration_s, completed, failed, p50, p90,
                  p99)


def closed_h2load(base_url: str, request: Request, connections: int, duration_s: float
                  ) -> Result:
    completed, failed, (p50, p90, p99), _ = _h2load(
        base_url, request, [f"-c{connections}"], duration_s)
    return Result("h2load", "closed", connections, None, duration_s, completed, failed, p50,
                  p90, p99)


def open_loop(base_url: str, request: Request, rate: float, duration_s: float,
              connections: int | None = None) -> Result:
    """`rate` requests/s in all for about `duration_s`, spread over `connections` that each hold
    one request at a time and send on their own schedule (`--rps`).

    The connections start staggered across one period of their schedule (h2load's `-r` and
    `--rate-period`): started together, every connection fired in the same instant and the
    server saw bursts of all of them (at half its capacity: p50 45 ms instead of 2 ms).
    Default connections: what the rate needs at 150 ms per request, at least 64, at most 1,024
    (2,674 connections at 4x saturation left the run hanging on answers that never came).
    """
    if connections is None:
        connections = int(min(max(64, rate * 0.15), 1024))
    per_connection = rate / connections
    period_ms = 1000.0 / per_connection
    per_ms = max(1, math.ceil(connections / period_ms))  # connections started per millisecond
    total = connections * max(1, math.ceil(rate * duration_s / connections))
    completed, failed, (p50, p90, p99), took_s = _h2load(
        base_url, request, [f"-n{total}", f"-c{connections}", f"-r{per_ms}",
                            "--rate-period=1ms", f"--rps={per_connection:g}",
                            # a connection left without an answer (refused past saturation,
                            # half-open) is closed and its request counted as failed, instead
                            # of the run waiting for it
                            "-N2s"], None)
    return Result("h2load", "open", connections, rate, took_s, completed, failed, p50, p90,
                  p99)


_SAMPLE = re.compile(r'^(nv_inference_request_(?:success|failure))\{([^}]*)\} ([0-9.e+]+)$', re.M)


@dataclasses.dataclass
class ServerCounts:
    """tritonserver's request counters for one model (nv_inference_request_success/failure)."""

    metrics_url: str
    model: str

    def read(self) -> tuple[float, float]:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        totals = {"nv_inference_request_success": 0.0, "nv_inference_request_failure": 0.0}
        for name, labels, value in _SAMPLE.findall(text):
            if f'model="{self.model}"' in labels:
                totals[name] += float(value)
        return totals["nv_inference_request_success"], totals["nv_inference_request_failure"]

    def settled(self, timeout_s: float = 3.0) -> tuple[float, float]:
        """`read()` once two reads 100 ms apart agree: tritonserver counts a request when it
        releases it, a moment after the client has its answer, so a read right after a run can
        miss its last requests and give them to the next run."""
        deadline = time.monotonic() + timeout_s
        last = self.read()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.read()
            if now == last:
                return now
            last = now
        return last


# -- rotating KServe JSON bodies under wrk (the variants, gateway, monitoring and overload benches)

def kserve_body(customer: Mapping[str, Any]) -> str:
    """One customer as a compact KServe v2 JSON body."""
    return json.dumps({"inputs": kserve_json_inputs(customer)}, separators=(",", ":"))


def write_lua(bodies: list[str], folder: Path) -> Path:
    """A wrk script that cycles through the bodies."""
    path = folder / "bodies.lua"
    quoted = ",\n".join("[==[" + b + "]==]" for b in bodies)
    path.write_text(
        "local bodies = {\n" + quoted + "\n}\n"
        "local i = 0\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\n"
        "end\n"
    )
    return path


def run_wrk(url: str, lua: Path, connections: int, duration_s: float) -> dict[str, float]:
    """wrk with a script; raises when any request was answered with an error."""
    threads = 1 if connections == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--latency",
           "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = {
        "connections": float(connections),
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
    }
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non_2xx"] = float(errors.group(1)) if errors else 0.0
    if result["non_2xx"]:
        raise RuntimeError(f"{url} answered {result['non_2xx']:.0f} requests with an error")
    return result


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")
