"""The public prediction API in front of Triton: one process's state and way to an answer
(core), `POST /predict` on the hot path (predict) and in FastAPI (app), the HTTP edge (edge),
its errors and their one answer (errors), its typed contract (models), API keys (auth), rate
limits (ratelimit), coalescing (batcher), the circuit breaker (breaker), the fallback model
(fallback), metrics, settings, TLS, the CLI and the process owner.

Nothing is imported here, so that the client library can use the breaker and the fallback
model without FastAPI::

    from tritonkit.gateway.app import create_app
"""
