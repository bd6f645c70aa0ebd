"""One gateway process's state and its way to an answer: the contract, keys, limits, the
breaker, the Triton replicas, the version router and its counts, the coalescers and the
fallback. The prediction endpoint (`predict.PredictEndpoint`), the FastAPI routes (`app`), the
admin routes (`admin`) and the HTTP edge (`edge`, for its settings and refusal counts) all
stand on it; it imports none of them, and answers failures by raising `errors.GatewayError`s::

    gateway = Gateway(GatewaySettings(triton_url="127.0.0.1:8000", protocol="http"))
    await gateway.start()                  # inside the event loop: the clients bind to it
    answers, degraded = await gateway.answer([row], coalesce=True, customer_ids=["7590-VHVEG"])
    await gateway.stop()
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import start_http_server

from tritonkit.client.breaker import CircuitBreaker
from tritonkit.client.fallback import FallbackModel
from tritonkit.client.repository import TritonRepository
from tritonkit.gateway.auth import KeyStore
from tritonkit.gateway.batcher import Coalescer
from tritonkit.gateway.errors import QueueFull, UpstreamError
from tritonkit.gateway.metrics import GatewayMetrics
from tritonkit.gateway.ratelimit import RateLimits
from tritonkit.gateway.replicas import parse_urls
from tritonkit.gateway.schemas import ContractModels
from tritonkit.gateway.settings import GatewayConfigError, GatewaySettings, production_problems
from tritonkit.gateway.upstream import Answer, TritonUpstream
from tritonkit.gateway.versions import RolloutError, VersionRouter, VersionStats
from tritonkit.tabular.artifacts import TabularArtifacts

logger = logging.getLogger(__name__)


class Gateway:
    """Everything one gateway process holds: contract, keys, limits, breaker, Triton, fallback."""

    def __init__(self, settings: GatewaySettings, artifacts: TabularArtifacts | None = None
                 ) -> None:
        problems = production_problems(settings)
        if problems:
            raise GatewayConfigError("the gateway will not serve outside dev mode: "
                                     + "; ".join(problems))
        self.settings = settings
        paths = artifacts or TabularArtifacts.for_version(settings.model_version)
        self.schema = paths.load_schema()
        self.models = ContractModels.build(self.schema, settings.max_batch)
        self.fallback = FallbackModel.load(paths.fallback) if settings.fallback else None
        self.metrics = GatewayMetrics()
        self._triton_ok = self.metrics.triton_requests.labels("ok")  # once, not per call
        self.breaker = CircuitBreaker(failure_threshold=settings.breaker_failures,
                                      reset_timeout_s=settings.breaker_reset_s,
                                      on_change=self.metrics.on_breaker_change)
        self.keys = KeyStore.load(settings.key_store)
        rejections = self.metrics.ratelimit_rejections
        self.limits = RateLimits(per_key=settings.rate_limit_per_key,
                                 overall=settings.rate_limit_global,
                                 unauthenticated=settings.rate_limit_unauthenticated,
                                 storage=settings.rate_limit_storage,
                                 fail_open=settings.rate_limit_fail_open,
                                 on_reject=lambda scope: rejections.labels(scope).inc(),
                                 on_store_error=self.metrics.ratelimit_store_errors.inc)
        self.upstream: TritonUpstream | None = None
        #: one coalescer per model version (a Triton request names one version)
        self.coalescers: dict[str | None, Coalescer] = {}
        self.router = VersionRouter()
        self.version_stats = VersionStats()
        self.metrics.registry.register(self.version_stats)
        self._rollout_file_mtime: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.probe_row: dict[str, Any] = {
            **{f.name: float(max(f.minimum, round(f.mean))) for f in self.schema.numeric},
            **{c.name: c.categories[0] for c in self.schema.categorical},
        }
        self.probe_row["seniorcitizen"] = int(self.probe_row["seniorcitizen"])
        self._ready: tuple[float, bool, str] | None = None
        self._ready_lock = asyncio.Lock()
        self._metrics_server: Any = None
        #: one per replica: the admin reload's and the version loads' (None without an HTTP
        #: address for Triton's repository API)
        self.repositories: list[TritonRepository] | None = None
        #: the port /metrics answers on when `settings.metrics_port` is set (0: picked at start)
        self.metrics_port: int | None = None

    # -- lifecycle (inside the event loop: the asyncio clients bind to it) ---------------------
    async def start(self) -> None:
        s = self.settings
        self.upstream = TritonUpstream(
            s.triton_url, s.protocol, timeout_s=s.triton_timeout_s, breaker=self.breaker,
            eject_failures=s.replica_eject_failures,
            health_interval_s=s.replica_health_interval_s, probe_row=self.probe_row,
            on_replica_change=self.metrics.on_replica_change,
            on_retry=lambda exc: self.metrics.triton_retries.labels(exc.kind).inc())
        for replica in self.upstream.replicas.replicas:
            self.metrics.on_replica_change(replica)
        self.upstream.start()
        if s.coalesce:
            coalescers = self.coalescers
            self.metrics.pending_rows.set_function(
                lambda: sum(c.pending_rows for c in list(coalescers.values())))
        if s.rollout_file is not None:
            self._read_rollout_file(s.rollout_file)
            self._tasks.append(asyncio.get_running_loop().create_task(
                self._watch_rollout_file(s.rollout_file)))
        smallest = min(self.limits.per_key.amount, self.limits.overall.amount)
        if smallest < s.max_batch:
            logger.warning("batches of more than %d customers will always be refused (429): "
                           "the rate limits (%s per key, %s overall) take fewer than max_batch "
                           "(%d)", smallest, self.limits.per_key, self.limits.overall,
                           s.max_batch)
        admin_url = s.triton_admin_url or (s.triton_url if s.protocol == "http" else None)
        if admin_url is not None:
            try:
                key = s.triton_admin_key_file.read_text().strip() if s.triton_admin_key_file \
                    else None
            except OSError as exc:
                raise GatewayConfigError(f"cannot read Triton's admin key file "
                                         f"{s.triton_admin_key_file}: {exc.strerror}") from exc
            urls = parse_urls(admin_url)
            if len(urls) != len(self.upstream.replicas):
                raise GatewayConfigError(
                    f"--triton-admin-url names {len(urls)} address(es) for "
                    f"{len(self.upstream.replicas)} Triton replica(s): one per replica, in "
                    "the order of --triton-url")
            self.repositories = [TritonRepository(f"http://{url.removeprefix('http://')}",
                                                  admin_key=key) for url in urls]
        if s.metrics_port is not None:
            # prometheus_client's own threaded server: /metrics off the public port
            self._metrics_server, _ = start_http_server(s.metrics_port, s.host,
                                                        registry=self.metrics.registry)
            self.metrics_port = int(self._metrics_server.server_port)
        logger.info("gateway -> Triton %s (%s), coalescing %s, fallback %s, %d key(s)",
                    s.triton_url, s.protocol, "on" if s.coalesce else "off",
                    self.fallback.version if self.fallback else "off", len(self.keys))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for coalescer in self.coalescers.values():
            await coalescer.drain()
        if self.upstream is not None:
            await self.upstream.close()
        for repository in self.repositories or ():
            repository.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    # -- answering ----------------------------------------------------------------------------
    async def _infer_counted(self, rows: Sequence[dict[str, Any]], version: str | None = None
                             ) -> list[Answer]:
        assert self.upstream is not None
        self.metrics.triton_rows.observe(len(rows))
        started = time.perf_counter()
        try:
            answers = await self.upstream.infer(rows, version)
        except UpstreamError as exc:
            self.metrics.triton_requests.labels(exc.kind).inc()
            self.version_stats.record(version, exc.kind, time.perf_counter() - started,
                                      len(rows))
            raise
        self._triton_ok.inc()
        self.version_stats.record(version, "ok", time.perf_counter() - started, len(rows),
                                  answers)
        return answers

    def _coalescer(self, version: str | None) -> Coalescer:
        coalescer = self.coalescers.get(version)
        if coalescer is None:
            s = self.settings
            replicas = len(self.upstream.replicas) if self.upstream is not None else 1
            coalescer = self.coalescers[version] = Coalescer(
                functools.partial(self._infer_counted, version=version),
                max_rows=s.coalesce_max_rows, max_wait_s=s.coalesce_max_wait_s,
                max_in_flight=s.coalesce_max_in_flight * replicas,
                max_pending_rows=s.coalesce_max_pending_rows)
        return coalescer

    async def answer(self, rows: list[dict[str, Any]], *, coalesce: bool,
                     customer_ids: Sequence[str] = (), version: str | None = None
                     ) -> tuple[list[Answer], list[bool]]:
        """(answers, degraded per row): from Triton, or from the fallback while Triton cannot.
        Each customer goes to the version the router gives its id (`version`: the one an
        admin pinned); a batch whose customers fall to several versions is one Triton request
        per version.

        Raises:
            UpstreamError: Triton refused the input (`bad_request`: cannot happen for validated
                rows, but Triton has the last word), or Triton failed and there is no fallback
                (with the breaker's Retry-After when the caller may retry).
            QueueFull: the coalescer holds its bound of customers already (counted).
        """
        if version is not None or not self.router.weights:
            return await self._answer_version(rows, version, coalesce)
        groups: dict[str | None, list[int]] = {}
        for i, customer_id in enumerate(customer_ids):
            groups.setdefault(self.router.version_for(customer_id), []).append(i)
        if len(groups) == 1:
            return await self._answer_version(rows, next(iter(groups)), coalesce)
        parts = await asyncio.gather(*(self._answer_version([rows[i] for i in members], v,
                                                            coalesce)
                                       for v, members in groups.items()))
        answers: list[Answer | None] = [None] * len(rows)
        degraded = [False] * len(rows)
        for members, (got, flags) in zip(groups.values(), parts, strict=True):
            for i, answer, flag in zip(members, got, flags, strict=True):
                answers[i], degraded[i] = answer, flag
        return [a for a in answers if a is not None], degraded

    async def _answer_version(self, rows: list[dict[str, Any]], version: str | None,
                              coalesce: bool) -> tuple[list[Answer], list[bool]]:
        try:
            if coalesce and self.settings.coalesce:
                answers = await self._coalescer(version).submit(rows)
            else:
                answers = await self._infer_counted(rows, version)
            return answers, [False] * len(rows)
        except QueueFull:
            self.metrics.queue_full.inc()
            raise
        except UpstreamError as exc:
            if exc.blames_caller or self.fallback is None:
                exc.advise_retry(self.breaker.retry_after_s)
                raise
            self.metrics.fallback_answers.labels(exc.kind).inc(len(rows))
            fallback = self.fallback.version
            return ([(p, risk, fallback) for p, risk in self.fallback.predict(rows)],
                    [True] * len(rows))

    # -- rollout weights ------------------------------------------------------------------------
    def set_weights(self, weights: dict[str, float], stable: str | None = None) -> None:
        """Route customers to versions by these weights (percent; {} for Triton's choice).

        Raises:
            RolloutError: weights the router cannot take (nothing changes).
        """
        self.router.set(weights, stable)
        if self.upstream is not None:
            self.upstream.stable = self.router.stable
            self.upstream.replicas.check_version = self.router.stable
        self.metrics.set_weights(self.router.weights)
        logger.info("rollout weights %s (stable %s)", self.router.weights or "none: Triton's "
                    "version policy", self.router.stable)

    def log_rollback(self, version: str, reason: str) -> None:
        logger.error("rollout of version %s rolled back, every customer on version %s: %s",
                     version, self.router.stable, reason or "no reason given")

    def _read_rollout_file(self, path: Path) -> None:
        """Apply the weights in `path` when it changed: JSON {"weights": {...}, "stable": v}."""
        try:
            mtime = path.stat().st_mtime
            if mtime == self._rollout_file_mtime:
                return
            self._rollout_file_mtime = mtime
            data = orjson.loads(path.read_bytes() or b"{}")
            self.set_weights(dict(data.get("weights") or {}), data.get("stable"))
        except FileNotFoundError:
            return  # no file: the weights stay as they are
        except (OSError, ValueError, AttributeError, RolloutError) as exc:
            self.metrics.rollout_file_errors.inc()
            logger.error("rollout file %s not applied, the weights stay %s: %s", path,
                         self.router.weights, exc)

    async def _watch_rollout_file(self, path: Path) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._read_rollout_file(path)

    async def ready(self) -> tuple[bool, str]:
        """A real inference through Triton, reused for `ready_cache_s`."""
        async with self._ready_lock:
            now = time.monotonic()
            if self._ready is not None and now - self._ready[0] < self.settings.ready_cache_s:
                return self._ready[1], self._ready[2]
            assert self.upstream is not None
            ok, detail = await self.upstream.probe(self.probe_row, self.router.stable)
            self._ready = (time.monotonic(), ok, detail)
            return ok, detail
