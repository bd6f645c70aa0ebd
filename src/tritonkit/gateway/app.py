"""The public prediction API: `POST /predict` and `POST /predict/batch` in front of Triton.

A FastAPI app on uvicorn. The path of a request: MetricsMiddleware (status, latency) →
ApiKeyMiddleware (401/403; 429 per address without a valid key) → RateLimitMiddleware (429: the
first customer) → the handler, which reads the body up to `max_body_bytes` (413), validates it
against the typed contract (400, every problem by field), charges a batch's other customers
(429), and answers through the coalescer (503 when it is full) and the breaker from Triton's
packed entry point `churn_packed`, or from the fallback model (`degraded: true`) while Triton
cannot. The two prediction routes take that path as plain ASGI (`predict.PredictEndpoint`)
without FastAPI's own stack; every other route is FastAPI's::

    app = create_app(GatewaySettings(triton_url="127.0.0.1:8001"))
    uvicorn.run(app, port=8080)            # what `python -m tritonkit.gateway.cli` does
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import start_http_server
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from tritonkit.artifacts import ChurnArtifacts
from tritonkit.client.repository import TritonRepository
from tritonkit.gateway.admin import admin_router, as_response, json_response
from tritonkit.gateway.auth import KEY_HEADER, ApiKeyMiddleware, KeyStore
from tritonkit.gateway.batcher import Coalescer
from tritonkit.gateway.breaker import CircuitBreaker
from tritonkit.gateway.fallback import FallbackModel
from tritonkit.gateway.metrics import CONTENT_TYPE, GatewayMetrics, MetricsMiddleware
from tritonkit.gateway.models import BatchPredictions, ContractModels, ErrorBody, Prediction
from tritonkit.gateway.predict import (
    PREDICT_PATHS,
    PredictEndpoint,
    Problem400,
    TooLarge,
    crashed_reply,
    error_reply,
    pin_version,
    predict_batch_reply,
    predict_reply,
    receive_body,
    refused,
)
from tritonkit.gateway.ratelimit import RateLimitMiddleware, RateLimits
from tritonkit.gateway.replicas import parse_urls
from tritonkit.gateway.settings import GatewayConfigError, GatewaySettings, production_problems
from tritonkit.gateway.upstream import Answer, TritonUpstream, UpstreamError
from tritonkit.gateway.versions import RolloutError, VersionRouter, VersionStats

logger = logging.getLogger(__name__)

_JSON = "application/json"
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "invalid input: every problem, by field"},
    401: {"model": ErrorBody, "description": f"missing or wrong key in {KEY_HEADER}"},
    413: {"model": ErrorBody, "description": "body larger than the limit"},
    429: {"model": ErrorBody, "description": "over the key's or the gateway's rate (in "
                                             "customers), or a batch larger than they allow; "
                                             "see Retry-After"},
    500: {"model": ErrorBody, "description": "Triton or the gateway failed"},
    503: {"model": ErrorBody, "description": "Triton unavailable and no fallback, or the "
                                             "gateway's queue to Triton full; see Retry-After"},
}


class Gateway:
    """Everything one gateway process holds: contract, keys, limits, breaker, Triton, fallback."""

    def __init__(self, settings: GatewaySettings, artifacts: ChurnArtifacts | None = None
                 ) -> None:
        problems = production_problems(settings)
        if problems:
            raise GatewayConfigError("the gateway will not serve outside dev mode: "
                                     + "; ".join(problems))
        self.settings = settings
        paths = artifacts or ChurnArtifacts.for_version(settings.model_version)
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
            Problem400: Triton refused the input (cannot happen for validated rows, but Triton
                has the last word).
            UpstreamError: Triton failed and there is no fallback.
            QueueFull: the coalescer holds its bound of customers already.
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
        except UpstreamError as exc:
            if exc.kind == "bad_request":
                raise Problem400([{"field": "features", "message": exc.message}],
                                 "Triton refused the input") from exc
            if self.fallback is None:
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


_json = json_response
_response = as_response


class GatewayAPI(FastAPI):
    """FastAPI, except that `POST /predict` and `/predict/batch` go straight to `fast_path`
    (the same middlewares around `PredictEndpoint`): FastAPI's middleware stack, routing,
    Request objects and dependency injection were the largest cost per call in the profile.
    Their FastAPI routes stay: they document the two routes in OpenAPI, and answer exactly as
    the fast path does (`fast_path = None` turns it off; a test compares the two)."""

    fast_path: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.fast_path is not None and scope["type"] == "http"
                and scope["path"] in PREDICT_PATHS and scope["method"] == "POST"):
            await self.fast_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra for a handler that validates its body itself (faster than FastAPI's
    two-step parse): the model is still documented."""
    return {"requestBody": {"required": True, "content": {_JSON: {"schema": {
        "$ref": f"#/components/schemas/{model.__name__}"}}}},
        "security": [{"ApiKey": []}]}


