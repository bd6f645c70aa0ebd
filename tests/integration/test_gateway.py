"""The real gateway (uvicorn, in a thread, HTTPS with a self-signed pair) in front of a real
tritonserver: the contract and its status codes, keys, rate limits, coalescing, Triton's
response cache, and the breaker and fallback when Triton stops and comes back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from tritonkit.client.breaker import CircuitBreaker
from tritonkit.gateway.app import create_app
from tritonkit.gateway.auth import add_key, ensure_dev_keys
from tritonkit.gateway.edge import server_config
from tritonkit.gateway.settings import GatewaySettings
from tritonkit.gateway.tls import make_self_signed
from tritonkit.gateway.upstream import TritonUpstream, UpstreamError
from tritonkit.gateway.wire import MODEL_NAME
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import TritonServer
from tritonkit.tabular.contract import contract

from ..support import counter, counter_settled, serve

CHURN = contract("churn")
ALL_FEATURES = CHURN.features
CATEGORICAL_FEATURES = CHURN.categorical
NUMERIC_BOUNDS = CHURN.bounds




class RunningGateway:
    """A gateway app served by uvicorn in a thread on a free port."""

    def __init__(self, settings: GatewaySettings, cafile: Path | None) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = server_config(self.app, self.app.state.gateway, host="127.0.0.1", port=0,
                               log_level="warning", access_log=False, loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.context = ssl.create_default_context(cafile=str(cafile)) if cafile else None

    def __enter__(self) -> RunningGateway:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "gateway did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"{self.settings.scheme}://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway

    def call(self, path: str, body: Any = None, key: str | None = None, method: str = "POST",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """(status, headers, parsed JSON or text) of one request."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            all_headers["X-API-Key"] = key
        request = urllib.request.Request(self.url + path, data=data, headers=all_headers,
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.context) as response:
                return response.status, dict(response.headers), _parse(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), _parse(exc.read())

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the gateway's own /metrics."""
        _, _, text = self.call("/metrics", method="GET")
        total = 0.0
        for line in text.splitlines():
            named = line.startswith((name + "{", name + " "))
            if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def request_for(customer: dict[str, Any]) -> dict[str, Any]:
    features = {name: customer[name] for name in ALL_FEATURES}
    features["seniorcitizen"] = int(features["seniorcitizen"])
    return {"customer_id": str(customer["customerid"]), "features": features}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    found: dict[str, Any] = dict(ensure_dev_keys(path))
    found["other"] = add_key(path, name="other")
    found["file"] = path
    return found


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("certs"))


def _settings(triton_url: str, keys: dict[str, Any], certs: tuple[Path, Path] | None,
              **changes: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "triton_url": triton_url, "protocol": "grpc", "port": 0,
        "keys_file": keys["file"], "rate_limit_per_key": "100000/minute",
        "rate_limit_global": "100000/minute", "rate_limit_unauthenticated": "100000/minute",
        "triton_timeout_s": 5.0, "dev_mode": True,
    }
    if certs is not None:
        values.update(tls_cert=certs[0], tls_key=certs[1])
    values.update(changes)
    return GatewaySettings(**values)


def _triton_url(triton: TritonServer, protocol: str) -> str:
    return triton.grpc_url if protocol == "grpc" else triton.http_url.removeprefix("http://")


@pytest.fixture(scope="module")
def gateway(triton: TritonServer, keys: dict[str, Any], certs: tuple[Path, Path]
            ) -> Iterator[RunningGateway]:
    """The gateway over HTTPS with the self-signed pair, in front of the session's Triton."""
    settings = _settings(triton.grpc_url, keys, certs,
                         triton_admin_url=_triton_url(triton, "http"))  # the admin reload's
    with RunningGateway(settings, cafile=certs[0]) as running:
        yield running


