"""The gateway's errors, each an HTTP answer, and the one function that answers them.

Every error the gateway answers a caller with is a `GatewayError` (a `TritonKitError`): it
carries its status, the contract's error code, a message, the problems by field and, when
waiting helps, Retry-After's seconds. `problem_reply` turns any of them into the contract's
error body (`{"error", "message", "problems"}`); the HTTP edge (`edge`), the ASGI middlewares
and endpoint (`auth`, `ratelimit`, `predict`) and the FastAPI app (`app`, `admin`) all answer
through it. The tree, with each status:

    GatewayError          500 internal
    ├── InvalidRequest    400 invalid_request (404 or 409 where the admin API says so)
    ├── Unauthorized      401 unauthorized, WWW-Authenticate
    ├── Forbidden         403 forbidden
    ├── NotFound          404 not_found
    ├── RequestTimeout    408 request_timeout
    ├── TooLarge          413 body_too_large
    ├── RateLimited       429 rate_limited, Retry-After unless waiting cannot help
    ├── Unavailable       503 unavailable, Retry-After when given
    │   └── QueueFull     503 queue_full, Retry-After 1
    ├── UpstreamError     Triton's failure, by kind (UpstreamError.ANSWERS): the one place its
    │   │                 status is decided
    │   └── MalformedAnswer  an answer without the contract's outputs (kind `server`: 500)
    ├── ReloadFailed      502 upstream_error
    └── NotReady          504 not_ready

::

    reply = problem_reply(TooLarge(300_000, 262_144))   # Reply(413, b'{"error":...}', {})
    await send_reply(send, reply)                        # from an ASGI app
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, NamedTuple

import orjson

from tritonkit.errors import TritonKitError

#: One problem of a request: the field (or `body`, or a header's name) and what is wrong with it.
FieldProblem = Mapping[str, str]


class Reply(NamedTuple):
    """One answer: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: Mapping[str, str] = {}


class GatewayError(TritonKitError):
    """An error the gateway answers a caller with. `status` and `error` are the class's unless
    given; `retry_after_s`: seconds for Retry-After (None: no header); `headers`: any others."""

    status: int = 500
    error: str = "internal"

    def __init__(self, message: str, *, problems: Sequence[FieldProblem] = (),
                 retry_after_s: int | None = None, status: int | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)
        self.retry_after_s = retry_after_s
        if status is not None:
            self.status = status
        self.headers: Mapping[str, str] = headers or {}

    def answer(self) -> tuple[str, list[FieldProblem]]:
        """(the message, the problems) the caller reads: those of the error, unless a class
        says otherwise."""
        return self.message, self.problems


class InvalidRequest(GatewayError):
    """A request the contract refuses: every problem by field."""

    status = 400
    error = "invalid_request"

    @classmethod
    def of_field(cls, field: str, message: str, status: int | None = None) -> InvalidRequest:
        """The refusal of one field, its problem the message."""
        return cls(message, problems=[{"field": field, "message": message}], status=status)


class Unauthorized(GatewayError):
    """No valid API key."""

    status = 401
    error = "unauthorized"


class Forbidden(GatewayError):
    """A valid key that may not do this."""

    status = 403
    error = "forbidden"


class NotFound(GatewayError):
    """What the request names does not exist."""

    status = 404
    error = "not_found"


class RequestTimeout(GatewayError):
    """A request's headers or body did not arrive in time (the HTTP edge)."""

    status = 408
    error = "request_timeout"


class TooLarge(GatewayError):
    """A body past the limit."""

    status = 413
    error = "body_too_large"

    def __init__(self, size: int, limit: int) -> None:
        message = f"body of {size} bytes is larger than the limit of {limit} bytes"
        super().__init__(message, problems=[{"field": "body", "message": message}])


class RateLimited(GatewayError):
    """Over a rate limit; no Retry-After when waiting cannot help (a batch larger than the
    limit allows at all)."""

    status = 429
    error = "rate_limited"


