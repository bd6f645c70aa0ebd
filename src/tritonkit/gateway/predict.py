"""`POST /predict` and `POST /predict/batch`: the answers, and the pure-ASGI endpoint that
serves them on the hot path.

Every call goes body (413 past the limit) → contract (400, every problem by field) → a batch's
customers charged to the rate limits (429) → Triton through the coalescer (503 when its queue is
full) and the breaker, or the fallback (`degraded: true`) → JSON. The same
`Reply` comes back whichever way the request arrived: through `PredictEndpoint` (what the
gateway's `__call__` sends these two routes to, skipping FastAPI's middleware stack, routing,
dependency injection and Request objects, which cost more CPU than everything else the gateway
does per call) or through the FastAPI routes that document them::

    endpoint = PredictEndpoint(gateway)          # an ASGI app for the two paths
    reply = await predict_reply(gateway, b'{"customer_id": ...}', state={})
    reply.status, reply.body                     # 200, b'{"customer_id":...,"degraded":false}'
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from pydantic import ValidationError

from tritonkit.gateway.batcher import QueueFull
from tritonkit.gateway.models import customer_row, problems
from tritonkit.gateway.ratelimit import Refusal
from tritonkit.gateway.upstream import Answer, UpstreamError
from tritonkit.gateway.versions import RolloutError, check_version

if TYPE_CHECKING:
    from tritonkit.gateway.core import Gateway

logger = logging.getLogger(__name__)

PREDICT_PATHS = ("/predict", "/predict/batch")
_JSON_HEADERS = [(b"content-type", b"application/json")]
#: An admin's request may name the model version that answers it (a rollout's checks, a
#: comparison by hand); a caller's key may not (its customers' version is the router's).
VERSION_HEADER = "X-Model-Version"
_VERSION_HEADER_LOWER = VERSION_HEADER.lower().encode()


class Problem400(Exception):
    """A request the contract refuses: answered 400 with its problems."""

    def __init__(self, problems: list[dict[str, str]], message: str = "invalid request") -> None:
        super().__init__(message)
        self.problems = problems
        self.message = message


class TooLarge(Exception):
    """A body past the limit: answered 413."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"body of {size} bytes is larger than the limit of {limit} bytes")


class Reply(NamedTuple):
    """One answer: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: Mapping[str, str] = {}


def error_reply(status: int, error: str, message: str,
                found: list[dict[str, str]] | None = None,
                headers: Mapping[str, str] | None = None) -> Reply:
    """The contract's error body."""
    body = orjson.dumps({"error": error, "message": message, "problems": found or []})
    return Reply(status, body, headers or {})


def refused(exc: Problem400 | TooLarge | ValidationError) -> Reply:
    """The 400 or 413 of a request that the contract refuses."""
    if isinstance(exc, ValidationError):
        return error_reply(400, "invalid_request", "the request does not match the contract: "
                           "see problems", problems(exc))
    if isinstance(exc, TooLarge):
        return error_reply(413, "body_too_large", str(exc),
                           [{"field": "body", "message": str(exc)}])
    return error_reply(400, "invalid_request", exc.message, exc.problems)


def crashed_reply() -> Reply:
    return error_reply(500, "internal", "the gateway failed on this request; it is logged")


def failure_reply(gateway: Gateway, exc: UpstreamError) -> Reply:
    """Triton failed and no fallback answers: 503 (retry later) or 500."""
    if exc.kind == "server":
        return error_reply(500, "upstream_error", exc.message)
    retry_after = max(1, math.ceil(gateway.breaker.retry_after_s))
    return error_reply(503, "unavailable", exc.message, headers={"Retry-After": str(retry_after)})


def queue_full_reply(gateway: Gateway, exc: QueueFull) -> Reply:
    """The coalescer holds its bound of customers: 503, come back in a second."""
    gateway.metrics.queue_full.inc()
    return error_reply(503, "queue_full", str(exc), headers={"Retry-After": "1"})


def refusal_reply(refusal: Refusal) -> Reply:
    """A rate limit's refusal (429, or 503 from a store that fails closed)."""
    headers = {} if refusal.retry_after_s is None else {
        "Retry-After": str(refusal.retry_after_s)}
    return error_reply(refusal.status, refusal.error, refusal.message, headers=headers)


def pin_version(scope: Any, state: dict[str, Any]) -> Reply | None:
    """Put the version an admin pinned (`X-Model-Version`) in `state["pinned_version"]`; the
    refusal when a caller's key pins one (403) or the header names no version (400)."""
    for name, value in scope["headers"]:
        if name == _VERSION_HEADER_LOWER:
            owner = state.get("api_key")
            if owner is None or owner.role != "admin":
                return error_reply(403, "forbidden", f"only an admin key may pin a model "
                                   f"version with {VERSION_HEADER}")
            text = value.decode("latin-1").strip()
            try:
                state["pinned_version"] = check_version(text)
            except RolloutError as exc:
                return error_reply(400, "invalid_request", str(exc),
                                   [{"field": VERSION_HEADER, "message": str(exc)}])
            return None
    return None


