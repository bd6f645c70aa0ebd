#!/usr/bin/env python3
"""A trivial stand-in for Triton that answers every inference at once with a constant answer.

`calibrate.py` points the locustfile's users at it to find Locust's own ceiling: whatever
rate Locust reaches here is the most it can drive, whatever the server. HTTP (KServe v2 JSON,
and the binary extension's header) and gRPC (`ModelInfer`) on ports it picks itself, printed
as one line once both listen::

    python loadtests/trivial_server.py      # -> "http 41234 grpc 41235"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import struct
import sys
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tritonkit.tabular.contract import contract
from tritonkit.tabular.schema import KSERVE_DATATYPES

CHURN = contract("churn")
OUTPUT_DTYPES = CHURN.outputs



logger = logging.getLogger("trivial_server")

#: What the constant answer holds for each output of the churn contract.
ANSWER_VALUES = {"churn_probability": 0.5, "risk_level": "medium", "model_version": "1"}
BINARY_HEADER = b"inference-header-content-length"


def json_answer() -> bytes:
    """The KServe v2 JSON answer of one churn customer."""
    return json.dumps({
        "model_name": "churn", "model_version": "1",
        "outputs": [
            {"name": name, "datatype": KSERVE_DATATYPES[dtype], "shape": [1, 1],
             "data": [ANSWER_VALUES[name]]}
            for name, dtype in OUTPUT_DTYPES.items()
        ],
    }, separators=(",", ":")).encode()


def grpc_answer() -> service_pb2.ModelInferResponse:
    """The gRPC answer of one churn customer (raw output contents, as Triton sends them)."""
    response = service_pb2.ModelInferResponse(model_name="churn", model_version="1")
    for name, dtype in OUTPUT_DTYPES.items():
        wire = KSERVE_DATATYPES[dtype]
        response.outputs.add(name=name, datatype=wire, shape=[1, 1])
        value = ANSWER_VALUES[name]
        if wire == "BYTES":
            text = str(value).encode()  # BYTES: each element is a 4-byte length, then the bytes
            response.raw_output_contents.append(struct.pack("<I", len(text)) + text)
        else:
            response.raw_output_contents.append(np.array([[value]], dtype=np.float32).tobytes())
    return response


class ConstantHttp(asyncio.Protocol):
    """HTTP/1.1 keep-alive: reads each request (headers and Content-Length body) and answers
    200 with the constant answer; with the binary extension's header, the answer is all
    header (JSON outputs, no binary part)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            binary = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    length = int(value.strip() or 0)
                elif name == BINARY_HEADER:
                    binary = True
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            extra = (b"Inference-Header-Content-Length: %d\r\n" % len(self.answer)
                     if binary else b"")
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra
                + b"Content-Length: %d\r\n\r\n" % len(self.answer) + self.answer)


class ConstantGrpc(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self.answer = grpc_answer()

    async def ModelInfer(self, request: object, context: object) -> object:
        return self.answer


async def serve(host: str) -> None:
    loop = asyncio.get_running_loop()
    answer = json_answer()
    http = await loop.create_server(lambda: ConstantHttp(answer), host, 0)
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(ConstantGrpc(), server)
    grpc_port = server.add_insecure_port(f"{host}:0")
    await server.start()
    http_port = http.sockets[0].getsockname()[1]
    print(f"http {http_port} grpc {grpc_port}", flush=True)
    await server.wait_for_termination()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run: Any = asyncio.run
    try:
        import uvloop
        run = uvloop.run
    except ImportError:  # plain asyncio is slower, and still far faster than Locust
        pass
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
