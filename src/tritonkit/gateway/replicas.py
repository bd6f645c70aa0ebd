"""Several Triton servers behind one gateway: least outstanding requests first, a replica that
cannot be reached ejected at once and brought back when it answers again, and an inference that
a replica did not run retried on another.

What each failure does (`UpstreamError.kind`, `.connection`):
- the replica cannot be reached or dropped the call (`connection`): retried on the next replica;
  `eject_failures` of them in a row eject it (a SIGKILLed server costs no caller an error);
- `unavailable` with an answer (404: the model or version is not loaded there, 503: refused):
  retried on the next replica, the replica stays (a version loading, a server stopping);
- `server` (500): retried once on another replica; when that one answers, the failure was the
  replica's own (a dead python stub) and counts towards ejecting it; when it fails too, the
  model or version fails everywhere (a broken version) and no replica is blamed;
- `timeout`: not retried (the deadline is spent and the replica may still be running it);
- `bad_request`: the caller's, never retried.

A health loop checks each replica every `health_interval_s`: the model's readiness (no
inference, nothing counted), and for an ejected replica that is ready again one real inference
marked as a probe (`step_contract.PROBE_PARAMETER`: no drift counts) before it takes traffic.
Draining takes a replica out of rotation while its requests in flight finish (a rolling
restart, `POST /admin/replicas/<i>/drain`)::

    replicas = ReplicaSet(["127.0.0.1:8000", "127.0.0.1:8100"], "http", timeout_s=1.0,
                          probe_row=row)
    replicas.start()                       # the health loop (inside the event loop)
    answers = await replicas.infer([row], version="2")
    await replicas.drain(1, timeout_s=30)  # out of rotation, its calls finished
    replicas.enable(1)
    await replicas.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tritonkit.gateway.errors import UpstreamError
from tritonkit.gateway.settings import WireProtocol
from tritonkit.gateway.transport import Transport, transport_for
from tritonkit.gateway.wire import Answer

logger = logging.getLogger(__name__)


class ReplicaState(enum.IntEnum):
    """A replica's state; the value is what `gateway_replica_state` shows."""

    UP = 0
    DRAINING = 1
    EJECTED = 2


