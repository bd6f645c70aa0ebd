"""The public prediction API: `POST /predict` and `POST /predict/batch` in front of Triton.

A FastAPI app on uvicorn. The path of a request: MetricsMiddleware (status, latency) →
ApiKeyMiddleware (401/403; 429 per address without a valid key) → RateLimitMiddleware (429: the
first customer) → the handler, which reads the body up to `max_body_bytes` (413), validates it
against the typed contract (400, every problem by field), charges a batch's other customers
(429), and answers through the coalescer (503 when it is full) and the breaker from Triton's
packed entry point `churn_packed`, or from the fallback model (`degraded: true`) while Triton
cannot. The two prediction routes take that path as plain ASGI (`predict.PredictEndpoint`)
without FastAPI's own stack; every other route is FastAPI's::

    app = create_app(GatewaySettings(triton_url="127.0.0.1:8000"))   # around a core.Gateway
    app = gateway_app(gateway)             # around a Gateway already made (the CLI's)
    uvicorn.run(app, port=8080)
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from tritonkit.gateway.admin import admin_router, as_response, json_response
from tritonkit.gateway.auth import KEY_HEADER, ApiKeyMiddleware
from tritonkit.gateway.core import Gateway
from tritonkit.gateway.errors import CRASHED, GatewayError, InvalidRequest, problem_reply
from tritonkit.gateway.metrics import CONTENT_TYPE, MetricsMiddleware
from tritonkit.gateway.predict import (
    PREDICT_PATHS,
    PredictEndpoint,
    contract_refusal,
    pin_version,
    predict_batch_reply,
    predict_reply,
    receive_body,
)
from tritonkit.gateway.ratelimit import RateLimitMiddleware
from tritonkit.gateway.schemas import BatchPredictions, ErrorBody, Prediction
from tritonkit.gateway.settings import GatewaySettings
from tritonkit.tabular.artifacts import TabularArtifacts

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


def create_app(settings: GatewaySettings, artifacts: TabularArtifacts | None = None
               ) -> GatewayAPI:
    """The gateway's ASGI app around a new `core.Gateway` (Triton's client is created when the
    app starts)."""
    return gateway_app(Gateway(settings, artifacts))


def gateway_app(gateway: Gateway) -> GatewayAPI:
    """The FastAPI app of `gateway`: its routes, middlewares and OpenAPI document."""
    settings = gateway.settings
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
        pin_version(request.scope, state)
        return as_response(await predict_reply(gateway, raw, state))

    @app.post("/predict/batch", response_model=None,
              openapi_extra=_request_body(models.batch),
              responses={200: {"model": BatchPredictions}, **_ERRORS},
              summary=f"Score up to {settings.max_batch} customers in one Triton request")
    async def predict_batch(request: Request) -> Response:
        raw = await receive_body(request.scope, request.receive, settings.max_body_bytes)
        state = request.scope.setdefault("state", {})
        pin_version(request.scope, state)
        return as_response(await predict_batch_reply(gateway, raw, state))

    @app.get("/healthz", summary="Liveness: the gateway process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", summary="Readiness: a real inference through Triton (cached briefly)",
             responses={503: {"description": "Triton did not answer the probe"}})
    async def readyz() -> Response:
        ok, detail = await gateway.ready()
        body = {"ready": ok, "triton": detail, "breaker": gateway.breaker.state.name.lower(),
                "fallback": gateway.fallback.version if gateway.fallback else None}
        return json_response(200 if ok else 503, body)

    if settings.metrics_port is None:
        @app.get("/metrics", summary="Prometheus metrics of the gateway")
        async def metrics() -> Response:
            return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)

    # Every refusal is a GatewayError, answered by errors.problem_reply, as on the fast path.
    @app.exception_handler(GatewayError)
    async def refused(request: Request, exc: GatewayError) -> Response:
        return as_response(problem_reply(exc))

    @app.exception_handler(ValidationError)
    async def invalid(request: Request, exc: ValidationError) -> Response:
        return as_response(problem_reply(contract_refusal(exc)))

    @app.exception_handler(RequestValidationError)
    async def invalid_params(request: Request, exc: RequestValidationError) -> Response:
        found = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                 for e in exc.errors()]
        return as_response(problem_reply(InvalidRequest("invalid request parameters",
                                                        problems=found)))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s", request.url.path)
        return as_response(problem_reply(GatewayError(CRASHED)))

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
