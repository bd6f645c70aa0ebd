"""The gateway's one connection to Triton: the `churn` ensemble through tritonclient's asyncio
clients (gRPC or HTTP), created once, every call with its own deadline, behind the breaker.

Failures come back as one `UpstreamError` whose `kind` says what the gateway does with it:
`bad_request` is the caller's fault (400, never counted by the breaker); `unavailable`,
`timeout`, `server` and `breaker_open` are the path's (fallback or 503)::

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
from typing import Any, Literal

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonkit.features import (
    ALL_FEATURES,
    CATEGORICAL_FEATURES,
    KSERVE_DATATYPES,
    NUMPY_DTYPES,
    OUTPUT_DTYPES,
    TRITON_DTYPES,
)
from tritonkit.gateway.breaker import CircuitBreaker

logger = logging.getLogger(__name__)

MODEL_NAME = "churn"
Answer = tuple[float, str, str]  # (churn_probability, risk_level, model_version)
ErrorKind = Literal["bad_request", "unavailable", "timeout", "server", "breaker_open"]
#: gRPC status codes and what they mean for the gateway.
_GRPC_KINDS: dict[str, ErrorKind] = {
    "StatusCode.INVALID_ARGUMENT": "bad_request",
    "StatusCode.UNAVAILABLE": "unavailable",
    "StatusCode.DEADLINE_EXCEEDED": "timeout",
}
#: gRPC channel options: after Triton comes back, reconnect within a second instead of gRPC's
#: default back-off of up to two minutes (the breaker's probe would fail until then).
_GRPC_CHANNEL_ARGS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


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


class TritonUpstream:
    """Calls the `churn` ensemble; one instance per gateway process."""

    def __init__(self, url: str, protocol: Literal["grpc", "http"], *, timeout_s: float,
                 breaker: CircuitBreaker) -> None:
        self.url = url
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.breaker = breaker
        if protocol == "grpc":
            import tritonclient.grpc as module
            import tritonclient.grpc.aio as aio
            self._client: Any = aio.InferenceServerClient(url, channel_args=_GRPC_CHANNEL_ARGS)
        else:
            import tritonclient.http as module
            import tritonclient.http.aio as aio
            self._client = aio.InferenceServerClient(url, conn_timeout=timeout_s)
        self._module: Any = module
        self._outputs = [module.InferRequestedOutput(name) for name in OUTPUT_DTYPES]
        self._probe_counter = itertools.count()

    async def infer(self, rows: Sequence[Mapping[str, Any]]) -> list[Answer]:
        """Answers for validated customer rows, in one Triton request, through the breaker.

        Raises:
            UpstreamError: `breaker_open` without calling Triton, or the call's failure.
        """
        if not self.breaker.allow():
            raise UpstreamError("breaker_open", "circuit breaker open: Triton is failing")
        try:
            answers = await self.call(rows)
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
        inputs = self._inputs(rows)
        try:
            if self.protocol == "grpc":
                result = await self._client.infer(
                    MODEL_NAME, inputs, outputs=self._outputs, client_timeout=self.timeout_s)
            else:
                result = await asyncio.wait_for(
                    self._client.infer(MODEL_NAME, inputs, outputs=self._outputs),
                    self.timeout_s)
        except InferenceServerException as exc:
            raise _classified(exc, self.url) from exc
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise UpstreamError(
                "timeout", f"Triton at {self.url} did not answer within {self.timeout_s:g} s"
            ) from exc
        except (OSError, ConnectionError) as exc:
            raise UpstreamError("unavailable", f"cannot reach Triton at {self.url}: {exc}") from exc
        except Exception as exc:  # aiohttp's ClientError and friends: the path, not the caller
            if type(exc).__module__.startswith("aiohttp"):
                raise UpstreamError(
                    "unavailable", f"cannot reach Triton at {self.url}: {exc}") from exc
            raise
        probabilities = result.as_numpy("churn_probability").reshape(-1)
        risks = result.as_numpy("risk_level").reshape(-1)
        versions = result.as_numpy("model_version").reshape(-1)
        return [
            (float(p), _text(r), _text(v))
            for p, r, v in zip(probabilities, risks, versions, strict=True)
        ]

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

    async def load_model(self, name: str) -> None:
        """Ask Triton to (re)load a model (its repository API); e.g. to restart a dead stub."""
        try:
            await self._client.load_model(name)
        except InferenceServerException as exc:
            raise _classified(exc, self.url) from exc

    async def close(self) -> None:
        await self._client.close()

    def _inputs(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        size = len(rows)
        inputs = []
        for name in ALL_FEATURES:
            if name in CATEGORICAL_FEATURES:
                array = np.array([str(r[name]).encode() for r in rows],
                                 dtype=np.object_).reshape(size, 1)
            else:
                array = np.array([r[name] for r in rows],
                                 dtype=NUMPY_DTYPES[name]).reshape(size, 1)
            item = self._module.InferInput(name, [size, 1], KSERVE_DATATYPES[TRITON_DTYPES[name]])
            item.set_data_from_numpy(array)
            inputs.append(item)
        return inputs


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _classified(exc: InferenceServerException, url: str) -> UpstreamError:
    """Triton's error as the gateway sees it: the caller's fault, or the path's."""
    status = str(exc.status() or "")
    message = " ".join(str(exc.message()).split())
    kind: ErrorKind
    if status in _GRPC_KINDS:
        kind = _GRPC_KINDS[status]
    elif status.isdigit():
        code = int(status)
        kind = ("unavailable" if code == 503 else
                "bad_request" if 400 <= code < 500 else "server")
    elif status.startswith("StatusCode."):
        kind = "server"
    else:  # no status: tritonclient wrapping a transport failure
        kind = "unavailable"
    return UpstreamError(kind, f"Triton at {url}: {message}")
