"""The one owner of a `tritonserver` process on a plain machine (no Docker, no GPU).

It runs the Triton 2.51 binary that the `nvidia-pytriton` wheel ships, with the python backend
laid out from that wheel (see docs/platform.md). Scripts, `make up` and the tests use it::

    with TritonServer(ServerSettings(model_repository=Path("model_repository"))) as server:
        print(server.http_url)   # http://127.0.0.1:8000
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from types import TracebackType

from tritonkit.errors import ServerInterrupted, ServerStartError, ServerStopError
from tritonkit.paths import CACHE

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: Allocators preloaded into tritonserver, the first one present wins. glibc malloc/free took
#: ~30 % of tritonserver's CPU at concurrency 64 (perf); jemalloc raised throughput ~25 %
#: (bench/suite.py). Triton's own docs recommend jemalloc or tcmalloc. Debian: libjemalloc2.
ALLOCATORS = (
    Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
    Path("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"),
)
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
    """How to run tritonserver. Ports of 0 are not allowed: pick free ones with `free_port()`."""

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
    # Preload jemalloc/tcmalloc (see ALLOCATORS) when one is installed.
    preload_allocator: bool = True
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) < len(ports):
            raise ServerStartError(
                f"the HTTP, gRPC and metrics ports must differ, got {ports}: tritonserver "
                "cannot serve two of them on one port")


def _pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ServerStartError(
            "the nvidia-pytriton wheel is not installed: run `make setup`"
        ) from exc
    return Path(pytriton.__file__).resolve().parent


def tritonserver_binary() -> Path:
    """Path of the tritonserver binary shipped inside the nvidia-pytriton wheel."""
    binary = _pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not binary.exists():
        raise ServerStartError(f"tritonserver not found at {binary}: run `make setup`")
    return binary


@dataclasses.dataclass(frozen=True)
class StubPython:
    """The Python that runs the python stubs: its version (which stub), where its libpython
    lies, its bin/ and the site-packages the steps import from."""

    version: str
    libdir: str
    bin_dir: str
    site_packages: tuple[str, ...]
    #: a virtualenv of its own (not this interpreter's environment)
    separate: bool = False


_PROBE = ("import json, sys, sysconfig; p = sysconfig.get_paths(); print(json.dumps({"
          "'version': '%d.%d' % sys.version_info[:2], 'libdir': sysconfig.get_config_var("
          "'LIBDIR'), 'bin_dir': p['scripts'], 'site_packages': [p['purelib'], p['platlib']]}))")


@functools.cache
def stub_python(environment: Path | None = None) -> StubPython:
    """This interpreter, or the virtualenv at `environment` (asked by running its python)."""
    if environment is None:
        paths = sysconfig.get_paths()
        return StubPython(f"{sys.version_info.major}.{sys.version_info.minor}",
                          str(sysconfig.get_config_var("LIBDIR")),
                          str(Path(sys.executable).parent),
                          tuple(dict.fromkeys([paths["purelib"], paths["platlib"]])))
    python = environment / "bin" / "python"
    if not python.exists():
        raise ServerStartError(f"{environment} is not a virtualenv: {python} is missing")
    done = subprocess.run([str(python), "-I", "-c", _PROBE], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise ServerStartError(f"{python} does not run: {done.stderr.strip()[-500:]}")
    found = json.loads(done.stdout)
    return StubPython(found["version"], found["libdir"], found["bin_dir"],
                      tuple(dict.fromkeys(found["site_packages"])), separate=True)


def prepare_backend_directory(target: Path, version: str | None = None) -> Path:
    """Lay out `<target>/python/` the way Triton expects, from the wheel's files.

    The wheel keeps the backend library and one stub per Python version apart; Triton wants the
    stub beside `libtriton_python.so`. The stub must match the Python that runs the steps
    (`version`, "3.11"; default this interpreter's).
    """
    root = _pytriton_root() / "tritonserver"
    source = root / "backends" / "python"
    version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerStartError(
            f"no python backend stub for Python {version} in the nvidia-pytriton wheel: "
            "use Python 3.8 to 3.13"
        )
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for path in (
        source / "libtriton_python.so",
        source / "triton_python_backend_utils.py",
        stub,
    ):
        destination = python_dir / path.name
        if not destination.exists() or destination.stat().st_size != path.stat().st_size:
            # Copy then rename, so a server starting at the same time never sees half a file.
            partial = destination.with_name(f".{path.name}.{os.getpid()}")
            shutil.copy2(path, partial)
            os.replace(partial, destination)
    return target


def find_allocator() -> Path | None:
    """The first allocator of ALLOCATORS installed on this machine, if any."""
    return next((path for path in ALLOCATORS if path.exists()), None)


def server_environment(preload_allocator: bool = True, python: StubPython | None = None
                       ) -> dict[str, str]:
    """Environment for tritonserver and the python stubs it spawns.

    Workaround (Triton 2.51 from the pytriton wheel): the stub links `libcudart` from the wheel's
    `nvidia_pytriton.libs` and `libpython3.X.so` from its Python's LIBDIR, and imports
    numpy/onnxruntime through PYTHONPATH, so all three must be set for it. A separate
    environment (`python.separate`) gets its own site-packages alone: nothing of this process's
    PYTHONPATH reaches the steps.
    """
    python = python or stub_python()
    root = _pytriton_root()
    libs = [str(root.parent / "nvidia_pytriton.libs"), python.libdir]
    env = dict(os.environ)
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    paths = list(python.site_packages)
    if env.get("PYTHONPATH") and not python.separate:
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = ":".join(dict.fromkeys(paths))
    if python.separate:
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONHOME", None)
    # The stub's embedded interpreter ignores PYTHONPATH and finds its prefix (and so its
    # site-packages) from the first `python3` on PATH: put its Python's bin/ first, so a
    # virtualenv's numpy < 2 is the one imported, not a system numpy 2 (docs/platform.md).
    env["PATH"] = os.pathsep.join([python.bin_dir, env.get("PATH", "")])
    # Each step is one process per instance; extra BLAS/ORT threads only fight over the cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    allocator = find_allocator() if preload_allocator else None
    if allocator is not None:
        env["LD_PRELOAD"] = ":".join(filter(None, [str(allocator), env.get("LD_PRELOAD")]))
    elif preload_allocator:
        logger.info("no jemalloc/tcmalloc found: `apt-get install libjemalloc2` makes "
                    "tritonserver ~25 % faster under load")
    return env


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


def listening_ports(pid: int) -> set[int] | None:
    """TCP ports that process `pid` listens on, from Linux's /proc; None where /proc can't say."""
    fd_dir = Path(f"/proc/{pid}/fd")
    if not fd_dir.is_dir() or not Path("/proc/net/tcp").exists():
        return None
    sockets = set()
    for fd in fd_dir.iterdir():
        try:
            sockets.add(os.readlink(fd))
        except OSError:  # closed while we looked
            continue
    ports = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for row in table.read_text().splitlines()[1:]:
            # sl local_address rem_address st ... inode; st 0A is LISTEN, ports are hex.
            fields = row.split()
            if fields[3] == "0A" and f"socket:[{fields[9]}]" in sockets:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class TritonServer:
    """Starts, health-checks and stops one tritonserver process."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._process: subprocess.Popen[bytes] | None = None
        self.log_file = settings.log_file or Path(
            tempfile.mkdtemp(prefix="tritonkit-")) / "tritonserver.log"
        self._log_handle: object | None = None
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
                f"--cache-directory={_pytriton_root() / 'tritonserver' / 'caches'}",
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
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log_handle = open(self.log_file, "wb")  # noqa: SIM115 - closed in stop()
        self._log_handle = log_handle
        self._process = subprocess.Popen(
            cmd,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            env=server_environment(self.settings.preload_allocator,
                                   stub_python(self.settings.python_environment)),
            preexec_fn=_die_with_parent,
        )
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
        elif process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("tritonserver ignored SIGINT for %.0f s; killing it", timeout_s)
                process.kill()
                process.wait()
        if self._log_handle is not None:
            self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None
        code = process.returncode
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


_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now and not handed out before by this process (for tests
    and side-by-side benchmarks).

    The kernel can give the same ephemeral port to two binds in a row once the first socket is
    closed: a server's HTTP and metrics ports then collide ("cannot listen to HTTP requests
    and metrics requests at the same address and port", seen in CI).
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise OSError("no free port that was not handed out already")
