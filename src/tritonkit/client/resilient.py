"""Resilient callers of the churn model: the gateway's `/predict`, or Triton directly.

Both get the same policy: a connect and a per-attempt timeout, an overall deadline, retries
with jittered exponential back-off (tenacity) only on connection errors, timeouts, 503 and 429
(whose Retry-After is honoured), never on other 4xx; a circuit breaker; and, optionally, the
local fallback model, whose answers are marked `degraded` with its own `model_version`::

    client = GatewayClient("https://127.0.0.1:8080", api_key, cafile=Path(".cache/certs/cert.pem"),
                           fallback=FallbackModel.load(TabularArtifacts.for_version(1).fallback))
    answer = client.predict("7590-VHVEG", features)   # Prediction(..., degraded=False)
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_random_exponential

from tritonkit.client.breaker import CircuitBreaker
from tritonkit.client.churn import ChurnClient, Prediction
from tritonkit.client.fallback import FallbackModel
from tritonkit.client.triton import WireProtocol
from tritonkit.errors import CustomerError, ServerError, ServerUnavailableError, TritonKitError

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard a client tries. KServe's own gRPC client: 3 attempts, 0.1 s → 1 s back-off."""

    attempts: int = 3
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 1.0
    #: everything, retries and waits included, ends by then
    deadline_s: float = 5.0
    connect_timeout_s: float = 1.0
    attempt_timeout_s: float = 2.0
    #: a Retry-After longer than this is not waited for (the call fails instead)
    max_retry_after_s: float = 10.0


class RetryableError(ServerUnavailableError):
    """An attempt that may succeed if repeated: connection error, timeout, 503 or 429."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CircuitOpenError(ServerUnavailableError):
    """The client's breaker is open: the server failed repeatedly, no request was sent."""


class _PathFailure(TritonKitError):
    """A 5xx that is not 503: counted by the breaker, not retried."""


class _Wait:
    """Jittered exponential back-off, or the server's Retry-After when it sent one."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._jitter = wait_random_exponential(multiplier=policy.backoff_initial_s,
                                               max=policy.backoff_max_s)

    def __call__(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableError) and exc.retry_after_s is not None:
            return float(exc.retry_after_s)
        return float(self._jitter(state))


def call_resilient(attempt: Callable[[float], T], *, policy: RetryPolicy,
                   breaker: CircuitBreaker, sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `attempt(timeout_s)` under the policy and the breaker.

    `attempt` raises RetryableError (retried), _PathFailure (a 5xx: counted, not retried) or
    any other error (the caller's fault: neither retried nor counted).
    """
    deadline = time.monotonic() + policy.deadline_s

    def once() -> T:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerUnavailableError(f"deadline of {policy.deadline_s:g} s passed")
        if not breaker.allow():
            raise CircuitOpenError(
                f"circuit breaker open after repeated failures; next try in "
                f"{breaker.retry_after_s:.1f} s")
        try:
            result = attempt(min(policy.attempt_timeout_s, remaining))
        except (RetryableError, _PathFailure):
            breaker.record_failure()
            raise
        except BaseException:
            breaker.record_success()  # the server answered: the path works
            raise
        breaker.record_success()
        return result

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.deadline_s),
        wait=_Wait(policy), retry=retry_if_exception_type(RetryableError), reraise=True,
        sleep=sleep,
    )
    try:
        return retrying(once)
    except _PathFailure as exc:
        raise ServerError(str(exc)) from exc


