"""Server lifecycle on a real tritonserver: a taken port is named, not mistaken for readiness; a
tritonserver that exits by itself ends the serve CLI with its log; `make down` stops the CLI in
its pid file and no other server.

    .venv/bin/python -m pytest tests/integration/test_server_lifecycle.py -q
"""

from __future__ import annotations

import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonkit.child_process import http_ok, stop_process
from tritonkit.errors import ServerStartError
from tritonkit.paths import PROJECT_ROOT
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import ServerSettings, TritonServer

from ..support import body_for, children, post, probability, require_tool

ROLES = {"HTTP": "http_port", "gRPC": "grpc_port", "metrics": "metrics_port"}


class ServeCli:
    """`python -m tritonkit.serve.cli` in a subprocess on free ports, as `make up` runs it."""

    def __init__(self, repository: Path, log_dir: Path, *args: str) -> None:
        self.http_port = free_port()
        self.stderr_file = log_dir / f"cli-{self.http_port}.stderr"
        with open(self.stderr_file, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tritonkit.serve.cli",
                 "--model-repository", str(repository), "--http-port", str(self.http_port),
                 "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
                 "--log-file", str(log_dir / f"tritonserver-{self.http_port}.log"), *args],
                stdout=subprocess.PIPE, stderr=stderr, text=True,
            )

    def wait_serving(self) -> None:
        """Read the CLI's output until its banner says it serves."""
        banner = ""
        while "Try it" not in banner:
            line = self.process.stdout.readline()  # type: ignore[union-attr]
            assert line, f"serve CLI exited early:\n{banner}{self.stderr()}"
            banner += line

    def stderr(self) -> str:
        return self.stderr_file.read_text()

    def is_serving(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout_s=5)

    def close(self) -> None:
        stop_process(self.process, signal.SIGTERM, 60, "the serve CLI")
        self.process.stdout.close()  # type: ignore[union-attr]


@pytest.fixture
def start_cli(repositories: dict[str, Path], tmp_path: Path) -> Iterator[Any]:
    """Start serve CLIs on the embedded repository; each is stopped at the end of the test."""
    started: list[ServeCli] = []

    def start(*args: str) -> ServeCli:
        cli = ServeCli(repositories["embedded"], tmp_path, *args)
        started.append(cli)
        return cli

    yield start
    for cli in started:
        cli.close()


def _make_down(pid_file: Path) -> subprocess.CompletedProcess[str]:
    make = require_tool("make", "apt-get install make")
    return subprocess.run(
        [make, "--no-print-directory", "down", f"PID_FILE={pid_file}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=90,
    )


@pytest.mark.parametrize("role", ROLES)
def test_start_raises_port_in_use_when_a_running_server_holds_the_port(
    triton: TritonServer, tmp_path: Path, role: str
) -> None:
    ports = {field: free_port() for field in ROLES.values()}
    taken = ports[ROLES[role]] = getattr(triton.settings, ROLES[role])
    log_file = tmp_path / "tritonserver.log"
    second = TritonServer(ServerSettings(
        model_repository=triton.settings.model_repository, log_file=log_file, **ports))

    with pytest.raises(ServerStartError,
                       match=rf"port {taken} \({role}\) on 127\.0\.0\.1 is already in use.*"
                             r"`make down`"):
        second.start(timeout_s=60)

    assert not log_file.exists(), "a tritonserver was spawned although the port was taken"
    assert triton.is_ready()


class _AlwaysReady(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200, as a ready tritonserver answers /v2/health/ready."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_start_raises_with_bind_error_when_another_server_takes_the_port_during_start_up(
    repositories: dict[str, Path], tmp_path: Path
) -> None:
    log_file = tmp_path / "tritonserver.log"
    settings = ServerSettings(
        model_repository=repositories["embedded"], http_port=free_port(),
        grpc_port=free_port(), metrics_port=free_port(), log_file=log_file,
    )
    # Past start()'s port check, once tritonserver runs and loads its models (it binds its
    # ports after that), another HTTP server takes the port and answers "ready" on it.
    stop, bound = threading.Event(), threading.Event()

    def take_http_port() -> None:
        while not stop.is_set() and not (log_file.exists() and log_file.stat().st_size):
            time.sleep(0.01)
        with http.server.HTTPServer((settings.host, settings.http_port), _AlwaysReady) as other:
            bound.set()
            other.timeout = 0.05
            while not stop.is_set():
                other.handle_request()

    thread = threading.Thread(target=take_http_port, daemon=True)
    thread.start()
    try:
        with pytest.raises(ServerStartError,
                           match=rf"(?s)exited with code.*'127\.0\.0\.1:{settings.http_port}' "
                                 "already in use"):
            TritonServer(settings).start(timeout_s=60)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert bound.is_set()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["killed", "exit-0"])
def test_serve_cli_exits_non_zero_with_log_tail_when_tritonserver_exits_by_itself(
    start_cli: Any, tmp_path: Path, sig: signal.Signals
) -> None:
    pid_file = tmp_path / "serve.pid"
    cli = start_cli("--pid-file", str(pid_file))
    cli.wait_serving()
    (tritonserver,) = children(cli.process.pid)

    os.kill(tritonserver, sig)  # SIGINT: tritonserver shuts down cleanly, by itself

    assert cli.process.wait(timeout=60) == 1
    stderr = cli.stderr()
    assert "tritonserver exited by itself with code" in stderr
    # the log's end follows: tritonserver's own lines (which ones depends on how many the
    # python stubs wrote at shutdown: under load they pushed "Started HTTPService" out of it)
    tail = stderr.split("last log lines", 1)[-1]
    assert "last log lines" in stderr and re.search(r"^[IWE]\d{4} ", tail, re.M), stderr
    assert not pid_file.exists()


def test_serve_cli_refuses_to_start_when_its_pid_file_names_a_running_serve_cli(
    start_cli: Any, tmp_path: Path
) -> None:
    pid_file = tmp_path / "serve.pid"
    first = start_cli("--pid-file", str(pid_file))
    first.wait_serving()

    second = start_cli("--pid-file", str(pid_file))

    assert second.process.wait(timeout=60) == 1
    assert (f"a server from `make up` is already running (pid {first.process.pid}"
            in second.stderr())
    assert "`make down` stops it" in second.stderr()
    assert pid_file.read_text().strip() == str(first.process.pid)
    assert first.is_serving()


def test_make_down_stops_only_the_serve_cli_in_its_pid_file_when_other_servers_run(
    start_cli: Any, triton: TritonServer, customers: list[dict[str, Any]], tmp_path: Path
) -> None:
    pid_file = tmp_path / "serve.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # stale: names a process that is no serve CLI
    ours = start_cli("--pid-file", str(pid_file))
    other = start_cli()  # another serve CLI, as the test suite's own or a second checkout's
    ours.wait_serving()
    other.wait_serving()
    assert pid_file.read_text().strip() == str(ours.process.pid)

    result = _make_down(pid_file)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"stopped the server from `make up` (pid {ours.process.pid})" in result.stdout
    assert ours.process.poll() == 0
    assert not pid_file.exists()
    assert other.is_serving()
    status, answer = post(triton, body_for(customers[0]))
    assert status == 200 and 0.0 <= probability(answer) <= 1.0


def test_make_down_removes_a_stale_pid_file_without_signalling_its_process(
    tmp_path: Path,
) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    pid_file = tmp_path / "serve.pid"
    pid_file.write_text(f"{bystander.pid}\n")
    try:
        result = _make_down(pid_file)

        assert result.returncode == 0, result.stdout + result.stderr
        assert "no server from `make up` is running" in result.stdout
        assert not pid_file.exists()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
