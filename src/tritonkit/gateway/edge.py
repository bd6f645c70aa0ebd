"""The gateway's HTTP edge: uvicorn with deadlines a slow or abusive client cannot outlast.

uvicorn closes an idle kept-alive connection after `timeout_keep_alive`, but nothing bounds a
request while it arrives: a client that dribbles its headers, or sends half a body and stops,
holds its connection (and, for the body, a task) forever, and enough of them take every
connection the process can serve (slowloris). `GuardedHttpTools` is uvicorn's httptools
protocol with three limits (GatewaySettings):

- `header_timeout_s`: from a connection's first byte (or a request's) to the end of its
  headers; past it the client gets 408 and the connection closes;
- `body_timeout_s`: from the end of the headers to the end of the body; 408 likewise, and the
  handler waiting for the body sees the client gone;
- `max_connections`: a request that arrives while more connections are open gets 503 with
  `Retry-After` and the connection closes; the deadlines above reap the slow ones.

Each refusal is counted (`gateway_connection_refusals_total{reason}`) and answered as every
gateway error is (`errors.problem_reply`), then the connection closes. The edge stands on the
core (`core.Gateway`: its settings and metrics), not on the FastAPI app it serves::

    config = server_config(gateway_app(gateway), gateway, log_level="info")   # the CLI's
    uvicorn.Server(config).run()
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import TYPE_CHECKING, Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tritonkit.gateway.errors import GatewayError, RequestTimeout, Unavailable, problem_reply

if TYPE_CHECKING:
    from tritonkit.gateway.core import Gateway

logger = logging.getLogger(__name__)
#: How long a refused connection may take to close before it is aborted, seconds.
_ABORT_AFTER_S = 1.0


def _response(exc: GatewayError) -> bytes:
    """The raw HTTP/1.1 answer to `exc`, closing the connection."""
    reply = problem_reply(exc)
    head = [f"HTTP/1.1 {reply.status} {http.HTTPStatus(reply.status).phrase}",
            "content-type: application/json", f"content-length: {len(reply.body)}",
            "connection: close", *(f"{k.lower()}: {v}" for k, v in reply.headers.items())]
    return "\r\n".join([*head, "", ""]).encode("latin-1") + reply.body


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines and a connection limit
    (`server_config` sets the class attributes from the settings)."""

    header_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 1024
    #: a prometheus Counter labelled by reason: header_timeout, body_timeout, connection_limit
    refusals: ClassVar[Any] = None

    def connection_made(self, transport: Any) -> None:
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._lost = False
        super().connection_made(transport)
        self._arm("header")

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the answer is out and the connection closing: nothing more is read
        super().data_received(data)

    # -- parser callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the next request on a kept-alive connection
            self._arm("header")

    def on_headers_complete(self) -> None:
        self._disarm()
        if len(self.connections) > self.max_connections:
            self._refuse("connection_limit", Unavailable(
                f"the gateway holds {len(self.connections) - 1} connections, its limit is "
                f"{self.max_connections}: retry shortly", retry_after_s=1))
            return
        super().on_headers_complete()
        self._arm("body")  # a request without a body completes at once: disarmed below

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if not self._refused:
            super().on_message_complete()

    # -- deadlines -------------------------------------------------------------------------------
    def _arm(self, phase: str) -> None:
        self._disarm()
        timeout_s = self.header_timeout_s if phase == "header" else self.body_timeout_s
        self._deadline = self.loop.call_later(timeout_s, self._expired, phase, timeout_s)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str, timeout_s: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if phase == "header" and cycle is not None and not cycle.response_complete:
            self._arm("header")  # a pipelined request while an answer is still going out
            return
        if phase == "body" and cycle is not None and cycle.response_started:
            # answered before its body finished arriving (a 413, say): nothing else to send
            self._count("body_timeout")
            self._close()
            return
        what = "headers" if phase == "header" else "body"
        self._refuse(f"{phase}_timeout", RequestTimeout(
            f"the request's {what} did not arrive within {timeout_s:g} s"))

    def _refuse(self, reason: str, exc: GatewayError) -> None:
        self._refused = True
        self._count(reason)
        logger.info("refused %s: %s", self.client, reason)
        self.transport.write(_response(exc))
        self._close()

    def _close(self) -> None:
        """Close now, and stop counting the connection at once: over TLS a close waits for the
        peer's close_notify (asyncio: up to 30 s), which a slow client never sends, and the
        connection would hold a slot of `max_connections` (and keep shutdown waiting) until
        then. It is aborted if still open after _ABORT_AFTER_S."""
        self.transport.close()
        self.connections.discard(self)
        self.loop.call_later(_ABORT_AFTER_S, self._abort)

    def _abort(self) -> None:
        if not self._lost:
            self.transport.abort()

    def _count(self, reason: str) -> None:
        if self.refusals is not None:
            self.refusals.labels(reason).inc()


def server_config(app: Any, gateway: Gateway, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the ASGI `app` serving `gateway` (`app.gateway_app`): TLS,
    the guarded protocol with the settings' deadlines and limit, its refusals counted in the
    gateway's metrics; `options` go to uvicorn.Config."""
    settings = gateway.settings
    protocol = type("GatewayHttp", (GuardedHttpTools,), {
        "header_timeout_s": settings.header_timeout_s,
        "body_timeout_s": settings.body_timeout_s,
        "max_connections": settings.max_connections,
        "refusals": gateway.metrics.connection_refusals,
    })
    values: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "ssl_certfile": settings.tls_cert,
        "ssl_keyfile": settings.tls_key, "server_header": False, "http": protocol,
        "timeout_keep_alive": settings.keep_alive_timeout_s, "lifespan": "on",
        "loop": "uvloop",
    }
    values.update(options)
    return uvicorn.Config(app, **values)
