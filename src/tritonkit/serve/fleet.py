"""Several embedded tritonservers on one machine (`make up REPLICAS=3`), each a `TritonServer`
on its own ports, kept running: one that exits by itself is started again, and a rolling
restart takes them down one at a time, each drained at the gateway first, so callers lose no
request (tests/integration/test_replicas.py). What a kubelet and a Deployment's rolling update
do for pods on a cluster (deploy/k8s), done here by the process that owns the servers::

    fleet = TritonFleet(replica_settings(base, 3)).start()
    fleet.wait(on_idle=...)            # until request_stop(); restarts a server that died
    fleet.rolling_restart(drain=gateway_drain, enable=gateway_enable)

Replica i serves on the base ports plus 100 x i (8000/8001/8002, 8100/8101/8102, ...).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tritonkit.errors import ServerInterrupted, ServerStartError, TritonKitError
from tritonkit.serve.server import ServerSettings, TritonServer

logger = logging.getLogger(__name__)

#: Replica i's ports are the first replica's plus PORT_STRIDE x i.
PORT_STRIDE = 100
#: Waits before starting a server that died again: doubled per failed start, up to the last.
RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


def replica_settings(base: ServerSettings, replicas: int) -> list[ServerSettings]:
    """`replicas` settings: the first is `base`, replica i has every port + PORT_STRIDE x i and
    a log of its own."""
    if replicas < 1:
        raise ServerStartError(f"at least one replica is needed, not {replicas}")
    settings = [base]
    for i in range(1, replicas):
        log = None if base.log_file is None else base.log_file.with_name(
            f"{base.log_file.stem}-{i}{base.log_file.suffix}")
        settings.append(dataclasses.replace(
            base, http_port=base.http_port + PORT_STRIDE * i,
            grpc_port=base.grpc_port + PORT_STRIDE * i,
            metrics_port=base.metrics_port + PORT_STRIDE * i, log_file=log))
    return settings


class TritonFleet:
    """Owns the replicas' `TritonServer`s: starts them, restarts one that dies, restarts all
    one by one on request. With `restart` off (one replica: `make up`'s default) a server that
    exits by itself ends `wait()` with its exit code, as a lone `TritonServer.wait()` does."""

    def __init__(self, settings: list[ServerSettings], *, restart: bool = True,
                 start_timeout_s: float = 120.0) -> None:
        self.servers = [TritonServer(s) for s in settings]
        self.restart = restart
        self.start_timeout_s = start_timeout_s
        #: restarts of each replica after it exited by itself
        self.restarts = [0] * len(self.servers)
        self._stop = False
        self._rolling = False
        self._down_since: dict[int, tuple[float, int]] = {}  # index -> (next try, failures)

    @property
    def primary(self) -> TritonServer:
        """Replica 0: the one the monitoring sidecar watches."""
        return self.servers[0]

    def start(self) -> TritonFleet:
        """Start every replica, one after the other; all or none."""
        started: list[TritonServer] = []
        try:
            for server in self.servers:
                if self._stop:
                    raise ServerInterrupted("stop requested while the replicas were starting")
                server.start(timeout_s=self.start_timeout_s)
                started.append(server)
        except BaseException:
            for server in started:
                server.stop(check=False)
            raise
        return self

    def request_stop(self) -> None:
        """Ask `start()` and `wait()` to return; safe from a signal handler."""
        self._stop = True
        for server in self.servers:
            server.request_stop()

    def request_rolling_restart(self) -> None:
        """Ask `wait()` to restart every replica in turn; safe from a signal handler."""
        self._rolling = True

    def wait(self, *, drain: Callable[[int], None] | None = None,
             enable: Callable[[int], None] | None = None, poll_s: float = 0.2,
             on_rolled: Callable[[list[int]], None] | None = None) -> int | None:
        """Serve until `request_stop()`: None. A replica that exits by itself is started again
        (after a back-off when it keeps failing); without `restart`, its exit code is returned.
        A requested rolling restart runs here, draining and enabling through the callables."""
        while not self._stop:
            for index, server in enumerate(self.servers):
                code = server.exit_code
                if code is None and index not in self._down_since:
                    continue
                if not self.restart:
                    return code
                if self._revive(index, code) and enable is not None and len(self.servers) > 1:
                    enable(index)  # a replica drained when it died comes back too
            if self._rolling and not self._stop:
                self._rolling = False
                done = self.rolling_restart(drain=drain, enable=enable)
                if on_rolled is not None:
                    on_rolled(done)
            time.sleep(poll_s)
        return None

    def _revive(self, index: int, code: int | None) -> bool:
        """One step of bringing a dead replica back; True once it serves again."""
        server = self.servers[index]
        now = time.monotonic()
        if index not in self._down_since:
            logger.error("Triton replica %d (%s) exited by itself with code %s; starting it "
                         "again. Its log's end:\n%s", index, server.http_url, code,
                         server.log_tail(20))
            _keep_log(server)
            server.stop(check=False)
            self._down_since[index] = (now + RESTART_BACKOFF_S[0], 0)
            return False
        next_try, failures = self._down_since[index]
        if now < next_try:
            return False
        try:
            server.start(timeout_s=self.start_timeout_s)
        except ServerInterrupted:
            return False
        except TritonKitError as exc:
            self._failed_start(index, failures + 1, exc)
            return False
        del self._down_since[index]
        self.restarts[index] += 1
        logger.info("Triton replica %d is serving again (restart %d)", index,
                    self.restarts[index])
        return True

    def _failed_start(self, index: int, failures: int, exc: Exception) -> None:
        wait = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
        logger.error("Triton replica %d did not start again (next try in %.0f s): %s", index,
                     wait, exc)
        self.servers[index].stop(check=False)
        self._down_since[index] = (time.monotonic() + wait, failures)

    def rolling_restart(self, *, drain: Callable[[int], None] | None = None,
                        enable: Callable[[int], None] | None = None) -> list[int]:
        """Restart every replica in turn: drain it (its calls in flight answered, no new ones),
        stop it (SIGINT), start it, wait until it is ready, put it back. Returns the replicas
        restarted. A replica that does not start again ends the round there (the others keep
        serving) and is tried again as one that died."""
        done = []
        for index, server in enumerate(self.servers):
            if self._stop:
                break
            several = len(self.servers) > 1
            if drain is not None and several:
                drain(index)
            logger.info("rolling restart: replica %d (%s)", index, server.http_url)
            server.stop(check=False)
            try:
                server.start(timeout_s=self.start_timeout_s)
            except ServerInterrupted:
                break
            except TritonKitError as exc:
                self._failed_start(index, 1, exc)
                break
            if enable is not None and several:
                enable(index)
            done.append(index)
        return done

    def stop(self) -> None:
        for server in self.servers:
            server.stop(check=False)


def _keep_log(server: TritonServer) -> None:
    """Keep a dead server's log beside the new one (`<log>.previous`): its start truncates it."""
    log = Path(server.log_file)
    if log.exists():
        shutil.copyfile(log, log.with_name(log.name + ".previous"))