class GatewayClient:
    """Calls the gateway over HTTP(S) with one kept-alive connection (not thread-safe)."""

    def __init__(self, url: str, api_key: str, *, policy: RetryPolicy | None = None,
                 breaker: CircuitBreaker | None = None, fallback: FallbackModel | None = None,
                 cafile: Path | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"gateway URL must be http(s)://host:port, not {url!r}")
        self.url = url.rstrip("/")
        self._host = parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._tls = (ssl.create_default_context(cafile=str(cafile) if cafile else None)
                     if parsed.scheme == "https" else None)
        self._headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
        self.policy = policy or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self.fallback = fallback
        self._sleep = sleep
        self._connection: http.client.HTTPConnection | None = None

    def predict(self, customer_id: str, features: Mapping[str, Any]) -> Prediction:
        """One customer's answer, from the gateway or (degraded) the local fallback."""
        body = {"customer_id": customer_id, "features": dict(features)}
        try:
            answer = self._call("/predict", body)
        except ServerUnavailableError:
            if self.fallback is None:
                raise
            return self._fallback(customer_id, features)
        return Prediction(**answer)

    def predict_batch(self, customers: Sequence[tuple[str, Mapping[str, Any]]]
                      ) -> list[Prediction]:
        """Answers for (customer_id, features) pairs, in one request to the gateway."""
        body = {"customers": [{"customer_id": c, "features": dict(f)} for c, f in customers]}
        try:
            answer = self._call("/predict/batch", body)
        except ServerUnavailableError:
            if self.fallback is None:
                raise
            return [self._fallback(c, f) for c, f in customers]
        return [Prediction(**p) for p in answer["predictions"]]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fallback(self, customer_id: str, features: Mapping[str, Any]) -> Prediction:
        assert self.fallback is not None
        probability, risk = self.fallback.predict_one(features)
        return Prediction(customer_id, probability, risk, self.fallback.version, True)

    def _call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        return call_resilient(lambda timeout_s: self._attempt(path, payload, timeout_s),
                              policy=self.policy, breaker=self.breaker, sleep=self._sleep)

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            timeout = self.policy.connect_timeout_s
            connection = (
                http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                            context=self._tls)
                if self._tls is not None else
                http.client.HTTPConnection(self._host, self._port, timeout=timeout))
            connection.connect()  # under the connect timeout
            self._connection = connection
        return self._connection

    def _attempt(self, path: str, payload: bytes, timeout_s: float) -> dict[str, Any]:
        where = f"the gateway at {self.url}"
        try:
            connection = self._connect()
            assert connection.sock is not None
            connection.sock.settimeout(timeout_s)
            connection.request("POST", path, body=payload, headers=self._headers)
            response = connection.getresponse()
            status, data = response.status, response.read()
            retry_after = response.getheader("Retry-After")
        except TimeoutError as exc:  # socket.timeout too
            self.close()
            raise RetryableError(f"{where} did not answer within {timeout_s:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise RetryableError(f"cannot reach {where}: {exc}") from exc
        if status == 200:
            return dict(json.loads(data))
        message = _message(data)
        if status in (429, 503):
            wait = _retry_after(retry_after)
            if wait is not None and wait > self.policy.max_retry_after_s:
                raise ServerUnavailableError(
                    f"{where} answered {status} and asks to wait {wait:g} s, longer than "
                    f"max_retry_after_s: {message}")
            raise RetryableError(f"{where} answered {status}: {message}", wait)
        if status >= 500:
            raise _PathFailure(f"{where} answered {status}: {message}")
        if status in (400, 413):
            raise CustomerError(f"{where} refused the request ({status}): {message}")
        raise ServerError(f"{where} answered {status}: {message}", bad_request=True)


def _retry_after(header: str | None) -> float | None:
    """Seconds of a Retry-After header (delta-seconds form); None if absent or unreadable."""
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def _message(data: bytes) -> str:
    """An error body's message and problems, on one line."""
    try:
        body = json.loads(data)
    except ValueError:
        return " ".join(data.decode(errors="replace").split())[:300]
    if not isinstance(body, dict):
        return str(body)[:300]
    problems = "; ".join(f"{p.get('field')}: {p.get('message')}"
                         for p in body.get("problems", []) if isinstance(p, dict))
    text = str(body.get("message", body))
    return f"{text} ({problems})" if problems else text


class ResilientChurnClient:
    """`ChurnClient` (Triton directly, HTTP or gRPC) under the same retry policy and breaker.

    Each attempt is one `ChurnClient.predict` of every customer, bounded by the policy's
    attempt timeout; with a fallback, customers are answered locally while Triton cannot.
    """

    def __init__(self, url: str, protocol: WireProtocol = "http", *,
                 policy: RetryPolicy | None = None, breaker: CircuitBreaker | None = None,
                 fallback: FallbackModel | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy = policy or RetryPolicy()
        self.client = ChurnClient(url, protocol=protocol, timeout_s=self.policy.attempt_timeout_s)
        self.breaker = breaker or CircuitBreaker()
        self.fallback = fallback
        self._sleep = sleep

    def predict(self, customers: Sequence[Mapping[str, Any]], batch_size: int = 64
                ) -> list[Prediction]:
        """Like `ChurnClient.predict`; fallback answers carry the fallback's model_version and
        `degraded=True`."""
        try:
            return call_resilient(lambda _timeout_s: self._attempt(customers, batch_size),
                                  policy=self.policy, breaker=self.breaker, sleep=self._sleep)
        except ServerUnavailableError:
            if self.fallback is None:
                raise
            return [
                Prediction(customer_id=str(row.get("customerid", i)), churn_probability=p,
                           risk_level=risk, model_version=self.fallback.version, degraded=True)
                for i, (row, (p, risk)) in enumerate(
                    zip(customers, self.fallback.predict(customers), strict=True))
            ]

    def _attempt(self, customers: Sequence[Mapping[str, Any]], batch_size: int
                 ) -> list[Prediction]:
        try:
            return self.client.predict(customers, batch_size=batch_size)
        except ServerUnavailableError as exc:
            raise RetryableError(str(exc)) from exc
        except ServerError as exc:
            if exc.bad_request:
                raise
            if _status(exc) in ("503", "StatusCode.UNAVAILABLE"):
                raise RetryableError(str(exc)) from exc
            raise _PathFailure(str(exc)) from exc

    def close(self) -> None:
        self.client.close()


def _status(exc: BaseException) -> str:
    """The status tritonclient attached to the cause of a ServerError."""
    cause = exc.__cause__
    status = getattr(cause, "status", None)
    return str(status() or "") if callable(status) else ""