def create_app(settings: GatewaySettings, artifacts: ChurnArtifacts | None = None
               ) -> GatewayAPI:
    """The gateway's ASGI app (Triton's client is created when the app starts)."""
    gateway = Gateway(settings, artifacts)
    models = gateway.models

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        # What start-up made (modules, routes and schemas, the fallback model, the clients)
        # lives as long as the process: frozen out of the cyclic collector's reach, its full
        # collections no longer walk it. They took ~100 ms each under load: the gateway's p99
        # at c=64 fell from ~100 ms to ~10 ms with collection off (bench/gateway.py).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await gateway.stop()

    app = GatewayAPI(
        title="Churn prediction API",
        version=str(settings.model_version),
        description="Scores customers with the churn model served by Triton. Send the key in "
                    f"the `{KEY_HEADER}` header. Answers marked `degraded` come from the "
                    "fallback model while Triton cannot answer.",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,
        redoc_url="/redoc" if settings.docs else None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    app.state.gateway = gateway

    class _Keys:
        keys = gateway.keys

    store = _Keys()
    app.include_router(admin_router(gateway, store))

    @app.post("/predict", response_model=None, openapi_extra=_request_body(models.predict),
              responses={200: {"model": Prediction}, **_ERRORS},
              summary="Score one customer")
    async def predict(request: Request) -> Response:
        raw = await receive_body(request.scope, request.receive, settings.max_body_bytes)
        state = request.scope.setdefault("state", {})
        pinned = pin_version(request.scope, state)
        return _response(pinned or await predict_reply(gateway, raw, state))

    @app.post("/predict/batch", response_model=None,
              openapi_extra=_request_body(models.batch),
              responses={200: {"model": BatchPredictions}, **_ERRORS},
              summary=f"Score up to {settings.max_batch} customers in one Triton request")
    async def predict_batch(request: Request) -> Response:
        raw = await receive_body(request.scope, request.receive, settings.max_body_bytes)
        state = request.scope.setdefault("state", {})
        pinned = pin_version(request.scope, state)
        return _response(pinned or await predict_batch_reply(gateway, raw, state))

    @app.get("/healthz", summary="Liveness: the gateway process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", summary="Readiness: a real inference through Triton (cached briefly)",
             responses={503: {"description": "Triton did not answer the probe"}})
    async def readyz() -> Response:
        ok, detail = await gateway.ready()
        body = {"ready": ok, "triton": detail, "breaker": gateway.breaker.state.name.lower(),
                "fallback": gateway.fallback.version if gateway.fallback else None}
        return _json(200 if ok else 503, body)

    if settings.metrics_port is None:
        @app.get("/metrics", summary="Prometheus metrics of the gateway")
        async def metrics() -> Response:
            return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)

    @app.exception_handler(ValidationError)
    async def invalid(request: Request, exc: ValidationError) -> Response:
        return _response(refused(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_params(request: Request, exc: RequestValidationError) -> Response:
        found = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                 for e in exc.errors()]
        return _response(error_reply(400, "invalid_request", "invalid request parameters",
                                     found))

    @app.exception_handler(Problem400)
    async def refused_problem(request: Request, exc: Problem400) -> Response:
        return _response(refused(exc))

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge) -> Response:
        return _response(refused(exc))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s", request.url.path)
        return _response(crashed_reply())

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            components = schema.setdefault("components", {})
            found = components.setdefault("schemas", {})
            for model in (models.predict, models.batch):
                document = model.model_json_schema(ref_template="#/components/schemas/{model}")
                found.update(document.pop("$defs", {}))
                found[model.__name__] = document
            components["securitySchemes"] = {
                "ApiKey": {"type": "apiKey", "in": "header", "name": KEY_HEADER}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    limits = gateway.limits
    app.add_middleware(RateLimitMiddleware, limits=limits)
    app.add_middleware(ApiKeyMiddleware, store=store, limits=limits)
    app.add_middleware(MetricsMiddleware, metrics=gateway.metrics)
    # The prediction routes: the same three middlewares, around the endpoint alone.
    app.fast_path = MetricsMiddleware(
        ApiKeyMiddleware(RateLimitMiddleware(PredictEndpoint(gateway), limits=limits),
                         store=store, limits=limits),
        metrics=gateway.metrics)
    return app
