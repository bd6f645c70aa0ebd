"""The monitoring sidecar's HTTP API: GET `/metrics`, `/health`, `/alerts`, `/report`, `/` and
the alert inbox (GET `/alerts/inbox` shows it; Alertmanager's default receivers POST to
`/alerts/inbox/<receiver>`: `tritonkit.monitor.inbox`). `MonitorService` serves it; anything
with `Sidecar`'s members can::

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(service))
    alert_json(alert)       # {"status", "labels", "annotations", "startsAt", "endsAt"}
"""

from __future__ import annotations

import json
import logging
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tritonkit.monitor.alerts import Alert, Transition
from tritonkit.monitor.health import HealthReport
from tritonkit.monitor.inbox import MAX_BODY_BYTES, Inbox, InboxRefused
from tritonkit.monitor.metrics import SidecarMetrics

logger = logging.getLogger(__name__)


class Sidecar(Protocol):
    """What the HTTP API reads from the sidecar (`MonitorService`)."""

    metrics: SidecarMetrics
    inbox: Inbox

    def health_report(self) -> HealthReport: ...

    def alerts_json(self) -> dict[str, Any]: ...

    def report_html(self) -> str: ...

    def receive_notification(self, receiver: str, body: bytes) -> dict[str, Any]: ...


def iso(seconds: float | None) -> str | None:
    """`seconds` since the epoch as UTC ISO 8601, as Alertmanager writes times."""
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def alert_json(alert: Alert) -> dict[str, Any]:
    """A firing or resolved alert as `/alerts` shows it (Alertmanager's field names)."""
    return {"status": alert.status, "labels": dict(alert.labels),
            "annotations": dict(alert.annotations), "startsAt": iso(alert.starts_at),
            "endsAt": iso(alert.ends_at)}


def transition_json(transition: Transition) -> dict[str, Any]:
    """A resolved alert's transition as `/alerts` lists it under "resolved"."""
    return {"status": transition.state, "labels": dict(transition.labels),
            "value": transition.value, "endsAt": iso(transition.at)}


#: where Alertmanager's default receivers deliver (POST <INBOX>/<receiver>), and GET shows them
INBOX = "/alerts/inbox"


def handler(service: Sidecar) -> type[BaseHTTPRequestHandler]:
    """The request handler of the API, answering from `service`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path.rstrip("/") or "/"
            try:
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(service.metrics.registry))
                elif path == "/health":
                    report = service.health_report()
                    self._json(200 if report.ok else 503, report.as_json())
                elif path == "/alerts":
                    self._json(200, service.alerts_json())
                elif path == INBOX:
                    self._json(200, service.inbox.as_json())
                elif path == "/report":
                    self._send(200, "text/html; charset=utf-8", service.report_html().encode())
                elif path == "/":
                    self._json(200, {"endpoints": ["/health", "/alerts", "/report", "/metrics",
                                                   INBOX]})
                else:
                    self._json(404, {"error": f"no such endpoint {path}: try /health, /alerts, "
                                              f"/report, /metrics or {INBOX}"})
            except Exception as exc:  # one bad request must not stop the sidecar
                logger.exception("GET %s failed", path)
                self._json(500, {"error": f"GET {path} failed: {exc!r}"})

        def do_POST(self) -> None:
            path = urlsplit(self.path).path.rstrip("/")
            if not path.startswith(INBOX + "/"):
                self._json(404, {"error": f"nothing takes a POST at {path}: Alertmanager posts "
                                          f"to {INBOX}/<receiver>"})
                return
            try:
                length = int(self.headers.get("Content-Length") or -1)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                self._json(411, {"error": "the POST needs a Content-Length"})
                return
            if length > MAX_BODY_BYTES:
                self.close_connection = True  # the body stays unread
                self._json(413, {"error": f"the payload has {length} bytes, more than the "
                                          f"{MAX_BODY_BYTES} the inbox takes"})
                return
            try:
                notification = service.receive_notification(
                    path.removeprefix(INBOX + "/"), self.rfile.read(length))
            except InboxRefused as exc:
                self._json(exc.status, {"error": str(exc)})
            except Exception as exc:  # one bad request must not stop the sidecar
                logger.exception("POST %s failed", path)
                self._json(500, {"error": f"POST {path} failed: {exc!r}"})
            else:
                self._json(200, {"received": len(notification["alerts"])})

        def _json(self, status: int, body: Any) -> None:
            self._send(status, "application/json", json.dumps(body, indent=1).encode())

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

    return Handler