@pytest.fixture(scope="module")
def http_gateway(triton: TritonServer, keys: dict[str, Any]) -> Iterator[RunningGateway]:
    """The gateway calling Triton's HTTP port (binary tensors on keep-alive connections)."""
    settings = _settings(_triton_url(triton, "http"), keys, None, protocol="http")
    with RunningGateway(settings, cafile=None) as running:
        yield running


# -- the contract -----------------------------------------------------------------------------
def test_gateway_answers_like_the_model_over_https_when_customers_are_valid(
        gateway: RunningGateway, keys: dict[str, Any], customers: list[dict[str, Any]],
        in_process: dict[str, np.ndarray]) -> None:
    assert gateway.url.startswith("https://")
    for i in range(0, 40, 4):
        status, _, answer = gateway.call("/predict", request_for(customers[i]), keys["caller"])
        assert status == 200, answer
        assert answer == {
            "customer_id": customers[i]["customerid"],
            "churn_probability": pytest.approx(float(in_process["churn_probability"][i, 0]),
                                               abs=1e-6),
            "risk_level": str(in_process["risk_level"][i, 0]),
            "model_version": "1", "degraded": False,
        }


def test_gateway_refuses_plain_http_when_it_serves_https(gateway: RunningGateway) -> None:
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        urllib.request.urlopen(gateway.url.replace("https", "http") + "/healthz", timeout=5)


def test_gateway_sends_a_batch_as_one_triton_request_when_batch_form_is_used(
        gateway: RunningGateway, triton: TritonServer, keys: dict[str, Any],
        customers: list[dict[str, Any]], in_process: dict[str, np.ndarray]) -> None:
    before = counter(triton, "nv_inference_request_success", model=MODEL_NAME)
    body = {"customers": [request_for(c) for c in customers[:50]]}
    status, _, answer = gateway.call("/predict/batch", body, keys["caller"])
    assert status == 200, answer
    assert counter_settled(triton, "nv_inference_request_success", before + 1,
                           model=MODEL_NAME) == before + 1
    got = [p["churn_probability"] for p in answer["predictions"]]
    np.testing.assert_allclose(got, in_process["churn_probability"][:50, 0], atol=1e-6)
    assert [p["customer_id"] for p in answer["predictions"]] == [
        c["customerid"] for c in customers[:50]]


@pytest.mark.parametrize("name", ALL_FEATURES)
def test_gateway_answers_400_naming_the_feature_when_that_feature_is_wrong(
        gateway: RunningGateway, keys: dict[str, Any], customers: list[dict[str, Any]],
        name: str) -> None:
    body = request_for(customers[0])
    body["features"][name] = ("Sometimes" if name in CATEGORICAL_FEATURES
                              else int(NUMERIC_BOUNDS[name][1]) + 1)
    status, _, answer = gateway.call("/predict", body, keys["caller"])
    assert status == 400
    assert answer["error"] == "invalid_request"
    assert [p["field"] for p in answer["problems"]] == [f"features.{name}"]


@pytest.mark.parametrize("change", [
    {"tenure": "12"}, {"contract": 2}, {"seniorcitizen": True}, {"monthlycharges": None},
    {"gender": ["Male"]},
], ids=["number-as-string", "category-as-number", "bool", "null", "list"])
def test_gateway_answers_400_when_a_feature_has_the_wrong_type(
        gateway: RunningGateway, keys: dict[str, Any], customers: list[dict[str, Any]],
        change: dict[str, Any]) -> None:
    body = request_for(customers[0])
    body["features"].update(change)
    status, _, answer = gateway.call("/predict", body, keys["caller"])
    assert status == 400
    assert [p["field"] for p in answer["problems"]] == [f"features.{next(iter(change))}"]


def test_gateway_answers_400_listing_each_problem_when_fields_are_missing_or_unknown(
        gateway: RunningGateway, keys: dict[str, Any], customers: list[dict[str, Any]]) -> None:
    body = request_for(customers[0])
    del body["features"]["tenure"]
    body["features"]["favourite_colour"] = "blue"
    body["extra"] = 1
    status, _, answer = gateway.call("/predict", body, keys["caller"])
    assert status == 400
    assert sorted(p["field"] for p in answer["problems"]) == [
        "extra", "features.favourite_colour", "features.tenure"]


