"""The one owner of a gateway process beside Triton (`make up`, the benchmark).

Like `TritonServer`: started as a child that dies with its parent, ready when `/healthz` answers
(connection errors mean "not yet", an exit is raised with the log's tail), stopped with
SIGINT → wait → kill, exit code checked::

    with GatewayProcess(triton_url=triton.grpc_url, port=8080) as gateway:
        print(gateway.url)                    # http://127.0.0.1:8080
"""

from __future__ import annotations

import logging
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tritonkit.errors import ServerStartError, ServerStopError
from tritonkit.gateway.settings import DEFAULT_KEYS_FILE
from tritonkit.serve.server import _die_with_parent

logger = logging.getLogger(__name__)


class GatewayProcess:
    """Starts, health-checks and stops `python -m tritonkit.gateway.cli serve`."""

    def __init__(self, *, triton_url: str, protocol: str = "grpc", host: str = "127.0.0.1",
                 port: int = 8080, tls_cert: Path | None = None, tls_key: Path | None = None,
                 keys_file: Path = DEFAULT_KEYS_FILE, log_file: Path | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.host = host
        self.port = port
        self.tls_cert = tls_cert
        self.log_file = log_file or Path(tempfile.mkdtemp(prefix="gateway-")) / "gateway.log"
        self._command = [
            sys.executable, "-m", "tritonkit.gateway.cli", "serve",
            "--triton-url", triton_url, "--protocol", protocol, "--host", host,
            "--port", str(port), "--keys-file", str(keys_file), *extra_args,
        ]
        if tls_cert is not None and tls_key is not None:
            self._command += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: object | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return list(self._command)

    @property
    def pid(self) -> int | None:
        """The running gateway's process id (benchmarks read its CPU time), else None."""
        return None if self._process is None else self._process.pid

    def start(self, timeout_s: float = 30.0) -> GatewayProcess:
        """Start the gateway and block until `/healthz` answers or `timeout_s` has passed."""
        if self._process is not None:
            raise ServerStartError("this gateway is already running; call stop() first")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.log_file, "wb")  # noqa: SIM115 - closed in stop()
        self._log_handle = handle
        logger.info("starting %s", " ".join(self._command))
        self._process = subprocess.Popen(self._command, stdout=handle, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise ServerStartError(
                        f"the gateway exited with code {self._process.returncode} during "
                        f"start-up; last log lines:\n{self.log_tail()}")
                if self.is_alive():
                    logger.info("gateway ready at %s", self.url)
                    return self
                time.sleep(0.1)
            raise ServerStartError(f"the gateway did not answer /healthz within {timeout_s:.0f} "
                                   f"s; log:\n{self.log_tail()}")
        except BaseException:
            self.stop(check=False)
            raise

    def is_alive(self) -> bool:
        """True when `/healthz` answers 200; connection errors mean "not yet"."""
        context = None
        if self.tls_cert is not None:
            context = ssl.create_default_context(cafile=str(self.tls_cert))
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2,
                                        context=context) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as exc:
            exc.close()
            return False
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def poll(self) -> int | None:
        """The exit code once the gateway has exited by itself, else None."""
        return None if self._process is None else self._process.poll()

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_file, errors="replace") as handle:
                return "".join(deque(handle, maxlen=lines))
        except FileNotFoundError:
            return "(no log written)"

    def stop(self, timeout_s: float = 10.0, check: bool = True) -> None:
        """SIGINT (uvicorn finishes the requests in flight), wait, then SIGKILL."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("the gateway ignored SIGINT for %.0f s; killing it", timeout_s)
                process.kill()
                process.wait()
        if self._log_handle is not None:
            self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None
        if check and process.returncode not in (0, -signal.SIGINT):
            raise ServerStopError(f"the gateway exited with code {process.returncode}; last "
                                  f"log lines:\n{self.log_tail()}")

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(check=exc_type is None)
