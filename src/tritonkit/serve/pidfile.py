"""The serve CLI's pid file: which `make up` is running, and the two signals other commands
send it (`make down`: SIGTERM, wait until it exited; `make restart`: SIGHUP, wait until its
rolling restart is done). Only a process whose command line is the serve CLI's counts: a pid
file naming anything else is stale::

    claim_pid_file(Path(".cache/serve.pid"))        # refuses while another serve CLI runs
    stop_serve_cli(Path(".cache/serve.pid"))        # what `make down` runs
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from tritonkit.errors import ServerStartError

#: The module name in a serve CLI's command line: a pid file naming any other process is stale.
_MODULE = "tritonkit.serve.cli"
#: How long `--stop` waits: the CLI itself gives tritonserver 30 s after SIGINT, then kills it.
STOP_TIMEOUT_S = 40.0
#: How long `--rolling-restart` waits for the round (each replica drained, stopped, started).
ROLLING_TIMEOUT_S = 600.0


def _is_serve_cli(pid: int) -> bool:
    """True while `pid` is a running serve CLI (not an exited, zombie or reused PID)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return _MODULE.encode() in argv


def running_serve_cli(pid_file: Path) -> int | None:
    """The PID in `pid_file` if it names a running serve CLI; None when missing or stale."""
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _is_serve_cli(pid) else None


def claim_pid_file(pid_file: Path) -> None:
    """Write this process's PID to `pid_file`, over a stale one; refuse while a CLI runs.

    Best effort, like the port check: two CLIs started in the same instant can both pass; the
    ports then let only one of them serve.
    """
    running = running_serve_cli(pid_file)
    if running is not None and running != os.getpid():
        raise ServerStartError(
            f"a server from `make up` is already running (pid {running}, {pid_file}); "
            "`make down` stops it"
        )
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    partial = pid_file.with_name(f".{pid_file.name}.{os.getpid()}")
    partial.write_text(f"{os.getpid()}\n")
    os.replace(partial, pid_file)  # a reader never sees half a PID


def release_pid_file(pid_file: Path) -> None:
    """Remove `pid_file` if it still names this process."""
    try:
        if int(pid_file.read_text()) == os.getpid():
            pid_file.unlink()
    except (FileNotFoundError, ValueError):
        pass


def stop_serve_cli(pid_file: Path, timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM the serve CLI named in `pid_file`, and only it; wait up to `timeout_s`.

    Returns:
        The exit code for `make down`: 0 when it stopped or none was running, 1 on a timeout.
    """
    pid = running_serve_cli(pid_file)
    if pid is None:
        stale = pid_file.exists()
        pid_file.unlink(missing_ok=True)
        print("no server from `make up` is running"
              + (f" (removed the stale pid file {pid_file})" if stale else ""))
        return 0
    with contextlib.suppress(ProcessLookupError):  # it exited since we looked
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _is_serve_cli(pid):
        if time.monotonic() > deadline:
            print(f"error: the server from `make up` (pid {pid}) is still stopping after "
                  f"{timeout_s:.0f} s; `kill -KILL {pid}` ends it at once", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"stopped the server from `make up` (pid {pid})")
    return 0


def rolling_status_file(pid_file: Path) -> Path:
    """Where a serve CLI reports the end of a rolling restart: `<pid file>.rolled`."""
    return pid_file.with_name(pid_file.name + ".rolled")


def request_rolling_restart(pid_file: Path, timeout_s: float = ROLLING_TIMEOUT_S) -> int:
    """SIGHUP the serve CLI named in `pid_file`; wait until it reports the round done."""
    pid = running_serve_cli(pid_file)
    if pid is None:
        print("error: no server from `make up` is running", file=sys.stderr)
        return 1
    status = rolling_status_file(pid_file)
    status.unlink(missing_ok=True)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while not status.exists():
        if time.monotonic() > deadline or not _is_serve_cli(pid):
            print(f"error: the rolling restart did not finish within {timeout_s:.0f} s (or the "
                  "server stopped): see its output", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(status.read_text().strip())
    return 0