@pytest.mark.parametrize("raw", [b"{nope", b"", b"[1, 2]", b"\xff\xfe\x00"],
                         ids=["truncated", "empty", "array", "not-utf8"])
def test_gateway_answers_400_never_500_when_json_is_malformed(
        gateway: RunningGateway, keys: dict[str, Any], raw: bytes) -> None:
    status, _, answer = gateway.call("/predict", raw, keys["caller"])
    assert status == 400
    assert answer["problems"][0]["field"] == "body"


def test_gateway_answers_413_when_body_is_larger_than_the_limit(
        gateway: RunningGateway, keys: dict[str, Any], certs: tuple[Path, Path]) -> None:
    big = b'{"customer_id": "' + b"x" * (gateway.settings.max_body_bytes + 10) + b'"}'
    status, _, answer = gateway.call("/predict", big, keys["caller"])
    assert status == 413 and answer["error"] == "body_too_large"
    # Without a Content-Length (chunked), the gateway stops reading past the limit.
    host, port = gateway.url.removeprefix("https://").split(":")
    connection = http.client.HTTPSConnection(host, int(port), context=gateway.context,
                                             timeout=30)
    try:
        connection.request("POST", "/predict", body=iter([big[:100_000], big[100_000:]]),
                           headers={"X-API-Key": keys["caller"]}, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413
        response.read()
    finally:
        connection.close()


# -- keys -------------------------------------------------------------------------------------
def test_gateway_answers_401_when_key_is_missing_or_wrong(
        gateway: RunningGateway, keys: dict[str, Any], customers: list[dict[str, Any]]) -> None:
    body = request_for(customers[0])
    for key in (None, "tk_wrong", keys["caller"] + "x"):
        status, headers, answer = gateway.call("/predict", body, key)
        assert status == 401 and answer["error"] == "unauthorized"
        assert "X-API-Key" in headers["www-authenticate"]
    status, _, _ = gateway.call("/predict", body,
                                headers={"Authorization": f"Bearer {keys['caller']}"})
    assert status == 200


def test_gateway_answers_403_when_a_caller_key_asks_for_an_admin_endpoint(
        gateway: RunningGateway, keys: dict[str, Any]) -> None:
    assert gateway.call("/admin/breaker/reset", b"", keys["caller"])[0] == 403
    assert gateway.call("/admin/breaker/reset", b"", None)[0] == 401
    status, _, answer = gateway.call("/admin/breaker/reset", b"", keys["admin"])
    assert status == 200 and answer == {"breaker": "closed"}


# -- rate limits ------------------------------------------------------------------------------
def test_gateway_answers_429_with_retry_after_when_a_caller_exceeds_its_rate(
        triton: TritonServer, keys: dict[str, Any], customers: list[dict[str, Any]]) -> None:
    settings = _settings(triton.grpc_url, keys, None, rate_limit_per_key="5/minute")
    body = request_for(customers[0])
    with RunningGateway(settings, cafile=None) as running:
        statuses = [running.call("/predict", body, keys["caller"])[0] for _ in range(5)]
        assert statuses == [200] * 5
        status, headers, answer = running.call("/predict", body, keys["caller"])
        assert status == 429 and answer["error"] == "rate_limited"
        assert 1 <= int(headers["retry-after"]) <= 60
        # another caller has a budget of its own
        assert running.call("/predict", body, keys["other"])[0] == 200
        assert running.metric("gateway_ratelimit_rejections_total", scope="key") == 1


# -- docs, probes, metrics --------------------------------------------------------------------
def test_gateway_serves_openapi_docs_when_asked(gateway: RunningGateway) -> None:
    status, _, document = gateway.call("/openapi.json", method="GET")
    assert status == 200
    assert {"/predict", "/predict/batch", "/healthz", "/readyz"} <= set(document["paths"])
    schemas = document["components"]["schemas"]
    assert schemas["Contract"]["enum"] == ["Month-to-month", "One year", "Two year"]
    assert schemas["CustomerFeatures"]["additionalProperties"] is False
    assert gateway.call("/docs", method="GET")[0] == 200


def test_gateway_probes_answer_when_triton_serves(gateway: RunningGateway) -> None:
    assert gateway.call("/healthz", method="GET")[:3:2] == (200, {"status": "alive"})
    status, _, ready = gateway.call("/readyz", method="GET")
    assert status == 200 and ready["ready"] is True and ready["breaker"] == "closed"


def test_gateway_metrics_count_requests_by_status_and_model_version(
        gateway: RunningGateway, keys: dict[str, Any], customers: list[dict[str, Any]]) -> None:
    ok = gateway.metric("gateway_requests_total", route="/predict", status="200",
                        model_version="1")
    gateway.call("/predict", request_for(customers[1]), keys["caller"])
    gateway.call("/predict", b"{", keys["caller"])
    assert gateway.metric("gateway_requests_total", route="/predict", status="200",
                          model_version="1") == ok + 1
    assert gateway.metric("gateway_requests_total", route="/predict", status="400") >= 1
    assert gateway.metric("gateway_request_duration_seconds_count", route="/predict") > 0
    assert gateway.metric("gateway_breaker_state") == 0


def test_gateway_coalesces_concurrent_calls_into_fewer_triton_requests_when_callers_overlap(
        gateway: RunningGateway, keys: dict[str, Any], customers: list[dict[str, Any]],
        in_process: dict[str, np.ndarray]) -> None:
    sent = gateway.metric("gateway_triton_requests_total", outcome="ok")
    calls = 96
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(
            lambda i: gateway.call("/predict", request_for(customers[i]), keys["caller"]),
            range(calls)))
    assert all(status == 200 for status, _, _ in answers)
    got = [answer["churn_probability"] for _, _, answer in answers]
    np.testing.assert_allclose(got, in_process["churn_probability"][:calls, 0], atol=1e-6)
    assert [answer["customer_id"] for _, _, answer in answers] == [
        c["customerid"] for c in customers[:calls]]
    triton_requests = gateway.metric("gateway_triton_requests_total", outcome="ok") - sent
    assert triton_requests < calls