def _prediction(customer_id: str, answer: Answer, degraded: bool) -> dict[str, Any]:
    probability, risk, version = answer
    return {"customer_id": customer_id, "churn_probability": probability, "risk_level": risk,
            "model_version": version, "degraded": degraded}


async def predict_reply(gateway: Gateway, raw: bytes, state: dict[str, Any]) -> Reply:
    """The answer to a `/predict` body; the answering model's version goes to
    `state["model_version"]` for the metrics."""
    try:
        parsed: Any = gateway.models.predict.model_validate_json(raw)
        answers, degraded = await gateway.answer(
            [customer_row(parsed)], coalesce=True, customer_ids=(parsed.customer_id,),
            version=state.get("pinned_version"))
    except (ValidationError, Problem400) as exc:
        return refused(exc)
    except UpstreamError as exc:
        return failure_reply(gateway, exc)
    except QueueFull as exc:
        return queue_full_reply(gateway, exc)
    state["model_version"] = answers[0][2]
    return Reply(200, orjson.dumps(_prediction(parsed.customer_id, answers[0], degraded[0])))


async def predict_batch_reply(gateway: Gateway, raw: bytes, state: dict[str, Any]) -> Reply:
    """The answer to a `/predict/batch` body: its customers in one Triton request, charged to
    the rate limits (the first one was, on arrival: RateLimitMiddleware)."""
    try:
        parsed: Any = gateway.models.batch.model_validate_json(raw)
        rows = [customer_row(item) for item in parsed.customers]
        owner = state.get("api_key")
        if owner is not None and len(rows) > 1:
            refusal = await gateway.limits.admit(owner.name, len(rows) - 1, paid=1)
            if refusal is not None:
                return refusal_reply(refusal)
        answers, degraded = await gateway.answer(
            rows, coalesce=False, customer_ids=[item.customer_id for item in parsed.customers],
            version=state.get("pinned_version"))
    except (ValidationError, Problem400) as exc:
        return refused(exc)
    except UpstreamError as exc:
        return failure_reply(gateway, exc)
    state["model_version"] = answers[0][2]
    return Reply(200, orjson.dumps({"predictions": [
        _prediction(item.customer_id, answer, flag)
        for item, answer, flag in zip(parsed.customers, answers, degraded, strict=True)]}))


def check_length(declared: bytes | str | None, limit: int) -> None:
    """Refuse a body from its Content-Length, before reading it."""
    if declared is None:
        return
    if not declared.isdigit():
        raise Problem400([{"field": "body", "message": "Content-Length is not a number"}])
    if int(declared) > limit:
        raise TooLarge(int(declared), limit)


class _Disconnected(Exception):
    """The client went away before its body arrived: nobody to answer."""


#: After refusing a body as too large, read and discard up to this many more bytes of it, for at
#: most _DRAIN_S, before answering. Without it a client still sending (urllib, curl) often got a
#: broken pipe instead of the 413: uvicorn closes a `Connection: close` connection as soon as
#: the answer is out. Keep-alive clients' remaining bytes are skipped by uvicorn itself.
_DRAIN_MAX_BYTES = 4 << 20
_DRAIN_S = 1.0


async def receive_body(scope: Any, receive: Any, limit: int) -> bytes:
    """The request's body from ASGI messages, refused (413) without keeping more than `limit`
    bytes of it: from its Content-Length when it has one, else once it grows past the limit."""
    declared = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = value
            break
    try:
        check_length(declared, limit)
    except TooLarge:
        await _drain(receive)
        raise
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected
    body = message.get("body", b"")
    more = message.get("more_body", False)
    if not more and len(body) <= limit:  # the usual case: the body in one message
        return bytes(body)
    chunks = bytearray(body)
    while more and len(chunks) <= limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks += message.get("body", b"")
        more = message.get("more_body", False)
    if len(chunks) > limit:
        if more:
            await _drain(receive)
        raise TooLarge(len(chunks), limit)
    return bytes(chunks)


async def _drain(receive: Any) -> None:
    """Read and drop the rest of a refused body, within _DRAIN_MAX_BYTES and _DRAIN_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DRAIN_S
    dropped = 0
    while dropped <= _DRAIN_MAX_BYTES:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            return
        dropped += len(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return


class PredictEndpoint:
    """Pure ASGI: answers `POST /predict` and `POST /predict/batch` (the middlewares for keys,
    rate limits and metrics wrap it, as they wrap the FastAPI app)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.limit = gateway.settings.max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        state = scope.setdefault("state", {})
        try:
            raw = await receive_body(scope, receive, self.limit)
            pinned = pin_version(scope, state)
            if pinned is not None:
                reply = pinned
            elif scope["path"] == "/predict":
                reply = await predict_reply(self.gateway, raw, state)
            else:
                reply = await predict_batch_reply(self.gateway, raw, state)
        except (Problem400, TooLarge) as exc:
            reply = refused(exc)
        except _Disconnected:
            return
        except Exception:
            logger.exception("unexpected error on %s", scope["path"])
            reply = crashed_reply()
        headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(reply.body))]
        if reply.headers:
            headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                        for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
