"""The gateway as production runs it (`python -m tritonkit.gateway.cli serve` with the files
`make production-secrets` writes, HTTPS, /metrics on an internal port, no docs), tried from the
outside: it refuses to start on development keys, an unreadable store or plain HTTP outside
dev mode; slow clients (headers dribbled, a body that never ends, more connections than its
limit) get 408 or 503 and lose their connection while other clients are served as usual."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonkit.gateway.auth import ensure_dev_keys
from tritonkit.gateway.process import GatewayProcess
from tritonkit.serve.ports import free_port
from tritonkit.serve.secrets import FILES, make_production_secrets, secret_files
from tritonkit.serve.server import TritonServer
from tritonkit.tabular.contract import contract

from ..support import IN_CI, require_tool

CHURN = contract("churn")
ALL_FEATURES = CHURN.features



HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0


def _request_for(customer: dict[str, Any]) -> bytes:
    features = {name: customer[name] for name in ALL_FEATURES}
    features["seniorcitizen"] = int(features["seniorcitizen"])
    return json.dumps({"customer_id": customer["customerid"], "features": features}).encode()


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("production") / "secrets"
    _, keys = make_production_secrets(folder)
    return folder, keys


def _production_gateway(triton: TritonServer, folder: Path, log_dir: Path, *extra: str
                        ) -> GatewayProcess:
    return GatewayProcess(
        triton_url=triton.http_url.removeprefix("http://"), protocol="http", port=free_port(),
        keys_file=folder / FILES["gateway_keys"], tls_cert=folder / FILES["gateway_tls_cert"],
        tls_key=folder / FILES["gateway_tls_key"], log_file=log_dir / "gateway.log",
        # limits far above what one test client sends (rate limits have tests of their own)
        extra_args=["--docs", "false", "--metrics-port", str(free_port()),
                    "--rate-limit-per-key", "100000/minute", "--rate-limit-unauthenticated",
                    "100000/minute", *extra])


@pytest.fixture(scope="module")
def gateway(triton: TritonServer, secrets_dir: tuple[Path, dict[str, str]],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = _production_gateway(
        triton, secrets_dir[0], tmp_path_factory.mktemp("gateway"),
        "--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", str(BODY_TIMEOUT_S))
    with process:
        yield process


def _context(folder: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(folder / FILES["gateway_tls_cert"]))


def _call(gateway: GatewayProcess, folder: Path, path: str, body: bytes | None = None,
          key: str | None = None, url: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    request = urllib.request.Request((url or gateway.url) + path, data=body, headers=headers)
    context = _context(folder) if (url or gateway.url).startswith("https") else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def _metrics_url(gateway: GatewayProcess) -> str:
    command = gateway.command()
    return f"http://127.0.0.1:{command[command.index('--metrics-port') + 1]}"


# -- production mode -----------------------------------------------------------------------------

def test_production_gateway_answers_over_https_with_the_keys_production_secrets_made(
        gateway: GatewayProcess, secrets_dir: tuple[Path, dict[str, str]],
        customers: list[dict[str, Any]]) -> None:
    folder, keys = secrets_dir
    assert gateway.url.startswith("https://")
    status, body = _call(gateway, folder, "/predict", _request_for(customers[0]), keys["caller"])
    assert status == 200, body
    assert json.loads(body)["degraded"] is False
    assert _call(gateway, folder, "/predict", _request_for(customers[0]), "tk_wrong")[0] == 401


def test_production_gateway_keeps_metrics_off_its_public_port_and_serves_no_docs(
        gateway: GatewayProcess, secrets_dir: tuple[Path, dict[str, str]]) -> None:
    folder, _ = secrets_dir
    for path in ("/metrics", "/docs", "/openapi.json", "/redoc"):
        assert _call(gateway, folder, path)[0] == 404, path
    with urllib.request.urlopen(_metrics_url(gateway) + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "gateway_requests_total" in text and "gateway_connection_refusals" in text


def test_production_secrets_are_readable_by_a_container_user_and_no_other_host_user(
        secrets_dir: tuple[Path, dict[str, str]], request: pytest.FixtureRequest) -> None:
    """Each file is 0444 in a 0700 folder. Compose bind-mounts the file itself (the same
    inode, here a hard link in an open folder): uid 10001, the gateway image's user, reads it
    there, and cannot reach it through the folder on the host."""
    folder, _ = secrets_dir
    assert folder.stat().st_mode & 0o777 == 0o700
    files = secret_files(folder)
    for path in files.values():
        assert path.stat().st_mode & 0o777 == 0o444, path
    if os.getuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root: this check reads as another user")
        pytest.skip("reading as another user needs root")
    # /tmp itself: pytest's own folders are 0700 (root's), which the other user cannot cross
    mounted = Path(tempfile.mkdtemp(prefix="run-secrets-", dir="/tmp"))
    mounted.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(mounted, ignore_errors=True))
    for secret, path in files.items():
        os.link(path, mounted / secret)

    def read_as_container_user(path: Path) -> int:
        return subprocess.run(["cat", str(path)], capture_output=True, user=10001,
                              group=10001, check=False, timeout=30).returncode

    for secret, path in files.items():
        assert read_as_container_user(mounted / secret) == 0, secret
        assert read_as_container_user(path) != 0, path


@pytest.mark.parametrize(("setup", "message"), [
    ("dev-keys", "holds development keys"),
    ("no-tls", "no TLS: keys would travel in clear text"),
    ("missing-store", "does not exist"),
    ("no-store", "no key store"),
])
def test_gateway_refuses_to_start_outside_dev_mode_when_it_would_serve_unsafely(
        triton: TritonServer, secrets_dir: tuple[Path, dict[str, str]], tmp_path: Path,
        setup: str, message: str) -> None:
    folder, _ = secrets_dir
    args = ["--keys-file", str(folder / FILES["gateway_keys"]),
            "--tls-cert", str(folder / FILES["gateway_tls_cert"]),
            "--tls-key", str(folder / FILES["gateway_tls_key"])]
    if setup == "dev-keys":
        ensure_dev_keys(tmp_path / "keys.json")
        args[1] = str(tmp_path / "keys.json")
    elif setup == "no-tls":
        args = args[:2]
    elif setup == "missing-store":
        args[1] = str(tmp_path / "absent.json")
    else:
        args = args[2:]
    done = subprocess.run(
        [sys.executable, "-m", "tritonkit.gateway.cli", "serve", "--triton-url",
         triton.http_url.removeprefix("http://"), "--protocol", "http", "--port",
         str(free_port()), *args], capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRITONKIT_GATEWAY_")})
    assert done.returncode == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    # the same store and flags start in dev mode (what `make up` does)
    if setup == "dev-keys":
        dev = GatewayProcess(triton_url=triton.http_url.removeprefix("http://"),
                             protocol="http", port=free_port(), keys_file=tmp_path / "keys.json",
                             dev_mode=True, log_file=tmp_path / "dev.log")
        with dev:
            assert dev.is_alive()


def test_gateway_names_an_unreadable_key_store_and_the_fix(
        triton: TritonServer, tmp_path: Path) -> None:
    """The original compose failure: a 0600 store owned by another user (the gateway runs
    here without the capabilities that let root read anything: setpriv)."""
    setpriv = require_tool("setpriv", "apt-get install util-linux")
    if os.getuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root: this check drops root's read-anything capability")
        pytest.skip("dropping root's read-anything capability needs root")
    folder = tmp_path / "secrets"
    make_production_secrets(folder)
    store = folder / FILES["gateway_keys"]
    store.chmod(0o600)
    os.chown(store, 10001, 10001)
    done = subprocess.run(
        [setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m",
         "tritonkit.gateway.cli", "serve", "--triton-url", "127.0.0.1:1", "--keys-file",
         str(store), "--plain-http"], capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRITONKIT_GATEWAY_")})
    assert done.returncode == 1, done.stderr
    assert f"the key store {store} is not readable by this user" in done.stderr, done.stderr
    assert "mode 0444 inside a directory only its owner can enter" in done.stderr


# -- slow and abusive clients ---------------------------------------------------------------------

def _tls_socket(gateway: GatewayProcess, folder: Path) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=15)
    return _context(folder).wrap_socket(raw, server_hostname="localhost")


def _answer(sock: ssl.SSLSocket) -> bytes:
    """What the server sends until it closes the connection (then closed here too)."""
    chunks = []
    with sock:
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _steady_client(gateway: GatewayProcess, folder: Path, key: str, body: bytes,
                   seconds: float) -> list[tuple[int, float]]:
    """(status, seconds) of back-to-back /predict calls for `seconds`."""
    results = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        status, _ = _call(gateway, folder, "/predict", body, key)
        results.append((status, time.perf_counter() - started))
    return results


def test_headers_dribbled_get_408_and_close_while_other_clients_are_served(
        gateway: GatewayProcess, secrets_dir: tuple[Path, dict[str, str]],
        customers: list[dict[str, Any]]) -> None:
    folder, keys = secrets_dir
    started = time.monotonic()  # before the first connection: each deadline runs from its own
    slow = [_tls_socket(gateway, folder) for _ in range(20)]
    for sock in slow:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: localhost\r\n")

    def dribble(sock: ssl.SSLSocket) -> tuple[bytes, float]:
        """One byte every 0.1 s, for far longer than the deadline, until the server answers."""
        sock.settimeout(0.1)
        first = b""
        for _ in range(40):
            try:
                sock.sendall(b"X")
                first = sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                pass  # the server closed it
            break
        answered = time.monotonic()
        sock.settimeout(15)
        return first + _answer(sock), answered - started

    with concurrent.futures.ThreadPoolExecutor(len(slow) + 1) as pool:
        steady = pool.submit(_steady_client, gateway, folder, keys["caller"],
                             _request_for(customers[0]), 2 * HEADER_TIMEOUT_S + 1)
        dribbled = list(pool.map(dribble, slow))
        served = steady.result()
    for answer, elapsed in dribbled:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert b"did not arrive within 1 s" in answer
        assert HEADER_TIMEOUT_S <= elapsed < HEADER_TIMEOUT_S + 3, elapsed
    assert served and [status for status, _ in served if status != 200] == []
    assert max(seconds for _, seconds in served) < 1.0


def test_a_body_that_never_finishes_gets_408_while_other_clients_are_served(
        gateway: GatewayProcess, secrets_dir: tuple[Path, dict[str, str]],
        customers: list[dict[str, Any]]) -> None:
    folder, keys = secrets_dir
    body = _request_for(customers[1])
    sock = _tls_socket(gateway, folder)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                 b"\r\nX-API-Key: " + keys["caller"].encode() + b"\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body[:20])
    started = time.monotonic()
    served = _steady_client(gateway, folder, keys["caller"], body, BODY_TIMEOUT_S / 2)
    answer = _answer(sock)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert b"body did not arrive" in answer
    assert BODY_TIMEOUT_S - 0.6 <= elapsed < BODY_TIMEOUT_S + 2.5, elapsed
    assert served and all(status == 200 for status, _ in served)
    with urllib.request.urlopen(_metrics_url(gateway) + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'gateway_connection_refusals_total{reason="body_timeout"} 1.0' in text
    assert 'gateway_connection_refusals_total{reason="header_timeout"}' in text


def test_connections_beyond_the_limit_get_503_until_the_slow_ones_are_reaped(
        triton: TritonServer, secrets_dir: tuple[Path, dict[str, str]],
        customers: list[dict[str, Any]], tmp_path: Path) -> None:
    folder, keys = secrets_dir
    limit, header_timeout_s = 8, 4.0
    limited = _production_gateway(triton, folder, tmp_path, "--max-connections", str(limit),
                                  "--header-timeout-s", str(header_timeout_s))
    with limited:
        slow = [_tls_socket(limited, folder) for _ in range(limit + 2)]
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        status, body = _call(limited, folder, "/predict", _request_for(customers[2]),
                             keys["caller"])
        assert status == 503, body
        assert json.loads(body)["error"] == "unavailable"
        request = urllib.request.Request(limited.url + "/healthz")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10, context=_context(folder))
        with refused.value as error:
            assert error.headers["Retry-After"] == "1"
        answers = [_answer(sock) for sock in slow]  # reaped at the header deadline
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers)
        assert time.monotonic() - started >= header_timeout_s - 0.5
        status, body = _call(limited, folder, "/predict", _request_for(customers[2]),
                             keys["caller"])
        assert status == 200, body