# -- Triton's response cache ------------------------------------------------------------------
def test_triton_cache_answers_a_repeated_customer_when_the_cache_is_on(
        repositories: dict[str, Path], tmp_path: Path, keys: dict[str, Any],
        customers: list[dict[str, Any]]) -> None:
    cached = serve(repositories["embedded"], tmp_path, cache_size_bytes=16 << 20)
    try:
        settings = _settings(cached.http_url.removeprefix("http://"), keys, None,
                             protocol="http")
        with RunningGateway(settings, cafile=None) as running:
            body = request_for(customers[7])
            answers = [running.call("/predict", body, keys["caller"]) for _ in range(5)]
            assert len({json.dumps(a[2]) for a in answers}) == 1 and answers[0][0] == 200
            hits = counter(cached, "nv_cache_num_hits_per_model", model=MODEL_NAME)
            misses = counter(cached, "nv_cache_num_misses_per_model", model=MODEL_NAME)
            assert hits == 4 and misses == 1
            # readiness probes vary their customer: they never hit the cache
            running.call("/readyz", method="GET")
            assert counter(cached, "nv_cache_num_hits_per_model", model=MODEL_NAME) == 4
    finally:
        cached.stop()


# -- availability -----------------------------------------------------------------------------
def _predict_until(running: RunningGateway, key: str, body: dict[str, Any], version: str,
                   timeout_s: float) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, answer = running.call("/predict", body, key)
        if status == 200 and answer["model_version"] == version:
            return status, answer
        assert time.monotonic() < deadline, f"no answer from {version}: {status} {answer}"
        time.sleep(0.05)


