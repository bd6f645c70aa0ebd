"""A server run as a child process: the one owner of a child's lifecycle.

A child dies with its parent (`die_with_parent`, Linux's PR_SET_PDEATHSIG, as pytriton does),
writes its log to a file (`spawn`), is polled for readiness against a deadline (an exit or a
time-out is raised with the log's tail), and is stopped with a signal, then killed
(`stop_process`). `TritonServer` (serve/server.py) uses `spawn` and `stop_process` with more
around them; the gateway, Prometheus and Alertmanager owners are `ChildProcess` subclasses::

    class Echo(ChildProcess):
        name = "echo"
        def command(self) -> list[str]: return ["python", "-m", "http.server", str(self.port)]
        def is_ready(self) -> bool: return http_ok(f"{self.url}/")

    with Echo(port=free_port(), log_file=Path("echo.log")) as echo:
        print(echo.url)
"""

from __future__ import annotations

import ctypes
import logging
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tritonkit.errors import ServerStartError, ServerStopError

logger = logging.getLogger(__name__)
_C = TypeVar("_C", bound="ChildProcess")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask the kernel to SIGKILL this process when its parent dies (a `preexec_fn`)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def spawn(cmd: Sequence[str], log_file: Path, env: Mapping[str, str] | None = None
          ) -> subprocess.Popen[bytes]:
    """Start `cmd` as a child that dies with its parent, its stdout and stderr in `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=die_with_parent)


def stop_process(process: subprocess.Popen[Any], stop_signal: int, timeout_s: float,
                 name: str) -> int:
    """`stop_signal`, wait up to `timeout_s`, then SIGKILL; returns the exit code.

    A process that has exited already is left as it is.
    """
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s ignored %s for %.0f s; killing it", name,
                           signal.Signals(stop_signal).name, timeout_s)
            process.kill()
            process.wait()
    return process.returncode


def http_ok(url: str, *, cafile: Path | None = None, timeout_s: float = 2.0) -> bool:
    """True when `url` answers 200; an error status or a connection error means "not yet"."""
    context = ssl.create_default_context(cafile=str(cafile)) if cafile is not None else None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except OSError:
        return False


class ChildProcess:
    """One server as a child process; subclasses say how to run it and when it is ready."""

    #: How the server is named in messages.
    name = "process"
    #: The signal that asks it to finish what it is doing and exit.
    stop_signal = signal.SIGTERM

    def __init__(self, *, port: int, log_file: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running child's process id, else None."""
        return None if self._process is None else self._process.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def start(self: _C, timeout_s: float = 30.0) -> _C:
        """Start the child and block until it is ready or `timeout_s` has passed."""
        if self._process is not None:
            raise ServerStartError(f"{self.name} is already running; call stop() first")
        cmd = self.command()
        logger.info("starting %s", " ".join(cmd))
        self._process = spawn(cmd, self.log_file)
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            code = self._process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop(check=False)
                what = (f"exited with code {code} during start-up" if code is not None
                        else f"was not ready after {timeout_s:.0f} s")
                raise ServerStartError(f"{self.name} {what}; last log lines:\n{self.log_tail()}")
            time.sleep(0.1)
        logger.info("%s ready at %s", self.name, self.url)
        return self

    def poll(self) -> int | None:
        """The exit code once the child has exited by itself, else None."""
        return None if self._process is None else self._process.poll()

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout_s: float = 10.0, check: bool = False) -> None:
        """`stop_signal`, wait up to `timeout_s`, then SIGKILL; with `check`, raise if the
        child's exit was unclean. A second call does nothing."""
        process, self._process = self._process, None
        if process is None:
            return
        code = stop_process(process, self.stop_signal, timeout_s, self.name)
        if check and code not in (0, -self.stop_signal):
            raise ServerStopError(
                f"{self.name} exited with code {code}; last log lines:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_file, errors="replace") as handle:
                return "".join(deque(handle, maxlen=lines))
        except FileNotFoundError:
            return "(no log written)"

    def __enter__(self: _C) -> _C:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(check=exc_type is None)
