"""Locust load test of Triton's ensembles over KServe v2: HTTP JSON, HTTP binary tensors, gRPC.

Requests are real held-out customers of every ensemble the repository serves (`workload.py`),
with optional shares of drifted and invalid ones; thresholds set the exit code
(`thresholds.py`); `--shape` picks a load shape (`shapes.py`). How to run: loadtests/README.md::

    locust -f loadtests/locustfile.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:8000 \
        --csv loadtests/results/run --html loadtests/results/run.html --max-p95-ms 50
    locust -f loadtests/locustfile.py TritonGrpcUser --grpc-url 127.0.0.1:8001 --headless ...
"""

from __future__ import annotations

import random
from typing import Any

import orjson
from locust import FastHttpUser, constant, task

import options
import reports
import shapes
import thresholds
from grpc_user import GrpcUser
from workload import Payload

# reports and thresholds: imported for the listeners they add.
__all__ = ["LoadShape", "TritonBinaryUser", "TritonGrpcUser", "TritonJsonUser", "reports",
           "thresholds"]

#: Header of the binary tensor extension: the length of the JSON part that precedes the tensors.
HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_HEADERS = {"Content-Type": "application/json"}

#: The shape --shape names, or None (then -u, -r and -t drive the run).
LoadShape = shapes.selected()


def judge(response: Any, payload: Payload, outputs: set[str] | None) -> None:
    """Mark a response (catch_response=True) a success when it is what the payload expects.

    A request the server must refuse succeeds on a 400, under its own name (`... [invalid,
    expect 400]`), so that the share of invalid traffic is not counted as failures while a
    wrong status, or a 200 without every output, is.
    """
    status = response.status_code
    if not status:  # no answer: Locust's ErrorResponse holds the exception
        response.failure(f"no answer: {getattr(response, 'error', None)}")
    elif payload.refused:
        if status == 400:
            response.success()
        else:
            response.failure(f"HTTP {status}, expected 400: {_start(response)}")
    elif status != 200:
        response.failure(f"HTTP {status}: {_start(response)}")
    elif outputs is None or not set(payload.outputs) <= outputs:
        response.failure(f"answer without the outputs {', '.join(payload.outputs)}: "
                         f"{_start(response)}")
    else:
        response.success()


def _start(response: Any) -> str:
    return (response.content or b"")[:200].decode(errors="replace")


def _output_names(header: bytes) -> set[str] | None:
    try:
        return {item["name"] for item in orjson.loads(header)["outputs"]}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


class TritonJsonUser(FastHttpUser):
    """KServe v2 JSON: POST /v2/models/<ensemble>/infer with the tensors as JSON lists."""

    payload_format = "json_body"
    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random()

    @task
    def infer(self) -> None:
        payload = options.workload().pick(self.rng)
        # data: bytes goes through as it is (Locust's hint says str or dict).
        with self.client.post(f"/v2/models/{payload.ensemble}/infer",
                              data=payload.json_body,  # type: ignore[arg-type]
                              headers=JSON_HEADERS, name=payload.name,
                              catch_response=True) as response:
            outputs = _output_names(response.content) if response.status_code == 200 else None
            judge(response, payload, outputs)


class TritonBinaryUser(FastHttpUser):
    """KServe v2 binary tensor extension: a JSON header, then raw tensors, both ways."""

    payload_format = "binary_body"
    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random()

    @task
    def infer(self) -> None:
        payload = options.workload().pick(self.rng)
        headers = {"Content-Type": "application/octet-stream",
                   HEADER_LENGTH: str(payload.binary_header_length)}
        with self.client.post(f"/v2/models/{payload.ensemble}/infer",
                              data=payload.binary_body,  # type: ignore[arg-type]
                              headers=headers, name=payload.name + " (binary)",
                              catch_response=True) as response:
            outputs = None
            if response.status_code == 200:
                length = (response.headers or {}).get(HEADER_LENGTH)
                if length is not None and length.isdigit():
                    outputs = _output_names((response.content or b"")[: int(length)])
            judge(response, payload, outputs)


class TritonGrpcUser(GrpcUser):
    """tritonclient's gRPC client (`--grpc-url`), gevent-safe, each call a request event."""

    wait_time = constant(0)

    def on_start(self) -> None:
        super().on_start()
        self.rng = random.Random()

    @task
    def infer_one(self) -> None:
        self.infer(options.workload().pick(self.rng))
