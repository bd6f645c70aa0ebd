"""Limits that limit, on the real gateway (uvicorn in a thread) in front of a real
tritonserver: the rate limits count customers, a request the global limit refuses costs its key
nothing, requests without a valid key are limited per client address, and a full coalescer
answers 503 with Retry-After while the calls it holds are answered."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tritonkit.gateway.auth import add_key, ensure_dev_keys
from tritonkit.serve.server import TritonServer

from ..support import serve
from .test_gateway import RunningGateway, _settings, request_for

#: Limits per hour: a test's calls all fall in one window but for a 1-in-1000 chance (a
#: sliding window that turns weighs the previous one a little less, and lets one more through).
HOUR = "/hour"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("limit-keys") / "keys.json"
    found: dict[str, Any] = dict(ensure_dev_keys(path))
    found["other"] = add_key(path, name="other")
    found["file"] = path
    return found


def _batch(customers: list[dict[str, Any]], count: int) -> dict[str, Any]:
    return {"customers": [request_for(c) for c in customers[:count]]}


def _call_from(running: RunningGateway, source: str, path: str, body: Any = None,
               key: str | None = None) -> tuple[int, dict[str, str], Any]:
    """One plain-HTTP request from the local address `source` (127.0.0.0/8 is all loopback)."""
    port = int(running.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                            source_address=(source, 0))
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    try:
        connection.request("POST" if body is not None else "GET", path,
                           body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            json.loads(response.read())
    finally:
        connection.close()


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# -- rate limits count customers ----------------------------------------------------------------
def test_gateway_charges_a_batch_one_hit_per_customer_when_a_key_has_a_rate_limit(
        triton: TritonServer, keys: dict[str, Any], customers: list[dict[str, Any]]) -> None:
    settings = _settings(triton.grpc_url, keys, None, rate_limit_per_key="300" + HOUR)
    with RunningGateway(settings, cafile=None) as running:
        status, _, answer = running.call("/predict/batch", _batch(customers, 256), keys["caller"])
        assert status == 200 and len(answer["predictions"]) == 256
        status, headers, answer = running.call("/predict/batch", _batch(customers, 256),
                                               keys["caller"])
        assert status == 429 and answer["error"] == "rate_limited", answer
        assert "this API key's rate limit of 300 per 1 hour is exceeded" in answer["message"]
        assert int(headers["retry-after"]) >= 1
        # what is left: 300 - 256 - 1 (the refused batch paid for its first customer on arrival)
        status, _, answer = running.call("/predict/batch", _batch(customers, 43), keys["caller"])
        assert status == 200, answer
        assert running.call("/predict", request_for(customers[0]), keys["caller"])[0] == 429
        assert running.call("/predict", request_for(customers[0]), keys["other"])[0] == 200
        assert running.metric("gateway_ratelimit_rejections_total", scope="key") == 2


def test_gateway_answers_429_saying_so_when_a_batch_is_larger_than_the_limit_allows(
        triton: TritonServer, keys: dict[str, Any], customers: list[dict[str, Any]]) -> None:
    settings = _settings(triton.grpc_url, keys, None, rate_limit_per_key="100" + HOUR)
    with RunningGateway(settings, cafile=None) as running:
        status, headers, answer = running.call("/predict/batch", _batch(customers, 101),
                                               keys["caller"])
        assert status == 429 and answer["error"] == "rate_limited", answer
        assert "more than it allows at all" in answer["message"]
        assert "send at most 100 customers per request" in answer["message"]
        assert "retry-after" not in {name.lower() for name in headers}  # waiting cannot help
        # 98 more fit: the refused batch paid for its first customer
        status, _, answer = running.call("/predict/batch", _batch(customers, 99), keys["caller"])
        assert status == 200 and len(answer["predictions"]) == 99


def test_gateway_charges_the_key_nothing_when_the_global_limit_refuses(
        triton: TritonServer, keys: dict[str, Any], customers: list[dict[str, Any]]) -> None:
    settings = _settings(triton.grpc_url, keys, None, rate_limit_per_key="10" + HOUR,
                         rate_limit_global="25" + HOUR)
    with RunningGateway(settings, cafile=None) as running:
        for key in (keys["other"], keys["admin"]):  # 20 of the gateway's 25
            assert running.call("/predict/batch", _batch(customers, 10), key)[0] == 200
        # Refused for its other customers once parsed: each attempt more than a key has left
        # if the refusals were charged to it.
        for _ in range(3):
            status, _, answer = running.call("/predict/batch", _batch(customers, 10),
                                             keys["caller"])
            assert status == 429 and "the gateway's overall rate limit" in answer["message"]
        status, _, answer = running.call("/predict/batch", _batch(customers, 2), keys["caller"])
        assert status == 200, answer  # the gateway is now full: 20 + 3 first customers + 2
        # Refused on arrival, more times than the key has customers left.
        for _ in range(12):
            status, _, answer = running.call("/predict", request_for(customers[0]),
                                             keys["caller"])
            assert status == 429 and "the gateway's overall rate limit" in answer["message"]
        assert running.metric("gateway_ratelimit_rejections_total", scope="global") == 15
        assert running.metric("gateway_ratelimit_rejections_total", scope="key") == 0


# -- callers without a valid key ----------------------------------------------------------------
def test_gateway_answers_429_per_address_when_requests_without_a_valid_key_flood(
        triton: TritonServer, keys: dict[str, Any], customers: list[dict[str, Any]]) -> None:
    settings = _settings(triton.grpc_url, keys, None, rate_limit_unauthenticated="6" + HOUR,
                         rate_limit_per_key="5" + HOUR)
    body = request_for(customers[0])
    flood = "127.0.0.2"
    with RunningGateway(settings, cafile=None) as running:
        statuses = [_call_from(running, flood, "/predict", body, "tk_wrong")[0]
                    for _ in range(5)]
        assert statuses == [401] * 5
        assert _call_from(running, flood, "/healthz")[0] == 200  # open routes count too: 6
        status, headers, answer = _call_from(running, flood, "/predict", body, "tk_wrong")
        assert status == 429 and answer["error"] == "rate_limited"
        assert "without a valid API key from this address" in answer["message"]
        assert int(headers["retry-after"]) >= 1
        assert _call_from(running, flood, "/healthz")[0] == 429
        # refused before its key is looked at: a valid key from that address waits too
        assert _call_from(running, flood, "/predict", body, keys["caller"])[0] == 429
        # Another address has its own budget, and the caller's 5 customers are all there.
        assert running.call("/predict", body, "tk_wrong")[0] == 401
        statuses = [running.call("/predict", body, keys["caller"])[0] for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        assert running.metric("gateway_ratelimit_rejections_total",
                              scope="unauthenticated") == 3
        assert running.metric("gateway_ratelimit_rejections_total", scope="key") == 1


# -- the coalescer's bound ----------------------------------------------------------------------
def test_gateway_answers_503_with_retry_after_when_the_coalescer_is_full_and_answers_the_rest(
        repositories: dict[str, Path], tmp_path: Path, keys: dict[str, Any],
        customers: list[dict[str, Any]]) -> None:
    own = serve(repositories["embedded"], tmp_path)
    assert own._process is not None  # frozen on purpose below: no public handle
    pid = own._process.pid
    settings = _settings(own.grpc_url, keys, None, coalesce_max_pending_rows=3,
                         triton_timeout_s=60.0)
    try:
        with RunningGateway(settings, cafile=None) as running:
            assert running.call("/predict", request_for(customers[0]), keys["caller"])[0] == 200
            pool = concurrent.futures.ThreadPoolExecutor(3)
            os.kill(pid, signal.SIGSTOP)  # Triton answers nothing until SIGCONT
            try:
                held = [pool.submit(running.call, "/predict", request_for(customers[n]),
                                    keys["caller"]) for n in range(3)]
                _until(lambda: running.metric("gateway_pending_rows") == 3,
                       "the coalescer never held the three calls")
                status, headers, answer = running.call("/predict", request_for(customers[3]),
                                                       keys["caller"])
                assert status == 503 and answer["error"] == "queue_full", answer
                assert "its bound is 3" in answer["message"]
                assert headers["retry-after"] == "1"
                assert running.metric("gateway_queue_full_total") == 1
            finally:
                os.kill(pid, signal.SIGCONT)
                pool.shutdown(wait=True)
            answers = [future.result() for future in held]
            assert [status for status, _, _ in answers] == [200] * 3
            assert [a["customer_id"] for _, _, a in answers] == [
                c["customerid"] for c in customers[:3]]
            assert {a["degraded"] for _, _, a in answers} == {False}
            assert running.metric("gateway_pending_rows") == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        own.stop(check=False)
