"""The client library's retries, deadline, breaker and fallback against a real local HTTP
server that injects latency, 503 and 429 (with Retry-After) on cue, and against a port where
nothing listens (a real refused connection)."""

from __future__ import annotations

import collections
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tritonkit.client.breaker import BreakerState, CircuitBreaker
from tritonkit.client.fallback import FallbackModel
from tritonkit.client.resilient import (
    CircuitOpenError,
    GatewayClient,
    ResilientChurnClient,
    RetryPolicy,
)
from tritonkit.errors import CustomerError, ServerError, ServerUnavailableError
from tritonkit.serve.ports import free_port
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.contract import contract

CHURN = contract("churn")
ALL_FEATURES = CHURN.features



ANSWER = {"customer_id": "c1", "churn_probability": 0.25, "risk_level": "low",
          "model_version": "1", "degraded": False}


class FaultyServer:
    """A gateway stand-in on port 0: each request takes the next scripted fault, then 200."""

    def __init__(self) -> None:
        self.script: collections.deque[tuple[str, Any]] = collections.deque()
        self.arrivals: list[float] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.arrivals.append(time.monotonic())
                fault, value = outer.script.popleft() if outer.script else ("ok", None)
                headers: dict[str, str] = {}
                if fault == "sleep":
                    time.sleep(value)
                    status, body = 200, ANSWER
                elif fault == "ok":
                    status, body = 200, ANSWER
                else:
                    status, retry_after = value
                    body = {"error": fault, "message": f"injected {status}", "problems": []}
                    if retry_after is not None:
                        headers["Retry-After"] = str(retry_after)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, text in headers.items():
                        self.send_header(name, text)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on this attempt

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def then(self, *faults: tuple[str, Any]) -> FaultyServer:
        self.script.extend(faults)
        return self


