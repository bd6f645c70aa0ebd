"""Triton's APIs beyond inference, health and metadata are closed to callers without the admin
key, over HTTP and gRPC, on a real tritonserver 2.51 started with the flags production uses
(serve/server.py RESTRICTED_APIS, the same list as deploy/triton/entrypoint.sh): each refuses
a keyless call, and a wrong key, and answers the right one. Tried as an attacker would: a keyless
call that would change the server's trace or log settings changes nothing."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc import InferenceServerClient
from tritonclient.utils import InferenceServerException

from tritonkit.serve.server import RESTRICTED_APIS, TritonServer

from ..support import body_for, post, serve

KEY = secrets.token_urlsafe(32)
#: API -> (method, path, body) of one HTTP call in it
HTTP_CALLS: dict[str, tuple[str, str, bytes | None]] = {
    "model-repository": ("POST", "/v2/repository/index", b"{}"),
    "model-config": ("GET", "/v2/models/churn/config", None),
    "shared-memory": ("GET", "/v2/systemsharedmemory/status", None),
    "statistics": ("GET", "/v2/models/stats", None),
    "trace": ("GET", "/v2/trace/setting", None),
    "logging": ("GET", "/v2/logging", None),
}
#: API -> one gRPC call in it
GRPC_CALLS: dict[str, Callable[[InferenceServerClient, dict[str, str]], Any]] = {
    "model-repository": lambda c, h: c.get_model_repository_index(headers=h),
    "model-config": lambda c, h: c.get_model_config("churn", headers=h),
    "shared-memory": lambda c, h: c.get_system_shared_memory_status(headers=h),
    "statistics": lambda c, h: c.get_inference_statistics(headers=h),
    "trace": lambda c, h: c.get_trace_settings(headers=h),
    "logging": lambda c, h: c.get_log_settings(headers=h),
}


@pytest.fixture(scope="module")
def closed_triton(repositories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[TritonServer]:
    server = serve(repositories["embedded"], tmp_path_factory.mktemp("closed-triton"),
                   admin_key=KEY)
    yield server
    server.stop(check=True)


def _http(server: TritonServer, method: str, path: str, body: bytes | None = None,
          key: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["admin-key"] = key
    request = urllib.request.Request(server.http_url + path, data=body, headers=headers,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(errors="replace")


def test_every_api_beyond_inference_is_in_the_restricted_list() -> None:
    assert set(RESTRICTED_APIS) == set(HTTP_CALLS) == set(GRPC_CALLS)


@pytest.mark.parametrize("api", sorted(HTTP_CALLS))
def test_restricted_http_api_refuses_a_keyless_or_wrong_key_call_and_answers_the_key(
        closed_triton: TritonServer, api: str) -> None:
    method, path, body = HTTP_CALLS[api]
    for key in (None, "not-the-key", KEY[:-1]):
        status, answer = _http(closed_triton, method, path, body, key)
        assert status == 403, (api, key, status, answer)
        assert "admin-key" in str(answer)
    status, answer = _http(closed_triton, method, path, body, KEY)
    assert status == 200, (api, answer)


@pytest.mark.parametrize("api", sorted(GRPC_CALLS))
def test_restricted_grpc_api_refuses_a_keyless_or_wrong_key_call_and_answers_the_key(
        closed_triton: TritonServer, api: str) -> None:
    client = InferenceServerClient(closed_triton.grpc_url)
    try:
        for headers in ({}, {"triton-grpc-protocol-admin-key": "not-the-key"},
                        {"admin-key": KEY}):  # the HTTP header name is not the gRPC one
            with pytest.raises(InferenceServerException, match="admin-key"):
                GRPC_CALLS[api](client, headers)
        assert GRPC_CALLS[api](client, {"triton-grpc-protocol-admin-key": KEY}) is not None
    finally:
        client.close()


@pytest.mark.parametrize(("path", "change"), [
    ("/v2/trace/setting", {"trace_level": ["TIMESTAMPS"], "trace_rate": "1"}),
    ("/v2/logging", {"log_verbose_level": 1}),
])
def test_keyless_settings_change_is_refused_and_changes_nothing(
        closed_triton: TritonServer, path: str, change: dict[str, Any]) -> None:
    _, before = _http(closed_triton, "GET", path, key=KEY)
    status, _ = _http(closed_triton, "POST", path, json.dumps(change).encode())
    assert status == 403
    assert _http(closed_triton, "GET", path, key=KEY) == (200, before)


def test_inference_health_and_metadata_stay_open_without_the_key(
        closed_triton: TritonServer, customers: list[dict[str, Any]]) -> None:
    """What the gateway and the probes call needs no key."""
    assert _http(closed_triton, "GET", "/v2/health/ready")[0] == 200
    assert _http(closed_triton, "GET", "/v2/models/churn/ready")[0] == 200
    status, metadata = _http(closed_triton, "GET", "/v2/models/churn")
    assert status == 200 and metadata["name"] == "churn"
    status, answer = post(closed_triton, body_for(customers[0]))
    assert status == 200, answer
