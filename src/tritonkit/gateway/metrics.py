"""The gateway's own Prometheus metrics (its `/metrics`), and the ASGI middleware that counts
every request by route, status and model version.

Triton's response-cache hits are Triton's to count: `nv_cache_num_hits_per_model` and
`nv_cache_num_misses_per_model{model="churn"}` on Triton's /metrics (docs/gateway.md, "Caching")::

    metrics = GatewayMetrics()
    app = MetricsMiddleware(app, metrics=metrics)
    text = metrics.render()          # Prometheus text format
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from tritonkit.client.breaker import BreakerState
from tritonkit.gateway.replicas import Replica

#: Routes counted under their own name; anything else is "other" (bounded label values).
ROUTES = ("/predict", "/predict/batch", "/healthz", "/readyz", "/metrics")
_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    """Every metric of one gateway, in a registry of its own (tests run several gateways)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "HTTP requests answered, by route, status and model_version "
            "(empty when no model answered)", ["route", "status", "model_version"], registry=r)
        self.latency = Histogram(
            "gateway_request_duration_seconds", "Time from request to response, by route",
            ["route"], buckets=_LATENCY_BUCKETS_S, registry=r)
        self.breaker_state = Gauge(
            "gateway_breaker_state", "Circuit breaker to Triton: 0 closed, 1 half-open, 2 open",
            registry=r)
        self.breaker_transitions = Counter(
            "gateway_breaker_transitions", "Breaker state changes, by the state entered",
            ["state"], registry=r)
        self.fallback_answers = Counter(
            "gateway_fallback_answers", "Customers answered by the fallback model, by reason",
            ["reason"], registry=r)
        self.ratelimit_rejections = Counter(
            "gateway_ratelimit_rejections", "Requests refused with 429, by the limit hit: key, "
            "global (both in customers), or unauthenticated (requests without a valid key, per "
            "client address)", ["scope"], registry=r)
        self.ratelimit_store_errors = Counter(
            "gateway_ratelimit_store_errors", "Rate-limit checks whose store failed", registry=r)
        self.triton_requests = Counter(
            "gateway_triton_requests", "Requests sent to Triton, by outcome", ["outcome"],
            registry=r)
        self.connection_refusals = Counter(
            "gateway_connection_refusals", "Requests refused at the HTTP edge, by reason: "
            "header_timeout or body_timeout (408), connection_limit (503)", ["reason"],
            registry=r)
        self.queue_full = Counter(
            "gateway_queue_full", "Requests refused with 503 because the coalescer held "
            "coalesce_max_pending_rows customers", registry=r)
        self.pending_rows = Gauge(
            "gateway_pending_rows", "Customers in the coalescer: queued, or sent to Triton and "
            "not yet answered", registry=r)
        self.triton_rows = Histogram(
            "gateway_triton_request_rows", "Customers per Triton request (coalescing at work)",
            buckets=_ROWS_BUCKETS, registry=r)
        self.triton_retries = Counter(
            "gateway_triton_retries", "Triton calls sent again to another replica, by the "
            "first replica's failure", ["kind"], registry=r)
        self.replica_state = Gauge(
            "gateway_replica_state", "Each Triton replica: 0 in rotation, 1 draining, 2 "
            "ejected", ["replica"], registry=r)
        self.replica_ejections = Counter(
            "gateway_replica_ejections", "Times a Triton replica was taken out of rotation "
            "(ejected or drained)", ["replica"], registry=r)
        self.version_weight = Gauge(
            "gateway_version_weight", "Percent of customers routed to each model version (no "
            "series: Triton's version policy picks)", ["version"], registry=r)
        self.rollout_file_errors = Counter(
            "gateway_rollout_file_errors", "Rollout files that could not be applied (the "
            "weights stayed)", registry=r)
        self.rollbacks = Counter(
            "gateway_rollout_rollbacks", "Rollouts rolled back (their version's weight set to "
            "0 after a failed gate), by version", ["version"], registry=r)
        self.breaker_state.set(0)

    def on_replica_change(self, replica: Replica) -> None:
        self.replica_state.labels(replica.url).set(int(replica.state))
        if replica.state:
            self.replica_ejections.labels(replica.url).inc()

    def set_weights(self, weights: dict[str, float]) -> None:
        self.version_weight.clear()
        for version, weight in weights.items():
            self.version_weight.labels(version).set(weight)

    def on_breaker_change(self, state: BreakerState) -> None:
        self.breaker_state.set(int(state))
        self.breaker_transitions.labels(state.name.lower()).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI, outermost: latency and status of every answer. Handlers put the answering
    model's version in `scope["state"]["model_version"]`."""

    def __init__(self, app: Any, *, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._latency = {route: metrics.latency.labels(route) for route in (*ROUTES, "other")}
        #: (route, status, model_version) -> its counter: `labels()` takes a lock and builds
        #: a key on every call; the combinations are few (bounded routes and statuses).
        self._counted: dict[tuple[str, int, str], Any] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})

        async def send_counted(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = scope["path"] if scope["path"] in self._latency else "other"
            self._latency[route].observe(time.perf_counter() - started)
            key = (route, status, state.get("model_version", ""))
            counter = self._counted.get(key)
            if counter is None:
                counter = self._counted[key] = self.metrics.requests.labels(
                    route, str(status), key[2])
            counter.inc()
