"""Failover that tells the truth, on a real tritonserver whose restricted APIs need the admin key
and a gateway process in front of it, under a steady caller: Triton's failures (a model it no
longer serves, a dead python stub) are never answered as the caller's 400, they open the
breaker and the fallback answers; the admin reload sends Triton's key and really reloads."""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonkit.gateway.auth import ensure_dev_keys
from tritonkit.gateway.process import GatewayProcess
from tritonkit.gateway.wire import MODEL_NAME
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import TritonServer
from tritonkit.tabular.contract import contract

from ..support import serve, stub_pids

CHURN = contract("churn")
ALL_FEATURES = CHURN.features



ADMIN_KEY = secrets.token_urlsafe(32)
BREAKER_RESET_S = 0.5


@pytest.fixture(scope="module")
def closed_triton(repositories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[TritonServer]:
    server = serve(repositories["embedded"], tmp_path_factory.mktemp("failover-triton"),
                   admin_key=ADMIN_KEY)
    yield server
    server.stop(check=False)  # a reloaded model makes 2.51 exit 1 at shutdown (platform.md)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("failover-keys") / "keys.json"
    return path, ensure_dev_keys(path)


def _gateway(triton: TritonServer, keys: tuple[Path, dict[str, str]], folder: Path,
             admin_key: str | None) -> GatewayProcess:
    extra = ["--breaker-reset-s", str(BREAKER_RESET_S), "--breaker-failures", "3",
             "--rate-limit-per-key", "100000/minute", "--rate-limit-unauthenticated",
             "100000/minute", "--coalesce", "false"]  # the breaker is read off /metrics
    if admin_key is not None:
        key_file = folder / "triton-admin-key"
        key_file.write_text(admin_key + "\n")
        extra += ["--triton-admin-key-file", str(key_file)]
    return GatewayProcess(triton_url=triton.http_url.removeprefix("http://"), protocol="http",
                          port=free_port(), keys_file=keys[0], dev_mode=True,
                          log_file=folder / "gateway.log", extra_args=extra)


@pytest.fixture(scope="module")
def gateway(closed_triton: TritonServer, keys: tuple[Path, dict[str, str]],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with _gateway(closed_triton, keys, tmp_path_factory.mktemp("failover-gateway"),
                  ADMIN_KEY) as process:
        yield process


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={
        "Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


def _predict(gateway: GatewayProcess, key: str, customer: dict[str, Any]) -> tuple[int, Any]:
    features = {name: customer[name] for name in ALL_FEATURES}
    features["seniorcitizen"] = int(features["seniorcitizen"])
    body = json.dumps({"customer_id": customer["customerid"], "features": features}).encode()
    return _post(f"{gateway.url}/predict", body, {"X-API-Key": key})


def _repository(triton: TritonServer, action: str, model: str) -> int:
    return _post(f"{triton.http_url}/v2/repository/models/{model}/{action}", b"{}",
                 {"admin-key": ADMIN_KEY})[0]


def _breaker_state(gateway: GatewayProcess) -> float:
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("gateway_breaker_state "):
                return float(line.split()[1])
    raise AssertionError("no gateway_breaker_state")


class SteadyCaller:
    """One /predict after another in a thread; every answer kept with the time it came."""

    def __init__(self, gateway: GatewayProcess, key: str, customers: list[dict[str, Any]]
                 ) -> None:
        self.answers: list[tuple[float, int, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(gateway, key, customers),
                                        daemon=True)

    def _run(self, gateway: GatewayProcess, key: str, customers: list[dict[str, Any]]) -> None:
        i = 0
        while not self._stop.is_set():
            status, body = _predict(gateway, key, customers[i % len(customers)])
            self.answers.append((time.monotonic(), status, body))
            i += 1
            time.sleep(0.01)

    def __enter__(self) -> SteadyCaller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def after(self, moment: float) -> list[tuple[float, int, Any]]:
        return [a for a in list(self.answers) if a[0] >= moment]


def _until(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_unloaded_entry_point_is_answered_by_the_fallback_never_as_the_callers_400(
        closed_triton: TritonServer, gateway: GatewayProcess,
        keys: tuple[Path, dict[str, str]], customers: list[dict[str, Any]]) -> None:
    key = keys[1]["caller"]
    with SteadyCaller(gateway, key, customers[:50]) as caller:
        _until(lambda: len(caller.answers) >= 10, "no answers before the unload")
        assert {(s, b["degraded"]) for _, s, b in caller.answers} == {(200, False)}
        unloaded = time.monotonic()
        assert _repository(closed_triton, "unload", MODEL_NAME) == 200
        _until(lambda: any(b.get("degraded") for _, s, b in caller.after(unloaded)),
               "the fallback never answered")
        first_fallback = min(t for t, _, b in caller.after(unloaded) if b.get("degraded"))
        _until(lambda: _breaker_state(gateway) == 2, "the breaker did not open")
        during = caller.after(unloaded)
        assert {s for _, s, _ in during} == {200}, "a Triton failure reached the caller"
        assert all(b["model_version"] == "1-fallback" for _, _, b in during if b["degraded"])
        loaded = time.monotonic()
        assert _repository(closed_triton, "load", MODEL_NAME) == 200
        _until(lambda: any(not b["degraded"] for _, _, b in caller.after(loaded + 0.1)),
               "Triton's answers did not come back")
    assert {s for _, s, _ in caller.answers} == {200}
    print(f"unload -> first fallback answer: {1e3 * (first_fallback - unloaded):.0f} ms")


def test_admin_reload_sends_tritons_key_and_brings_a_dead_stub_back(
        closed_triton: TritonServer, gateway: GatewayProcess,
        keys: tuple[Path, dict[str, str]], customers: list[dict[str, Any]]) -> None:
    caller_key, admin_key = keys[1]["caller"], keys[1]["admin"]
    for pid in stub_pids(closed_triton, MODEL_NAME):
        os.kill(pid, signal.SIGKILL)
    _until(lambda: _predict(gateway, caller_key, customers[0])[1]["degraded"],
           "the dead stub went unnoticed")
    status, body = _post(f"{gateway.url}/admin/models/{MODEL_NAME}/load", b"",
                         {"X-API-Key": admin_key})
    assert (status, body) == (200, {"loaded": MODEL_NAME})
    time.sleep(BREAKER_RESET_S * 2)
    _until(lambda: not _predict(gateway, caller_key, customers[1])[1]["degraded"],
           "the reloaded model did not answer")
    # the reload really made fresh instances: the served config carries the override
    request = urllib.request.Request(f"{closed_triton.http_url}/v2/models/{MODEL_NAME}/config",
                                     headers={"admin-key": ADMIN_KEY})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert "tritonkit_reloaded_at" in json.loads(response.read())["parameters"]


def test_admin_reload_names_the_models_triton_serves_when_asked_for_another(
        gateway: GatewayProcess, keys: tuple[Path, dict[str, str]]) -> None:
    status, body = _post(f"{gateway.url}/admin/models/churn_model/load", b"",
                         {"X-API-Key": keys[1]["admin"]})
    assert status == 404
    assert MODEL_NAME in body["problems"][0]["message"] and "churn_fused" in \
        body["problems"][0]["message"]


def test_admin_reload_without_tritons_key_says_so(
        closed_triton: TritonServer, keys: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    with _gateway(closed_triton, keys, tmp_path, admin_key=None) as keyless:
        status, body = _post(f"{keyless.url}/admin/models/{MODEL_NAME}/load", b"",
                             {"X-API-Key": keys[1]["admin"]})
    assert status == 502
    assert "refused the admin key (403)" in body["message"]
