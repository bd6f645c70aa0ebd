"""The gateway's one connection to Triton: `churn_packed` (wire.MODEL_NAME) over gRPC (one
`grpc.aio` channel) or HTTP (keep-alive connections, KServe's binary-tensor extension), created
once, every call with its own deadline, behind the breaker.

Requests are built by `wire` straight from the validated rows: no tritonclient objects per call
(they cost 0.5 to 0.7 ms of CPU per call under load, profiled in README, the public API).

Failures come back as one `UpstreamError` whose `kind` says what the gateway does with it:
`bad_request` is the caller's fault (Triton's 400: the 400 of the contract, never counted by
the breaker); `unavailable` (a 404 included: the model is not served), `timeout`, `server` and
`breaker_open` are the path's (fallback or 503)::

    upstream = TritonUpstream("127.0.0.1:8001", "grpc", timeout_s=1.0, breaker=CircuitBreaker())
    answers = await upstream.infer([row, row])      # [(0.42, "medium", "1"), ...]
    await upstream.close()
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import grpc
import orjson
from tritonclient.grpc import service_pb2

from tritonkit.gateway import wire
from tritonkit.gateway.breaker import CircuitBreaker
from tritonkit.gateway.http1 import ConnectionPool, ProtocolError
from tritonkit.gateway.wire import MODEL_NAME, Answer, MalformedAnswer

logger = logging.getLogger(__name__)

__all__ = ["MODEL_NAME", "Answer", "ErrorKind", "TritonUpstream", "UpstreamError"]

ErrorKind = Literal["bad_request", "unavailable", "timeout", "server", "breaker_open"]
#: What Triton's answers mean for the gateway. Only a refusal of the request itself (HTTP 400,
#: gRPC INVALID_ARGUMENT: a step or Triton's core naming an input) is the caller's; a model
#: Triton does not serve (404 / NOT_FOUND: unloaded, or failed to load), a refused key (403 /
#: PERMISSION_DENIED), any other 4xx and every 5xx are the path's: they count against the
#: breaker and the fallback answers.
_GRPC_KINDS: dict[str, ErrorKind] = {
    "StatusCode.INVALID_ARGUMENT": "bad_request",
    "StatusCode.UNAVAILABLE": "unavailable",
    "StatusCode.NOT_FOUND": "unavailable",
    "StatusCode.DEADLINE_EXCEEDED": "timeout",
}
_HTTP_KINDS: dict[int, ErrorKind] = {400: "bad_request", 404: "unavailable", 503: "unavailable"}
#: gRPC channel options: after Triton comes back, reconnect within a second instead of gRPC's
#: default back-off of up to two minutes (the breaker's probe would fail until then).
_GRPC_CHANNEL_ARGS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
_GRPC_SERVICE = "/inference.GRPCInferenceService/"
#: Most HTTP connections to Triton at once (tritonclient.http.aio's default); more calls wait.
HTTP_MAX_CONNECTIONS = 100


class UpstreamError(Exception):
    """A call to Triton that gave no answer; `kind` says whose fault and what to do."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message

    @property
    def counts_against_path(self) -> bool:
        """True for the failures that open the breaker (never a bad request)."""
        return self.kind in ("unavailable", "timeout", "server")

    def copy(self) -> UpstreamError:
        """A fresh instance for another waiter of the same failed call."""
        return UpstreamError(self.kind, self.message)


class _Transport(Protocol):
    async def infer(self, rows: Sequence[Mapping[str, Any]], timeout_s: float
                    ) -> list[Answer]: ...

    async def close(self) -> None: ...


class TritonUpstream:
    """Calls `churn_packed`; one instance per gateway process."""

    def __init__(self, url: str, protocol: Literal["grpc", "http"], *, timeout_s: float,
                 breaker: CircuitBreaker) -> None:
        self.url = url
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.breaker = breaker
        self._transport: _Transport = (_GrpcTransport(url) if protocol == "grpc"
                                       else _HttpTransport(url))
        self._probe_counter = itertools.count()

    async def infer(self, rows: Sequence[Mapping[str, Any]]) -> list[Answer]:
        """Answers for validated customer rows, in one Triton request, through the breaker.

        Raises:
            UpstreamError: `breaker_open` without calling Triton, or the call's failure.
        """
        if not self.breaker.allow():
            raise UpstreamError("breaker_open", "circuit breaker open: Triton is failing")
        try:
            answers = await self._transport.infer(rows, self.timeout_s)
        except UpstreamError as exc:
            if exc.counts_against_path:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()  # Triton answered: the path works
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record_success()
        return answers

    async def call(self, rows: Sequence[Mapping[str, Any]]) -> list[Answer]:
        """One Triton request, bypassing the breaker (readiness probes use it directly)."""
        return await self._transport.infer(rows, self.timeout_s)

    async def probe(self, customer: Mapping[str, Any]) -> tuple[bool, str]:
        """A real inference for readiness: (ok, detail). The customer's tenure is made unique
        per probe, so that Triton's response cache cannot answer it (a dead python stub would
        go unnoticed behind a cached answer)."""
        row = dict(customer)
        row["tenure"] = 100.0 + (next(self._probe_counter) % 100_000) / 1000.0
        started = time.perf_counter()
        try:
            answers = await self.call([row])
        except UpstreamError as exc:
            return False, f"{exc.kind}: {exc.message}"
        elapsed_ms = (time.perf_counter() - started) * 1e3
        return True, f"model_version {answers[0][2]} answered in {elapsed_ms:.1f} ms"

    async def close(self) -> None:
        await self._transport.close()


