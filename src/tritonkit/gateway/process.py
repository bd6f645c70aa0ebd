"""The one owner of a gateway process beside Triton (`make up`, the benchmark).

A `ChildProcess` (child_process.py): started as a child that dies with its parent, ready when
`/healthz` answers (connection errors mean "not yet", an exit is raised with the log's tail),
stopped with SIGINT → wait → kill::

    with GatewayProcess(triton_url="127.0.0.1:8000", port=8080) as gateway:   # Triton's HTTP
        print(gateway.url)                    # http://127.0.0.1:8080
"""

from __future__ import annotations

import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tritonkit.child_process import ChildProcess, http_ok
from tritonkit.gateway.settings import DEFAULT_KEYS_FILE, WireProtocol


class GatewayProcess(ChildProcess):
    """Starts, health-checks and stops `python -m tritonkit.gateway.cli serve`."""

    name = "the gateway"
    # uvicorn finishes the requests in flight on SIGINT.
    stop_signal = signal.SIGINT

    def __init__(self, *, triton_url: str, protocol: WireProtocol = "http",
                 host: str = "127.0.0.1",
                 port: int = 8080, tls_cert: Path | None = None, tls_key: Path | None = None,
                 keys_file: Path = DEFAULT_KEYS_FILE, log_file: Path | None = None,
                 dev_mode: bool = False, extra_args: Sequence[str] = ()) -> None:
        super().__init__(port=port, host=host, log_file=log_file or Path(
            tempfile.mkdtemp(prefix="gateway-")) / "gateway.log")
        self.tls_cert = tls_cert
        self._command = [
            sys.executable, "-m", "tritonkit.gateway.cli", "serve",
            "--triton-url", triton_url, "--protocol", protocol, "--host", host,
            "--port", str(port), "--keys-file", str(keys_file), *extra_args,
        ]
        if dev_mode:  # the development keys and plain HTTP (make up)
            self._command.append("--dev-mode")
        if tls_cert is not None and tls_key is not None:
            self._command += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return list(self._command)

    def is_ready(self) -> bool:
        """True when `/healthz` answers 200; connection errors mean "not yet"."""
        return http_ok(f"{self.url}/healthz", cafile=self.tls_cert)

    def is_alive(self) -> bool:
        """Whether the gateway answers `/healthz` now."""
        return self.is_ready()