class Unavailable(GatewayError):
    """The gateway cannot serve this now."""

    status = 503
    error = "unavailable"


class QueueFull(Unavailable):
    """The coalescer holds `max_pending_rows` customers: this caller is refused, not queued."""

    error = "queue_full"

    def __init__(self, pending: int, bound: int) -> None:
        super().__init__(f"the gateway's queue to Triton is full: it holds {pending} customers, "
                         f"its bound is {bound}; retry after the Retry-After header's seconds",
                         retry_after_s=1)
        self.bound = bound


ErrorKind = Literal["bad_request", "unavailable", "timeout", "server", "breaker_open"]


class UpstreamError(GatewayError):
    """A call to Triton that gave no answer; `kind` says whose fault and what to do,
    `connection` that the replica could not be reached or dropped the call. Answered (when no
    fallback does) with the status and code of its kind in ANSWERS."""

    #: kind -> (status, code) of the answer: Triton's refusal of the input is the contract's 400,
    #: a failure of Triton's own 500, and every failure of the path 503 (retry later).
    ANSWERS: ClassVar[Mapping[ErrorKind, tuple[int, str]]] = {
        "bad_request": (400, "invalid_request"),
        "server": (500, "upstream_error"),
        "unavailable": (503, "unavailable"),
        "timeout": (503, "unavailable"),
        "breaker_open": (503, "unavailable"),
    }

    def __init__(self, kind: ErrorKind, message: str, *, connection: bool = False) -> None:
        status, self.error = self.ANSWERS[kind]
        super().__init__(message, status=status)
        self.kind: ErrorKind = kind
        self.connection = connection

    @property
    def counts_against_path(self) -> bool:
        """True for the failures that open the breaker (never a bad request)."""
        return self.kind in ("unavailable", "timeout", "server")

    @property
    def blames_caller(self) -> bool:
        """Triton refused the input: no fallback answers it instead."""
        return self.kind == "bad_request"

    def advise_retry(self, wait_s: float) -> None:
        """Retry-After of an answer the caller may retry later (503): `wait_s` (the breaker's
        wait), at least a second."""
        if self.status == 503:
            self.retry_after_s = max(1, math.ceil(wait_s))

    def answer(self) -> tuple[str, list[FieldProblem]]:
        if self.blames_caller:
            return "Triton refused the input", [{"field": "features", "message": self.message}]
        return self.message, self.problems

    def copy(self) -> UpstreamError:
        """A fresh instance for another waiter of the same failed call."""
        return UpstreamError(self.kind, self.message, connection=self.connection)


class MalformedAnswer(UpstreamError):
    """Triton's answer does not have the outputs the contract promises: Triton's failure."""

    def __init__(self, message: str) -> None:
        super().__init__("server", message)


class ReloadFailed(GatewayError):
    """Triton's repository API refused a load or an unload (the admin API)."""

    status = 502
    error = "upstream_error"


class NotReady(GatewayError):
    """A model version did not become ready, or failed its warm-up (the admin API)."""

    status = 504
    error = "not_ready"


#: What a crash of the gateway itself answers (the exception is logged).
CRASHED = "the gateway failed on this request; it is logged"


def problem_reply(exc: GatewayError) -> Reply:
    """The answer to any gateway error: its status, the contract's error body, Retry-After."""
    message, problems = exc.answer()
    body = orjson.dumps({"error": exc.error, "message": message, "problems": problems})
    headers = dict(exc.headers)
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    return Reply(exc.status, body, headers)


_JSON_HEADERS = [(b"content-type", b"application/json")]


async def send_reply(send: Any, reply: Reply) -> None:
    """Answer an ASGI request with `reply`."""
    headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(reply.body))]
    if reply.headers:
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def send_problem(send: Any, exc: GatewayError) -> None:
    """Answer an ASGI request with a gateway error."""
    await send_reply(send, problem_reply(exc))