class _GrpcTransport:
    """`GRPCInferenceService` on one channel; requests built by `wire` from Triton's schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._channel = grpc.aio.insecure_channel(url, options=_GRPC_CHANNEL_ARGS)
        self._infer = self._channel.unary_unary(
            _GRPC_SERVICE + "ModelInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelInferResponse.FromString)

    async def infer(self, rows: Sequence[Mapping[str, Any]], timeout_s: float
                    ) -> list[Answer]:
        try:
            response = await self._infer(wire.grpc_request(rows), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc, self.url) from exc
        try:
            return wire.grpc_answers(response, len(rows))
        except MalformedAnswer as exc:
            raise UpstreamError("server", f"Triton at {self.url}: {exc}") from exc

    async def close(self) -> None:
        await self._channel.close()


class _HttpTransport:
    """KServe v2 over HTTP/1.1 with binary tensors, on keep-alive connections."""

    _INFER_PATH = f"/v2/models/{MODEL_NAME}/infer".encode()

    def __init__(self, url: str) -> None:
        self.url = url
        address = url.removeprefix("http://").rstrip("/")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or "/" in address:
            raise ValueError(f"Triton's HTTP URL must be host:port, not {url!r}")
        self._pool = ConnectionPool(host.strip("[]"), int(port),
                                    max_connections=HTTP_MAX_CONNECTIONS)

    async def infer(self, rows: Sequence[Mapping[str, Any]], timeout_s: float
                    ) -> list[Answer]:
        body, header_length = wire.http_request(rows)
        headers = b"Content-Type: application/octet-stream\r\n%s: %d\r\n" % (
            wire.HEADER_LENGTH.encode(), header_length)
        response = await self._post(self._INFER_PATH, body, headers, timeout_s)
        length = response.headers.get(wire.HEADER_LENGTH.encode())
        try:
            return wire.http_answers(response.body, int(length) if length else None, len(rows))
        except (MalformedAnswer, ValueError) as exc:
            raise UpstreamError("server", f"Triton at {self.url}: {exc}") from exc

    async def close(self) -> None:
        await self._pool.close()

    async def _post(self, path: bytes, body: bytes, headers: bytes, timeout_s: float) -> Any:
        try:
            response = await self._pool.request(b"POST", path, body, headers=headers,
                                                timeout_s=timeout_s)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise UpstreamError(
                "timeout", f"Triton at {self.url} did not answer within {timeout_s:g} s"
            ) from exc
        except (OSError, ProtocolError) as exc:
            raise UpstreamError("unavailable", f"cannot reach Triton at {self.url}: {exc}"
                                ) from exc
        if response.status != 200:
            raise _classified(str(response.status), _http_error_message(response.body),
                              self.url)
        return response


def _http_error_message(body: bytes) -> str:
    """Triton's `{"error": "..."}`, or what came instead."""
    if not body:
        return "client received an empty response from the server."
    try:
        return str(orjson.loads(body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"the answer is not Triton's error JSON: {body[:200]!r}"


def _grpc_error(exc: grpc.aio.AioRpcError, url: str) -> UpstreamError:
    return _classified(str(exc.code()), str(exc.details() or ""), url)


def _classified(status: str, message: str, url: str) -> UpstreamError:
    """Triton's error as the gateway sees it: the caller's fault, or the path's."""
    message = " ".join(message.split())
    kind: ErrorKind
    if status in _GRPC_KINDS:
        kind = _GRPC_KINDS[status]
    elif status.isdigit():
        kind = _HTTP_KINDS.get(int(status), "server")
    else:  # any other gRPC status
        kind = "server"
    return UpstreamError(kind, f"Triton at {url}: {message}")
