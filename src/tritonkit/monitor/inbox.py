"""The sidecar's alert inbox: the receiver Alertmanager delivers to until you name your own.

Alertmanager's default receivers (monitoring/alertmanager/alertmanager.yml, the URLs in
`make production-secrets`' files and `make up`'s rendered config) post their version-4 webhook
payloads to `POST /alerts/inbox/<receiver>`; `GET /alerts/inbox` shows the latest of them, so a
fresh stack shows the notifications it really delivered, not only the alerts it holds::

    inbox = Inbox(capacity=200)
    inbox.receive("pager", body)           # the bytes Alertmanager posted; InboxRefused if not v4
    inbox.as_json()["notifications"][0]    # the newest: receiver, status, alerts, received_at

It keeps the newest `capacity` notifications in memory only: a place to see delivery work, not
a pager. The dead-man receiver's Watchdog notifications arrive every 5 minutes; their age is
`tritonkit_monitor_notification_last_received_timestamp_seconds{receiver="deadman"}`.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
from typing import Any

#: A bigger body is refused unread (Alertmanager's payload for a few hundred alerts is ~100 KiB).
MAX_BODY_BYTES = 1 << 20
_RECEIVER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class InboxRefused(Exception):
    """A post the inbox does not take; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Inbox:
    """The newest notifications Alertmanager delivered, by receiver."""

    def __init__(self, capacity: int = 200) -> None:
        self._notifications: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=capacity)
        self._received: collections.Counter[str] = collections.Counter()
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def receive(self, receiver: str, body: bytes, now: float | None = None) -> dict[str, Any]:
        """Take one webhook payload; returns the notification as kept."""
        if not _RECEIVER.match(receiver):
            raise InboxRefused(404, f"no receiver named {receiver[:64]!r}: POST to "
                                    "/alerts/inbox/<receiver> (letters, digits, '_.-')")
        if len(body) > MAX_BODY_BYTES:
            raise InboxRefused(413, f"the payload has {len(body)} bytes, more than the "
                                    f"{MAX_BODY_BYTES} the inbox takes")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InboxRefused(400, f"the payload is not JSON: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("version") != "4":
            raise InboxRefused(400, "not an Alertmanager webhook payload: it needs "
                                    '"version": "4" (Alertmanager 0.25 and later send it)')
        alerts = payload.get("alerts")
        if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
            raise InboxRefused(400, 'the payload\'s "alerts" is not a list of alerts')
        at = time.time() if now is None else now
        notification = {
            "receiver": receiver,
            "status": str(payload.get("status", "")),
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
            "group_key": str(payload.get("groupKey", "")),
            "alerts": [{"status": str(a.get("status", "")),
                        "labels": _strings(a.get("labels")),
                        "annotations": _strings(a.get("annotations")),
                        "startsAt": str(a.get("startsAt", ""))} for a in alerts],
        }
        with self._lock:
            self._notifications.appendleft(notification)
            self._received[receiver] += 1
            self._last[receiver] = at
        return notification

    def last_received(self) -> dict[str, float]:
        """Unix time of the newest notification, by receiver."""
        with self._lock:
            return dict(self._last)

    def as_json(self) -> dict[str, Any]:
        """What `GET /alerts/inbox` answers: counts by receiver, then the newest first."""
        with self._lock:
            return {
                "receivers": {name: {"received": count, "last_received_at": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._last[name]))}
                    for name, count in sorted(self._received.items())},
                "notifications": list(self._notifications),
            }


def _strings(mapping: Any) -> dict[str, str]:
    if not isinstance(mapping, dict):
        return {}
    return {str(key): str(value) for key, value in mapping.items()}
