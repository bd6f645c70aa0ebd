"""The one owner of a `tritonserver` process on a plain machine (no Docker, no GPU).

It runs the Triton 2.51 binary that the `nvidia-pytriton` wheel ships, with the python backend
laid out from that wheel (see docs/platform.md; `serve.environment` finds and prepares them),
as a child of this process that dies with it (`tritonkit.child_process`). Scripts, `make up`
and the tests use it::

    with TritonServer(ServerSettings(model_repository=Path("model_repository"))) as server:
        print(server.http_url)   # http://127.0.0.1:8000
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from types import TracebackType

from tritonkit.child_process import spawn, stop_process
from tritonkit.errors import ServerInterrupted, ServerStartError, ServerStopError
from tritonkit.paths import CACHE
from tritonkit.serve.environment import (
    prepare_backend_directory,
    pytriton_root,
    server_environment,
    stub_python,
    tritonserver_binary,
)
from tritonkit.serve.ports import listening_ports

logger = logging.getLogger(__name__)

#: Log lines tritonserver writes on every machine without a GPU; not the reason for a failure.
_CPU_NOISE = ("CudaDriverHelper", "NVML", "DCGM", "cuda", "CUDA")
#: Triton's APIs that answer only requests carrying the admin key (`ServerSettings.admin_key`),
#: over HTTP and gRPC: everything that changes or reveals the server beyond inference, health
#: and metadata. Shared memory and the python backend were the subject of NVIDIA's 2025
#: advisories for 2.51 (docs/production.md); deploy/triton/entrypoint.sh restricts the same list
#: in the production image (a test compares the two).
RESTRICTED_APIS = ("model-repository", "model-config", "shared-memory", "statistics", "trace",
                   "logging")
#: Each service tritonserver opens: (role, ServerSettings field, `make up` variable, CLI flag).
_SERVICES = (
    ("HTTP", "http_port", "HTTP_PORT", "--http-port"),
    ("gRPC", "grpc_port", "GRPC_PORT", "--grpc-port"),
    ("metrics", "metrics_port", "METRICS_PORT", "--metrics-port"),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """How to run tritonserver. Ports of 0 are not allowed: pick free ones with
    `ports.free_port()`."""

    model_repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    log_file: Path | None = None
    log_verbose: int = 0
    http_thread_count: int = 8
    # Each python-backend model instance gets a shared-memory region of this size for tensors.
    python_shm_default_byte_size: int = 4 * 1024 * 1024
    cache_size_bytes: int = 0
    # Latency quantiles (Prometheus summaries) cost ~23 % of tritonserver's CPU at concurrency 64
    # (perf: prometheus::Summary::Observe on every request of every model); off by default.
    summary_latencies: bool = False
    # When set, each of RESTRICTED_APIS (model load/unload and config, shared memory,
    # statistics, trace and log settings; over HTTP and gRPC) answers only requests with the
    # header `admin-key: <admin_key>` (gRPC: `triton-grpc-protocol-admin-key`); the monitoring
    # sidecar reloads a step whose python stub died with it (docs/platform.md).
    admin_key: str | None = None
    # The virtualenv whose Python runs the python stubs (its interpreter's version picks the
    # stub; its site-packages are the steps' only third-party modules). None: this interpreter
    # and its environment. The production-parity test passes one made from the image's
    # requirements alone (`python_environment.make_environment`).
    python_environment: Path | None = None
    # Preload jemalloc/tcmalloc (environment.ALLOCATORS) when one is installed.
    preload_allocator: bool = True
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) < len(ports):
            raise ServerStartError(
                f"the HTTP, gRPC and metrics ports must differ, got {ports}: tritonserver "
                "cannot serve two of them on one port")


def check_ports_free(settings: ServerSettings) -> None:
    """Raise `ServerStartError` naming the first HTTP/gRPC/metrics port that cannot be bound.

    Best effort: another process can still take a port between this check and tritonserver's
    own bind; tritonserver then exits with "already in use" in its log, which start() shows.
    """
    for role, field, variable, flag in _SERVICES:
        port = getattr(settings, field)
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                settings.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
            with socket.socket(family, kind, proto) as sock:
                # As tritonserver does: a port left in TIME_WAIT by a stopped server is free.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServerStartError(
                    f"port {port} ({role}) on {settings.host} is already in use, probably by "
                    "another tritonserver or `make up`: stop it with `make down`, or pick "
                    f"another port with `make up {variable}=...` or {flag}"
                ) from exc
            raise ServerStartError(
                f"cannot bind port {port} ({role}) on {settings.host}: {exc.strerror}"
            ) from exc


class TritonServer:
    """Starts, health-checks and stops one tritonserver process."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._process: subprocess.Popen[bytes] | None = None
        self.log_file = settings.log_file or Path(
            tempfile.mkdtemp(prefix="tritonkit-")) / "tritonserver.log"
        self._served = False  # became ready at least once
        self._stop_requested = False

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.settings.host}:{self.settings.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """tritonserver's process id while it runs (its python stubs are its children)."""
        return None if self._process is None else self._process.pid

    @property
    def exit_code(self) -> int | None:
        """The code tritonserver exited with by itself, None while it runs (or before start)."""
        return None if self._process is None else self._process.poll()

    def command(self) -> list[str]:
        """The full tritonserver command line."""
        s = self.settings
        version = stub_python(s.python_environment).version
        backend_dir = prepare_backend_directory(CACHE / "triton-backends" / f"python{version}",
                                                version)
        cmd = [
            str(tritonserver_binary()),
            f"--model-repository={s.model_repository.resolve()}",
            f"--backend-directory={backend_dir}",
            "--model-control-mode=explicit",
            "--load-model=*",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--http-address={s.host}",
            f"--http-port={s.http_port}",
            f"--http-thread-count={s.http_thread_count}",
            f"--grpc-address={s.host}",
            f"--grpc-port={s.grpc_port}",
            f"--metrics-address={s.host}",
            f"--metrics-port={s.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--metrics-config=summary_latencies={str(s.summary_latencies).lower()}",
            f"--log-verbose={s.log_verbose}",
            f"--backend-config=python,shm-default-byte-size={s.python_shm_default_byte_size}",
        ]
        if s.cache_size_bytes > 0:
            cmd += [
                f"--cache-directory={pytriton_root() / 'tritonserver' / 'caches'}",
                f"--cache-config=local,size={s.cache_size_bytes}",
            ]
        if s.admin_key:
            restricted = ",".join(RESTRICTED_APIS)
            cmd += [
                f"--http-restricted-api={restricted}:admin-key={s.admin_key}",
                f"--grpc-restricted-protocol={restricted}:admin-key={s.admin_key}",
            ]
        cmd += list(s.extra_args)
        return cmd

    def start(self, timeout_s: float = 120.0) -> TritonServer:
        """Start tritonserver and block until it is ready or `timeout_s` has passed."""
        if self._process is not None:
            raise ServerStartError("this TritonServer is already running; call stop() first")
        repo = self.settings.model_repository
        if not repo.is_dir() or not any(repo.iterdir()):
            raise ServerStartError(
                f"model repository {repo} is empty or missing: run `make build-engines`"
            )
        check_ports_free(self.settings)
        cmd = self.command()
        shown = " ".join(cmd)
        if self.settings.admin_key:  # the key stays out of logs
            shown = shown.replace(self.settings.admin_key, "<admin-key>")
        logger.info("starting %s", shown)
        self._process = spawn(cmd, self.log_file, env=server_environment(
            self.settings.preload_allocator, stub_python(self.settings.python_environment)))
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop(check=False)
            raise
        self._served = True
        logger.info("tritonserver ready: HTTP %s, gRPC %s", self.http_url, self.grpc_url)
        return self

    def is_ready(self) -> bool:
        """True when `/v2/health/ready` answers 200; connection errors mean "not yet"."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in (400, 503):
                return False
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def request_stop(self) -> None:
        """Ask `start()` or `wait()` to return early; safe to call from a signal handler."""
        self._stop_requested = True

    def listens_on_its_ports(self) -> bool:
        """True when our tritonserver process itself listens on its HTTP, gRPC and metrics ports.

        A ready answer alone can come from another server holding our port while ours loads its
        models (and then fails to bind); and tritonserver opens the metrics port last, so this
        also waits until every service is up.
        """
        if self._process is None:
            return False
        ports = listening_ports(self._process.pid)
        wanted = {getattr(self.settings, field) for _, field, _, _ in _SERVICES}
        return ports is None or wanted <= ports

    def wait_ready(self, timeout_s: float) -> None:
        """Poll readiness until `timeout_s`; raise with the log's tail if the server died.

        Readiness counts only when our own process listens on the ports (`listens_on_its_ports`).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._stop_requested:
                raise ServerInterrupted("stop requested while tritonserver was starting")
            if self._process is not None and self._process.poll() is not None:
                raise ServerStartError(
                    f"tritonserver exited with code {self._process.returncode} during start-up; "
                    f"last log lines:\n{self.log_tail()}"
                )
            if self.is_ready() and self.listens_on_its_ports():
                return
            time.sleep(0.1)
        raise ServerStartError(
            f"tritonserver was not ready after {timeout_s:.0f} s; log:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 25) -> str:
        """The server's error lines, then the last `lines` lines of its log."""
        try:
            with open(self.log_file, errors="replace") as handle:
                text = handle.readlines()
        except FileNotFoundError:
            return "(no log written)"
        # "E…" lines name the model that failed; CUDA/NVML complaints are noise on a CPU machine.
        errors = [line for line in text
                  if line.startswith("E") and not any(n in line for n in _CPU_NOISE)]
        tail = "".join(deque(text, maxlen=lines))
        if errors:
            return "errors:\n" + "".join(errors[-10:]) + "\nlast lines:\n" + tail
        return tail

    def wait(self, poll_s: float = 0.2) -> int | None:
        """Block until the server exits or `request_stop()` is called (used by `make up`).

        Returns:
            The server's exit code, or None when a stop was requested (then call `stop()`).
        """
        process = self._process
        if process is None:
            raise ServerStopError("tritonserver is not running")
        # Polling rather than Popen.wait(): a signal handler only sets a flag, so no exception
        # has to travel through subprocess internals, and nothing re-enters Popen.wait().
        while not self._stop_requested:
            code = process.poll()
            if code is not None:
                return code
            time.sleep(poll_s)
        return None

    def stop(self, timeout_s: float = 30.0, check: bool = True) -> None:
        """SIGINT, wait up to `timeout_s`, then SIGKILL. Raises if the exit was unclean.

        A server that never became ready is killed at once: tritonserver 2.51 ignores a SIGINT
        that arrives while it is still starting, and there are no requests to drain yet.
        """
        process, self._process = self._process, None
        served, self._served = self._served, False
        self._stop_requested = False
        if process is None:
            return
        if process.poll() is None and not served:
            process.kill()
            process.wait()
        code = stop_process(process, signal.SIGINT, timeout_s, "tritonserver")
        if check and code not in (0, -signal.SIGINT):
            raise ServerStopError(
                f"tritonserver exited with code {code}; last log lines:\n{self.log_tail()}"
            )

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(check=exc_type is None)