@dataclasses.dataclass(eq=False)
class Replica:
    """One Triton server behind the gateway, and what the gateway knows of it now."""

    index: int
    transport: Transport
    state: ReplicaState = ReplicaState.UP
    #: calls sent to it and not yet answered
    outstanding: int = 0
    #: consecutive calls it could not take (connection refused, dropped)
    connection_failures: int = 0
    #: consecutive 500s that another replica then answered
    server_failures: int = 0
    #: consecutive health checks that found the model not ready
    not_ready: int = 0
    #: why it is ejected or draining
    reason: str = ""
    since: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return self.transport.url

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "url": self.url, "state": self.state.name.lower(),
                "outstanding": self.outstanding, "reason": self.reason,
                "for_s": round(time.monotonic() - self.since, 3)}


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """Triton addresses from a comma-separated string or a sequence; at least one."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    found = [item.strip() for item in items if item.strip()]
    if not found:
        raise ValueError("at least one Triton address (host:port) is needed")
    if len(set(found)) < len(found):
        raise ValueError(f"a Triton address is listed twice: {', '.join(found)}")
    return found


class ReplicaSet:
    """The Triton replicas one gateway calls (one transport each), with their health."""

    def __init__(self, urls: str | Sequence[str], protocol: WireProtocol, *,
                 timeout_s: float, eject_failures: int = 2, health_interval_s: float = 1.0,
                 probe_row: Mapping[str, Any] | None = None,
                 on_change: Callable[[Replica], None] | None = None,
                 on_retry: Callable[[UpstreamError], None] | None = None) -> None:
        if eject_failures < 1 or health_interval_s <= 0:
            raise ValueError("eject_failures must be >= 1 and health_interval_s > 0")
        self.replicas = [Replica(i, transport_for(url, protocol))
                         for i, url in enumerate(parse_urls(urls))]
        self.timeout_s = timeout_s
        self.eject_failures = eject_failures
        self.health_interval_s = health_interval_s
        self.probe_row = dict(probe_row) if probe_row is not None else None
        #: the version the health checks ask for (the rollout's stable one); None: Triton's
        self.check_version: str | None = None
        self._on_change = on_change
        self._on_retry = on_retry
        self._turn = itertools.count()
        self._health: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.replicas)

    # -- routing ------------------------------------------------------------------------------
    def pick(self, tried: Sequence[Replica] = ()) -> Replica | None:
        """The replica in rotation with the fewest calls outstanding (ties taken in turn)."""
        best: Replica | None = None
        count = len(self.replicas)
        start = next(self._turn) % count
        for offset in range(count):
            replica = self.replicas[(start + offset) % count]
            if replica.state is not ReplicaState.UP or replica in tried:
                continue
            if best is None or replica.outstanding < best.outstanding:
                best = replica
        return best

    async def infer(self, rows: Sequence[Mapping[str, Any]], version: str | None = None
                    ) -> list[Answer]:
        """Answers from the least busy replica, retried on others as the module says.

        Raises:
            UpstreamError: the last replica's failure, or `unavailable` when none is in
                rotation.
        """
        tried: list[Replica] = []
        failed_500: Replica | None = None
        last: UpstreamError | None = None
        while True:
            replica = self.pick(tried)
            if replica is None:
                raise last if last is not None else self._none_in_rotation()
            replica.outstanding += 1
            try:
                answers = await replica.transport.infer(rows, self.timeout_s, version)
            except UpstreamError as exc:
                if exc.connection:
                    self._connection_failed(replica, exc)
                tried.append(replica)
                if not self._retry(exc, failed_500 is not None) or not any(
                        r.state is ReplicaState.UP and r not in tried for r in self.replicas):
                    raise
                if exc.kind == "server":
                    failed_500 = replica
                last = exc
                if self._on_retry is not None:  # counted only when another replica takes it
                    self._on_retry(exc)
                continue
            finally:
                replica.outstanding -= 1
            replica.connection_failures = replica.server_failures = 0
            if failed_500 is not None:
                self._server_failed(failed_500, last)
            return answers

    @staticmethod
    def _retry(exc: UpstreamError, retried_500: bool) -> bool:
        if exc.connection or exc.kind == "unavailable":
            return True
        return exc.kind == "server" and not retried_500

    def _none_in_rotation(self) -> UpstreamError:
        states = ", ".join(f"{r.url} {r.state.name.lower()}"
                           + (f" ({r.reason})" if r.reason else "") for r in self.replicas)
        return UpstreamError("unavailable", f"no Triton replica is in rotation: {states}",
                             connection=True)

    # -- health -------------------------------------------------------------------------------
    def _connection_failed(self, replica: Replica, exc: UpstreamError) -> None:
        replica.connection_failures += 1
        if replica.connection_failures >= self.eject_failures:
            self.eject(replica, f"unreachable: {exc.message}")

    def _server_failed(self, replica: Replica, exc: UpstreamError | None) -> None:
        replica.server_failures += 1
        if replica.server_failures >= self.eject_failures:
            detail = exc.message if exc is not None else "500"
            self.eject(replica, f"fails where other replicas answer: {detail}")

    def eject(self, replica: Replica, reason: str) -> None:
        """Out of rotation until the health loop finds it ready and answering. The last
        replica in rotation stays: with none left every call would fail at once, while the
        breaker and the fallback already handle a Triton that is down (one replica behaves as
        a gateway without replicas did)."""
        if replica.state is not ReplicaState.UP or not any(
                r.state is ReplicaState.UP for r in self.replicas if r is not replica):
            return
        logger.warning("Triton replica %s ejected: %s", replica.url, reason)
        self._set(replica, ReplicaState.EJECTED, reason)

    def _set(self, replica: Replica, state: ReplicaState, reason: str) -> None:
        replica.state, replica.reason, replica.since = state, reason, time.monotonic()
        replica.connection_failures = replica.server_failures = replica.not_ready = 0
        if self._on_change is not None:
            self._on_change(replica)

    async def check(self) -> None:
        """One round of health checks over every replica not draining."""
        await asyncio.gather(*(self._check(r) for r in self.replicas
                               if r.state is not ReplicaState.DRAINING))

    async def _check(self, replica: Replica) -> None:
        ready = await replica.transport.ready(self.timeout_s, self.check_version)
        if replica.state is ReplicaState.UP:
            replica.not_ready = 0 if ready else replica.not_ready + 1
            if replica.not_ready >= self.eject_failures:
                what = f"version {self.check_version}" if self.check_version else "the model"
                self.eject(replica, f"{what} is not ready there")
            return
        if not ready:
            return
        if self.probe_row is not None:  # ready can lie (a dead python stub): a real answer
            try:
                await replica.transport.infer([self.probe_row], self.timeout_s,
                                              self.check_version, probe=True)
            except UpstreamError as exc:
                replica.reason = f"ready, but its probe failed: {exc.message}"
                return
        if replica.state is ReplicaState.EJECTED:  # not drained meanwhile
            logger.info("Triton replica %s is back in rotation", replica.url)
            self._set(replica, ReplicaState.UP, "")

    def start(self) -> None:
        """Run the health loop (from inside the event loop)."""
        if self._health is None:
            self._health = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            try:
                await self.check()
            except Exception:  # a bug must not end the health checks
                logger.exception("replica health check failed")

    # -- draining (rolling restarts and updates) ----------------------------------------------
    def replica(self, index: int) -> Replica:
        if not 0 <= index < len(self.replicas):
            raise IndexError(f"no replica {index}: the gateway has {len(self.replicas)} "
                             f"(0 to {len(self.replicas) - 1})")
        return self.replicas[index]

    async def drain(self, index: int, timeout_s: float) -> bool:
        """Take replica `index` out of rotation; True once its calls in flight are answered
        (False when `timeout_s` passed first). The other replicas must be able to take its
        traffic: draining the last one in rotation is refused (ValueError)."""
        replica = self.replica(index)
        others = [r for r in self.replicas if r is not replica and r.state is ReplicaState.UP]
        if replica.state is ReplicaState.UP and not others:
            raise ValueError(f"replica {index} is the last one in rotation: draining it "
                             "would leave no Triton to answer")
        if replica.state is not ReplicaState.DRAINING:
            self._set(replica, ReplicaState.DRAINING, "drained by an operator")
        deadline = time.monotonic() + timeout_s
        while replica.outstanding and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return replica.outstanding == 0

    def enable(self, index: int) -> Replica:
        """Back in rotation; the health loop ejects it again if it is not ready."""
        replica = self.replica(index)
        if replica.state is not ReplicaState.UP:
            self._set(replica, ReplicaState.UP, "")
        return replica

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
            self._health = None
        for replica in self.replicas:
            await replica.transport.close()
