"""`POST /predict` and `POST /predict/batch`: the answers, and the pure-ASGI endpoint that
serves them on the hot path.

Every call goes body (413 past the limit) → contract (400, every problem by field) → a batch's
customers charged to the rate limits (429) → Triton through the coalescer (503 when its queue is
full) and the breaker, or the fallback (`degraded: true`) → JSON. Each refusal is raised as a
`errors.GatewayError` and answered by `errors.problem_reply`. The same `Reply` comes back
whichever way the request arrived: through `PredictEndpoint` (what the gateway's `__call__`
sends these two routes to, skipping FastAPI's middleware stack, routing, dependency injection
and Request objects, which cost more CPU than everything else the gateway does per call) or
through the FastAPI routes that document them; both call the core (`core.Gateway`)::

    endpoint = PredictEndpoint(gateway)          # an ASGI app for the two paths
    reply = await predict_reply(gateway, b'{"customer_id": ...}', state={})
    reply.status, reply.body                     # 200, b'{"customer_id":...,"degraded":false}'
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError

from tritonkit.gateway.errors import (
    CRASHED,
    Forbidden,
    GatewayError,
    InvalidRequest,
    Reply,
    TooLarge,
    problem_reply,
    send_reply,
)
from tritonkit.gateway.schemas import customer_row, problems
from tritonkit.gateway.versions import RolloutError, check_version
from tritonkit.gateway.wire import Answer

if TYPE_CHECKING:
    from tritonkit.gateway.core import Gateway

logger = logging.getLogger(__name__)

PREDICT_PATHS = ("/predict", "/predict/batch")
#: An admin's request may name the model version that answers it (a rollout's checks, a
#: comparison by hand); a caller's key may not (its customers' version is the router's).
VERSION_HEADER = "X-Model-Version"
_VERSION_HEADER_LOWER = VERSION_HEADER.lower().encode()


def contract_refusal(exc: ValidationError) -> InvalidRequest:
    """The 400 of a body the contract refuses: every problem by field."""
    return InvalidRequest("the request does not match the contract: see problems",
                          problems=problems(exc))


def _validated(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise contract_refusal(exc) from None


def pin_version(scope: Any, state: dict[str, Any]) -> None:
    """Put the version an admin pinned (`X-Model-Version`) in `state["pinned_version"]`.

    Raises:
        Forbidden: a caller's key pins one (403).
        InvalidRequest: the header names no version (400).
    """
    for name, value in scope["headers"]:
        if name == _VERSION_HEADER_LOWER:
            owner = state.get("api_key")
            if owner is None or owner.role != "admin":
                raise Forbidden(f"only an admin key may pin a model version with "
                                f"{VERSION_HEADER}")
            text = value.decode("latin-1").strip()
            try:
                state["pinned_version"] = check_version(text)
            except RolloutError as exc:
                raise InvalidRequest.of_field(VERSION_HEADER, str(exc)) from None
            return


def _prediction(customer_id: str, answer: Answer, degraded: bool) -> dict[str, Any]:
    probability, risk, version = answer
    return {"customer_id": customer_id, "churn_probability": probability, "risk_level": risk,
            "model_version": version, "degraded": degraded}


async def predict_reply(gateway: Gateway, raw: bytes, state: dict[str, Any]) -> Reply:
    """The answer to a `/predict` body; the answering model's version goes to
    `state["model_version"]` for the metrics.

    Raises:
        GatewayError: the contract refused the body (400), Triton failed with no fallback
            (`UpstreamError`), or the coalescer is full (`QueueFull`).
    """
    parsed = _validated(gateway.models.predict, raw)
    answers, degraded = await gateway.answer(
        [customer_row(parsed)], coalesce=True, customer_ids=(parsed.customer_id,),
        version=state.get("pinned_version"))
    state["model_version"] = answers[0][2]
    return Reply(200, orjson.dumps(_prediction(parsed.customer_id, answers[0], degraded[0])))


async def predict_batch_reply(gateway: Gateway, raw: bytes, state: dict[str, Any]) -> Reply:
    """The answer to a `/predict/batch` body: its customers in one Triton request, charged to
    the rate limits (the first one was, on arrival: RateLimitMiddleware).

    Raises:
        GatewayError: as `predict_reply`, or the rate limits refused the other customers.
    """
    parsed = _validated(gateway.models.batch, raw)
    rows = [customer_row(item) for item in parsed.customers]
    owner = state.get("api_key")
    if owner is not None and len(rows) > 1:
        refusal = await gateway.limits.admit(owner.name, len(rows) - 1, paid=1)
        if refusal is not None:
            raise refusal
    answers, degraded = await gateway.answer(
        rows, coalesce=False, customer_ids=[item.customer_id for item in parsed.customers],
        version=state.get("pinned_version"))
    state["model_version"] = answers[0][2]
    return Reply(200, orjson.dumps({"predictions": [
        _prediction(item.customer_id, answer, flag)
        for item, answer, flag in zip(parsed.customers, answers, degraded, strict=True)]}))


def check_length(declared: bytes | str | None, limit: int) -> None:
    """Refuse a body from its Content-Length, before reading it."""
    if declared is None:
        return
    if not declared.isdigit():
        raise InvalidRequest("invalid request", problems=[
            {"field": "body", "message": "Content-Length is not a number"}])
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
            pin_version(scope, state)
            if scope["path"] == "/predict":
                reply = await predict_reply(self.gateway, raw, state)
            else:
                reply = await predict_batch_reply(self.gateway, raw, state)
        except GatewayError as exc:
            reply = problem_reply(exc)
        except _Disconnected:
            return
        except Exception:
            logger.exception("unexpected error on %s", scope["path"])
            reply = problem_reply(GatewayError(CRASHED))
        await send_reply(send, reply)
