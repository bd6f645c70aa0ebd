"""A Locust user that calls Triton over gRPC with tritonclient's client, made gevent-safe.

grpcio waits for an answer inside its C core, which gevent cannot switch away from: without
help, one user's call stops every other user of the process (measured: 8 users calling one
after another). `grpc.experimental.gevent.init_gevent()`, called here before any channel
exists, makes grpcio yield to gevent's hub instead. Each call is reported to Locust as a
request event of type `gRPC`::

    class TritonGrpcUser(GrpcUser):
        @task
        def infer_one(self) -> None:
            self.infer(payload)
"""

from __future__ import annotations

import time
from typing import Any

import grpc.experimental.gevent as grpc_gevent
import tritonclient.grpc
from locust import User
from locust.env import Environment
from tritonclient.utils import InferenceServerException

import options
from workload import Payload

grpc_gevent.init_gevent()

#: The status Triton answers a request it refuses (HTTP 400) with over gRPC.
REFUSED = "StatusCode.INVALID_ARGUMENT"


class UnexpectedAnswer(Exception):
    """An answer that is not the one the request should get (a Locust failure)."""


class GrpcUser(User):
    """Base of users that call Triton's gRPC endpoint (`--grpc-url`); one client per user."""

    abstract = True
    #: What `Workload.prepare` builds before the load starts.
    payload_format = "grpc_inputs"
    timeout_s = 60.0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.url = options.grpc_url(environment)
        self.client: Any = None

    def on_start(self) -> None:
        self.client = tritonclient.grpc.InferenceServerClient(self.url)

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def infer(self, payload: Payload) -> None:
        """One inference, reported as a success when Triton answers as `payload` expects: the
        outputs for a valid request, INVALID_ARGUMENT for one it must refuse."""
        start_time = time.time()
        start = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            result = self.client.infer(payload.ensemble, payload.grpc_inputs,
                                       client_timeout=self.timeout_s)
            response = result.get_response()
            length = response.ByteSize()
            if payload.refused:
                exception = UnexpectedAnswer(f"answered; expected {REFUSED}")
            elif len(response.outputs) != len(payload.outputs):
                exception = UnexpectedAnswer(
                    f"{len(response.outputs)} outputs; expected {len(payload.outputs)}")
        except InferenceServerException as exc:
            if not (payload.refused and str(exc.status()) == REFUSED):
                exception = exc
        self.environment.events.request.fire(
            request_type="gRPC", name=payload.name,
            response_time=(time.perf_counter() - start) * 1000.0, response_length=length,
            response=None, context={}, exception=exception, start_time=start_time,
            url=f"{self.url}/{payload.ensemble}",
        )
