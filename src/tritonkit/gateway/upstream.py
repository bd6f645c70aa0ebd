"""The gateway's way to Triton: `churn_packed` (wire.MODEL_NAME) on one or several Triton
replicas (`replicas.ReplicaSet`: least outstanding requests, ejection, retries on another
replica), behind one circuit breaker, every call with its own deadline.

The breaker sees what the replicas could not answer together: with every replica failing it
opens and the gateway answers from the fallback. Each model version other than the stable one
has a breaker of its own, so a broken canary opens its own and not the stable version's.
Failures come back as one `UpstreamError` (`errors`): `bad_request` is the caller's fault
(Triton's 400: the 400 of the contract, never counted by the breaker); `unavailable` (a 404
included: the model is not served), `timeout`, `server` and `breaker_open` are the path's
(fallback or 503)::

    upstream = TritonUpstream("127.0.0.1:8000,127.0.0.1:8100", "http", timeout_s=1.0,
                              breaker=CircuitBreaker())
    answers = await upstream.infer([row, row])      # [(0.42, "medium", "1"), ...]
    answers = await upstream.infer([row], version="2")
    await upstream.close()
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tritonkit.client.breaker import CircuitBreaker
from tritonkit.gateway.errors import ErrorKind, UpstreamError
from tritonkit.gateway.replicas import Replica, ReplicaSet
from tritonkit.gateway.settings import WireProtocol
from tritonkit.gateway.wire import MODEL_NAME, Answer

logger = logging.getLogger(__name__)

__all__ = ["MODEL_NAME", "Answer", "ErrorKind", "TritonUpstream", "UpstreamError"]


class TritonUpstream:
    """Calls `churn_packed` on the replicas; one instance per gateway process."""

    def __init__(self, url: str | Sequence[str], protocol: WireProtocol, *,
                 timeout_s: float, breaker: CircuitBreaker, eject_failures: int = 2,
                 health_interval_s: float = 1.0, probe_row: Mapping[str, Any] | None = None,
                 on_replica_change: Callable[[Replica], None] | None = None,
                 on_retry: Callable[[UpstreamError], None] | None = None) -> None:
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.breaker = breaker
        self.replicas = ReplicaSet(url, protocol, timeout_s=timeout_s,
                                   eject_failures=eject_failures,
                                   health_interval_s=health_interval_s, probe_row=probe_row,
                                   on_change=on_replica_change, on_retry=on_retry)
        self.url = ",".join(r.url for r in self.replicas.replicas)
        #: the version `breaker` guards, with the calls that name none (the rollout's stable)
        self.stable: str | None = None
        self._breakers: dict[str, CircuitBreaker] = {}
        self._probe_counter = itertools.count()

    def breaker_for(self, version: str | None) -> CircuitBreaker:
        """The breaker of `version`: the main one for the stable version and for calls that
        name none, one of its own (same thresholds) for every other version."""
        if version is None or version == self.stable:
            return self.breaker
        found = self._breakers.get(version)
        if found is None:
            found = self._breakers[version] = CircuitBreaker(
                failure_threshold=self.breaker.failure_threshold,
                reset_timeout_s=self.breaker.reset_timeout_s)
        return found

    def start(self) -> None:
        """The replicas' health loop (from inside the event loop; only with several)."""
        if len(self.replicas) > 1:
            self.replicas.start()

    async def infer(self, rows: Sequence[Mapping[str, Any]], version: str | None = None
                    ) -> list[Answer]:
        """Answers for validated customer rows, in one Triton request, through the breaker.

        Raises:
            UpstreamError: `breaker_open` without calling Triton, or the call's failure.
        """
        breaker = self.breaker_for(version)
        if not breaker.allow():
            raise UpstreamError("breaker_open", "circuit breaker open: Triton is failing"
                                + (f" on version {version}" if breaker is not self.breaker
                                   else ""))
        try:
            answers = await self.replicas.infer(rows, version)
        except UpstreamError as exc:
            if exc.counts_against_path:
                breaker.record_failure()
            else:
                breaker.record_success()  # Triton answered: the path works
            raise
        except BaseException:
            breaker.release()
            raise
        breaker.record_success()
        return answers

    async def call(self, rows: Sequence[Mapping[str, Any]], version: str | None = None
                   ) -> list[Answer]:
        """One Triton request, bypassing the breaker (readiness probes use it directly)."""
        return await self.replicas.infer(rows, version)

    async def probe(self, customer: Mapping[str, Any], version: str | None = None
                    ) -> tuple[bool, str]:
        """A real inference for readiness: (ok, detail). The customer's tenure is made unique
        per probe, so that Triton's response cache cannot answer it (a dead python stub would
        go unnoticed behind a cached answer)."""
        row = dict(customer)
        row["tenure"] = 100.0 + (next(self._probe_counter) % 100_000) / 1000.0
        started = time.perf_counter()
        try:
            answers = await self.call([row], version)
        except UpstreamError as exc:
            return False, f"{exc.kind}: {exc.message}"
        elapsed_ms = (time.perf_counter() - started) * 1e3
        return True, f"model_version {answers[0][2]} answered in {elapsed_ms:.1f} ms"

    async def close(self) -> None:
        await self.replicas.close()