@pytest.fixture
def faulty() -> Iterator[FaultyServer]:
    server = FaultyServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def make_client() -> Iterator[Any]:
    """GatewayClient(...) that is closed after the test (its kept-alive socket)."""
    made: list[GatewayClient] = []

    def make(*args: Any, **kwargs: Any) -> GatewayClient:
        made.append(GatewayClient(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture(scope="module")
def fallback(artifacts: TabularArtifacts) -> FallbackModel:
    return FallbackModel.load(artifacts.fallback)


def _features(customers: list[dict[str, Any]]) -> dict[str, Any]:
    return {name: customers[0][name] for name in ALL_FEATURES}


FAST = RetryPolicy(attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05, deadline_s=5.0,
                   connect_timeout_s=0.5, attempt_timeout_s=0.5)


def test_client_retries_when_server_answers_503_then_recovers(
        faulty: FaultyServer, make_client: Any, customers: list[dict[str, Any]]) -> None:
    faulty.then(("unavailable", (503, None)), ("unavailable", (503, None)))
    client = make_client(faulty.url, "key", policy=FAST)
    assert client.predict("c1", _features(customers)).model_version == "1"
    assert len(faulty.arrivals) == 3


def test_client_waits_for_retry_after_when_server_answers_429(
        faulty: FaultyServer, make_client: Any, customers: list[dict[str, Any]]) -> None:
    faulty.then(("rate_limited", (429, 1)))
    client = make_client(faulty.url, "key", policy=FAST)
    assert client.predict("c1", _features(customers)).churn_probability == 0.25
    assert len(faulty.arrivals) == 2
    assert faulty.arrivals[1] - faulty.arrivals[0] >= 0.95  # the header, not the 0.05 s back-off


def test_client_retries_a_slow_attempt_when_latency_exceeds_the_attempt_timeout(
        faulty: FaultyServer, make_client: Any, customers: list[dict[str, Any]]) -> None:
    faulty.then(("sleep", 1.0))
    client = make_client(faulty.url, "key", policy=FAST)
    started = time.monotonic()
    assert client.predict("c1", _features(customers)).model_version == "1"
    assert len(faulty.arrivals) == 2
    assert time.monotonic() - started < 1.0  # it did not wait for the slow answer


@pytest.mark.parametrize(("status", "error"), [(400, CustomerError), (401, ServerError),
                                               (403, ServerError)])
def test_client_never_retries_when_server_answers_a_client_error(
        faulty: FaultyServer, make_client: Any, customers: list[dict[str, Any]], status: int,
        error: type[Exception]) -> None:
    faulty.then(("refused", (status, None)))
    client = make_client(faulty.url, "key", policy=FAST)
    with pytest.raises(error, match=str(status)):
        client.predict("c1", _features(customers))
    assert len(faulty.arrivals) == 1
    assert client.breaker.state is BreakerState.CLOSED


def test_client_gives_up_at_the_deadline_when_server_keeps_failing(
        faulty: FaultyServer, make_client: Any, customers: list[dict[str, Any]]) -> None:
    faulty.then(*[("unavailable", (503, 2))] * 10)
    policy = RetryPolicy(attempts=10, deadline_s=1.0, attempt_timeout_s=0.5)
    client = make_client(faulty.url, "key", policy=policy)
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="503"):
        client.predict("c1", _features(customers))
    assert time.monotonic() - started < 1.0  # a Retry-After past the deadline is not waited for
    assert len(faulty.arrivals) == 1


def test_client_opens_its_breaker_and_answers_from_the_fallback_when_server_keeps_failing(
        faulty: FaultyServer, make_client: Any, customers: list[dict[str, Any]],
        fallback: FallbackModel) -> None:
    faulty.then(*[("unavailable", (503, None))] * 4)
    breaker = CircuitBreaker(failure_threshold=4, reset_timeout_s=0.5)
    client = make_client(faulty.url, "key", policy=FAST, breaker=breaker, fallback=fallback)
    features = _features(customers)
    first = client.predict("c1", features)          # 3 attempts, all 503: fallback
    assert first.degraded and first.model_version == "1-fallback"
    assert first.churn_probability == pytest.approx(fallback.probability(features))
    second = client.predict("c1", features)         # 4th failure opens the breaker
    assert second.degraded and breaker.state is BreakerState.OPEN
    seen = len(faulty.arrivals)
    assert client.predict("c1", features).degraded  # answered locally: nothing sent
    assert len(faulty.arrivals) == seen
    time.sleep(0.55)                                # cool-down: one probe, which succeeds
    assert client.predict("c1", features).degraded is False
    assert breaker.state is BreakerState.CLOSED


def test_client_raises_circuit_open_when_there_is_no_fallback(
        faulty: FaultyServer, make_client: Any, customers: list[dict[str, Any]]) -> None:
    faulty.then(*[("unavailable", (503, None))] * 3)
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=60)
    client = make_client(faulty.url, "key", policy=FAST, breaker=breaker)
    with pytest.raises(ServerUnavailableError):
        client.predict("c1", _features(customers))
    with pytest.raises(CircuitOpenError):
        client.predict("c1", _features(customers))


def test_client_does_not_retry_a_500_when_the_server_fails_on_the_request(
        faulty: FaultyServer, make_client: Any, customers: list[dict[str, Any]]) -> None:
    faulty.then(("internal", (500, None)))
    client = make_client(faulty.url, "key", policy=FAST)
    with pytest.raises(ServerError, match="500"):
        client.predict("c1", _features(customers))
    assert len(faulty.arrivals) == 1


def test_triton_client_retries_and_falls_back_when_nothing_listens(
        customers: list[dict[str, Any]], fallback: FallbackModel) -> None:
    sleeps: list[float] = []
    client = ResilientChurnClient(f"127.0.0.1:{free_port()}", "http", policy=FAST,
                                  fallback=fallback, sleep=sleeps.append)
    answers = client.predict(customers[:3])
    assert len(sleeps) == 2  # three attempts, jittered waits between them
    assert all(a.degraded and a.model_version == "1-fallback" for a in answers)
    assert [a.customer_id for a in answers] == [c["customerid"] for c in customers[:3]]
    client.close()