def test_gateway_falls_back_when_triton_stops_and_recovers_when_it_returns(
        repositories: dict[str, Path], tmp_path: Path, keys: dict[str, Any],
        customers: list[dict[str, Any]]) -> None:
    own = serve(repositories["embedded"], tmp_path)
    settings = _settings(own.grpc_url, keys, None, breaker_failures=3, breaker_reset_s=1.0,
                         triton_timeout_s=1.0)
    body = request_for(customers[3])
    try:
        with RunningGateway(settings, cafile=None) as running:
            assert _predict_until(running, keys["caller"], body, "1", 5)[1]["degraded"] is False
            own.stop()
            # Every answer while Triton is down comes from the fallback, marked as such.
            for _ in range(5):
                status, _, answer = running.call("/predict", body, keys["caller"])
                assert status == 200
                assert answer["model_version"] == "1-fallback" and answer["degraded"] is True
            assert running.metric("gateway_breaker_state") == 2  # open
            assert running.metric("gateway_fallback_answers_total") >= 5
            assert running.metric("gateway_fallback_answers_total", reason="breaker_open") >= 1
            assert running.call("/readyz", method="GET")[0] == 503
            own.start(timeout_s=120)
            status, answer = _predict_until(running, keys["caller"], body, "1", 30)
            assert answer["degraded"] is False
            assert running.metric("gateway_breaker_state") == 0  # closed again
            assert running.metric("gateway_breaker_transitions_total", state="closed") >= 1
    finally:
        with contextlib.suppress(Exception):
            own.stop(check=False)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_gateway_answers_503_with_retry_after_when_triton_is_down_and_fallback_is_off(
        keys: dict[str, Any], customers: list[dict[str, Any]], protocol: str) -> None:
    settings = _settings(f"127.0.0.1:{free_port()}", keys, None, fallback=False,
                         protocol=protocol)
    with RunningGateway(settings, cafile=None) as running:
        status, headers, answer = running.call("/predict", request_for(customers[0]),
                                               keys["caller"])
        assert status == 503 and answer["error"] == "unavailable"
        assert int(headers["retry-after"]) >= 1


