"""One Triton replica on the wire: `churn_packed` (wire.MODEL_NAME) over gRPC (one `grpc.aio`
channel) or HTTP (keep-alive connections, KServe's binary-tensor extension), a version of it
when asked, and what its failures mean.

Requests are built by `wire` straight from the validated rows: no tritonclient objects per call
(they cost 0.5 to 0.7 ms of CPU per call under load, profiled in docs/gateway.md, "Cost").
Failures come back as one `UpstreamError` whose `kind` says whose fault it is: `bad_request` is
the caller's (Triton's 400: the 400 of the contract); `unavailable` (a 404 included: the model
or version is not served there), `timeout` and `server` are the path's. `connection` tells a
replica that could not be reached or dropped the call (it is gone: eject it) from one that
answered with an error::

    transport = transport_for("127.0.0.1:8000", "http")
    answers = await transport.infer([row], timeout_s=1.0, version="2")   # [(0.42, "medium", "2")]
    await transport.ready(version="2", timeout_s=1.0)                   # True / False
    await transport.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import grpc
import orjson
from tritonclient.grpc import service_pb2

from tritonkit.gateway import wire
from tritonkit.gateway.errors import ErrorKind, MalformedAnswer, UpstreamError
from tritonkit.gateway.http1 import ConnectionPool, ProtocolError
from tritonkit.gateway.settings import WireProtocol
from tritonkit.gateway.wire import MODEL_NAME, Answer

__all__ = ["ErrorKind", "GrpcTransport", "HttpTransport", "Transport", "UpstreamError",
           "transport_for"]

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
#: Most HTTP connections to one Triton at once (tritonclient.http.aio's default); more wait.
HTTP_MAX_CONNECTIONS = 100


class Transport(Protocol):
    """The calls the gateway makes to one Triton."""

    url: str

    async def infer(self, rows: Sequence[Mapping[str, Any]], timeout_s: float,
                    version: str | None = None, probe: bool = False) -> list[Answer]: ...

    async def ready(self, timeout_s: float, version: str | None = None) -> bool: ...

    async def close(self) -> None: ...


def transport_for(url: str, protocol: WireProtocol) -> Transport:
    """The transport to the Triton at `url` (host:port of its gRPC or HTTP port)."""
    return GrpcTransport(url) if protocol == "grpc" else HttpTransport(url)


class GrpcTransport:
    """`GRPCInferenceService` on one channel; requests built by `wire` from Triton's schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._channel = grpc.aio.insecure_channel(url, options=_GRPC_CHANNEL_ARGS)
        self._infer = self._channel.unary_unary(
            _GRPC_SERVICE + "ModelInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelInferResponse.FromString)
        self._ready = self._channel.unary_unary(
            _GRPC_SERVICE + "ModelReady",
            request_serializer=service_pb2.ModelReadyRequest.SerializeToString,
            response_deserializer=service_pb2.ModelReadyResponse.FromString)

    async def infer(self, rows: Sequence[Mapping[str, Any]], timeout_s: float,
                    version: str | None = None, probe: bool = False) -> list[Answer]:
        try:
            response = await self._infer(wire.grpc_request(rows, version, probe=probe),
                                         timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc, self.url) from exc
        try:
            return wire.grpc_answers(response, len(rows))
        except MalformedAnswer as exc:
            raise UpstreamError("server", f"Triton at {self.url}: {exc}") from exc

    async def ready(self, timeout_s: float, version: str | None = None) -> bool:
        request = service_pb2.ModelReadyRequest(name=MODEL_NAME, version=version or "")
        try:
            response = await self._ready(request, timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(response.ready)

    async def close(self) -> None:
        await self._channel.close()


class HttpTransport:
    """KServe v2 over HTTP/1.1 with binary tensors, on keep-alive connections."""

    def __init__(self, url: str) -> None:
        self.url = url
        address = url.removeprefix("http://").rstrip("/")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or "/" in address:
            raise ValueError(f"Triton's HTTP URL must be host:port, not {url!r}")
        self._pool = ConnectionPool(host.strip("[]"), int(port),
                                    max_connections=HTTP_MAX_CONNECTIONS)

    async def infer(self, rows: Sequence[Mapping[str, Any]], timeout_s: float,
                    version: str | None = None, probe: bool = False) -> list[Answer]:
        body, header_length = wire.http_request(rows, probe=probe)
        headers = b"Content-Type: application/octet-stream\r\n%s: %d\r\n" % (
            wire.HEADER_LENGTH.encode(), header_length)
        response = await self._post(_model_path(version, b"infer"), body, headers, timeout_s)
        length = response.headers.get(wire.HEADER_LENGTH.encode())
        try:
            return wire.http_answers(response.body, int(length) if length else None, len(rows))
        except (MalformedAnswer, ValueError) as exc:
            raise UpstreamError("server", f"Triton at {self.url}: {exc}") from exc

    async def ready(self, timeout_s: float, version: str | None = None) -> bool:
        try:
            response = await self._pool.request(b"GET", _model_path(version, b"ready"),
                                                timeout_s=timeout_s)
        except (asyncio.TimeoutError, TimeoutError, OSError, ProtocolError):
            return False
        return response.status == 200

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
            raise UpstreamError("unavailable", f"cannot reach Triton at {self.url}: {exc}",
                                connection=True) from exc
        if response.status != 200:
            raise _classified(str(response.status), _http_error_message(response.body),
                              self.url)
        return response


_PATHS: dict[tuple[str | None, bytes], bytes] = {}


def _model_path(version: str | None, action: bytes) -> bytes:
    """/v2/models/churn_packed[/versions/<v>]/<action> (cached: a handful of versions)."""
    found = _PATHS.get((version, action))
    if found is None:
        middle = b"" if not version else b"/versions/" + version.encode()
        found = _PATHS[(version, action)] = (
            b"/v2/models/" + MODEL_NAME.encode() + middle + b"/" + action)
    return found


def _http_error_message(body: bytes) -> str:
    """Triton's `{"error": "..."}`, or what came instead."""
    if not body:
        return "client received an empty response from the server."
    try:
        return str(orjson.loads(body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"the answer is not Triton's error JSON: {body[:200]!r}"


def _grpc_error(exc: grpc.aio.AioRpcError, url: str) -> UpstreamError:
    error = _classified(str(exc.code()), str(exc.details() or ""), url)
    # UNAVAILABLE from the channel itself: nothing listens, or the connection dropped
    error.connection = exc.code() == grpc.StatusCode.UNAVAILABLE
    return error


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