# -- the lean upstream: both protocols against the real Triton ---------------------------------
def _rows(customers: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return [request_for(c)["features"] for c in customers[:count]]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_upstream_answers_like_the_model_for_100_customers_when_called_over_either_protocol(
        triton: TritonServer, customers: list[dict[str, Any]],
        in_process: dict[str, np.ndarray], protocol: str) -> None:
    rows = _rows(customers, 100)

    async def run() -> tuple[list[Any], list[Any]]:
        upstream = TritonUpstream(_triton_url(triton, protocol), protocol,  # type: ignore[arg-type]
                                  timeout_s=10, breaker=CircuitBreaker())
        try:
            together = await upstream.infer(rows)
            alone = await asyncio.gather(*(upstream.infer([row]) for row in rows))
            return together, [answer for answers in alone for answer in answers]
        finally:
            await upstream.close()

    for answers in asyncio.run(run()):
        np.testing.assert_allclose([p for p, _, _ in answers],
                                   in_process["churn_probability"][:100, 0], atol=1e-6)
        assert [r for _, r, _ in answers] == [str(r) for r in in_process["risk_level"][:100, 0]]
        assert {v for _, _, v in answers} == {"1"}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_upstream_maps_refusals_and_unreachable_triton_to_kinds_over_either_protocol(
        triton: TritonServer, customers: list[dict[str, Any]], protocol: str) -> None:
    bad = _rows(customers, 2)
    bad[1]["contract"] = "Weekly"

    async def failure(url: str, rows: list[dict[str, Any]], timeout_s: float) -> UpstreamError:
        upstream = TritonUpstream(url, protocol, timeout_s=timeout_s,  # type: ignore[arg-type]
                                  breaker=CircuitBreaker())
        try:
            await upstream.infer(rows)
        except UpstreamError as exc:
            return exc
        finally:
            await upstream.close()
        raise AssertionError("Triton answered")

    refused = asyncio.run(failure(_triton_url(triton, protocol), bad, 10))
    assert refused.kind == "bad_request" and "unknown category 'Weekly'" in refused.message
    assert asyncio.run(failure(f"127.0.0.1:{free_port()}", bad[:1], 5)).kind == "unavailable"
    # Deadlines: tests/unit/test_gateway_models.py, against servers that never answer (a tiny
    # deadline on the real Triton sometimes passes, and leaves it cancelled calls).


def test_gateway_over_http_answers_like_the_model_when_callers_overlap(
        http_gateway: RunningGateway, triton: TritonServer, keys: dict[str, Any],
        customers: list[dict[str, Any]], in_process: dict[str, np.ndarray]) -> None:
    sent = http_gateway.metric("gateway_triton_requests_total", outcome="ok")
    calls = 64
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(
            lambda i: http_gateway.call("/predict", request_for(customers[i]), keys["caller"]),
            range(calls)))
    assert all(status == 200 for status, _, _ in answers)
    np.testing.assert_allclose([a["churn_probability"] for _, _, a in answers],
                               in_process["churn_probability"][:calls, 0], atol=1e-6)
    assert {(a["model_version"], a["degraded"]) for _, _, a in answers} == {("1", False)}
    assert http_gateway.metric("gateway_triton_requests_total", outcome="ok") - sent < calls
    body = {"customers": [request_for(c) for c in customers[:20]]}
    status, _, answer = http_gateway.call("/predict/batch", body, keys["caller"])
    assert status == 200
    np.testing.assert_allclose([p["churn_probability"] for p in answer["predictions"]],
                               in_process["churn_probability"][:20, 0], atol=1e-6)


@pytest.mark.parametrize("fixture", ["gateway", "http_gateway"])
def test_gateway_reloads_a_model_through_either_protocol_when_an_admin_asks(
        request: pytest.FixtureRequest, keys: dict[str, Any], customers: list[dict[str, Any]],
        fixture: str) -> None:
    running: RunningGateway = request.getfixturevalue(fixture)
    status, _, answer = running.call("/admin/models/churn/load", b"", keys["admin"])
    assert (status, answer) == (200, {"loaded": "churn"})
    status, _, answer = running.call("/predict", request_for(customers[0]), keys["caller"])
    assert status == 200 and answer["degraded"] is False


def test_gateway_answers_the_same_through_fastapi_when_the_fast_path_is_off(
        gateway: RunningGateway, keys: dict[str, Any], customers: list[dict[str, Any]]) -> None:
    wrong = request_for(customers[2])
    wrong["features"]["tenure"] = -1
    del wrong["features"]["contract"]
    requests: list[tuple[str, Any, str | None]] = [
        ("/predict", request_for(customers[1]), keys["caller"]),
        ("/predict/batch", {"customers": [request_for(c) for c in customers[:3]]},
         keys["caller"]),
        ("/predict", wrong, keys["caller"]),
        ("/predict", b"{nope", keys["caller"]),
        ("/predict", b"x" * (gateway.settings.max_body_bytes + 1), keys["caller"]),
        ("/predict", request_for(customers[1]), None),
        ("/predict/batch", {"customers": []}, keys["caller"]),
    ]

    def answers() -> list[tuple[int, Any, str | None]]:
        out = []
        for path, body, key in requests:
            status, headers, answer = gateway.call(path, body, key)
            out.append((status, answer, headers.get("content-type")))
        return out

    fast = answers()
    app = gateway.app
    saved, app.fast_path = app.fast_path, None
    try:
        through_fastapi = answers()
    finally:
        app.fast_path = saved
    assert [status for status, _, _ in fast] == [200, 200, 400, 400, 413, 401, 400]
    assert through_fastapi == fast
