"""Delivery of the alert engine's alerts: to an Alertmanager's API and to webhooks (v4 payload).

Sinks for `tritonkit.monitor.alerts.AlertEngine`; a failed delivery raises `DeliveryError`,
which the engine logs and retries at its next evaluation::

    engine = AlertEngine(rules, sinks=[AlertmanagerSink("http://127.0.0.1:9093"),
                                       WebhookSink("http://hooks.example/churn")])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import httpx

from tritonkit.monitor.alerts import Alert, DeliveryError, fingerprint

_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end" in webhook payloads


def _timestamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _HttpSink:
    def __init__(self, url: str, *, timeout_s: float, resend_s: float | None) -> None:
        self.name = url
        self.resend_s = resend_s
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s))

    def _post(self, url: str, payload: Any) -> None:
        try:
            response = self._client.post(url, json=payload)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"POST {url} failed: {exc!r}") from exc
        if response.is_error:
            raise DeliveryError(f"POST {url} answered {response.status_code}: "
                                f"{response.text[:200]}")

    def close(self) -> None:
        self._client.close()


class AlertmanagerSink(_HttpSink):
    """Alertmanager's `POST /api/v2/alerts`. Firing alerts carry an `endsAt` of four resend
    periods ahead (as Prometheus does), so they expire if the sidecar stops re-sending them."""

    def __init__(self, url: str, *, resend_s: float = 60.0, timeout_s: float = 5.0) -> None:
        """`url`: Alertmanager's base URL, e.g. http://127.0.0.1:9093."""
        super().__init__(url, timeout_s=timeout_s, resend_s=resend_s)
        self._endpoint = url.rstrip("/") + "/api/v2/alerts"

    def send(self, alerts: Sequence[Alert], now: float) -> None:
        expiry = now + 4 * (self.resend_s or 60.0)
        self._post(self._endpoint, [
            {"labels": dict(a.labels), "annotations": dict(a.annotations),
             "startsAt": _timestamp(a.starts_at),
             "endsAt": _timestamp(expiry if a.ends_at is None else a.ends_at),
             **({"generatorURL": a.generator_url} if a.generator_url else {})}
            for a in alerts
        ])


class WebhookSink(_HttpSink):
    """Any URL that takes Alertmanager's webhook payload (version 4), one POST per alertname.

    Unlike Alertmanager, a payload holds the alerts being announced now, not the whole group.
    """

    def __init__(self, url: str, *, receiver: str = "tritonkit", external_url: str = "",
                 resend_s: float | None = None, timeout_s: float = 5.0) -> None:
        super().__init__(url, timeout_s=timeout_s, resend_s=resend_s)
        self._url, self._receiver, self._external_url = url, receiver, external_url

    def send(self, alerts: Sequence[Alert], now: float) -> None:
        groups: dict[str, list[Alert]] = {}
        for alert in alerts:
            groups.setdefault(alert.labels["alertname"], []).append(alert)
        for name, group in groups.items():
            self._post(self._url, self.payload(name, group))

    def payload(self, alertname: str, alerts: Sequence[Alert]) -> dict[str, Any]:
        """The version-4 webhook body for one group of alerts."""
        def common(maps: list[Mapping[str, str]]) -> dict[str, str]:
            return {k: v for k, v in maps[0].items() if all(m.get(k) == v for m in maps[1:])}

        return {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{alertname}"}}',
            "truncatedAlerts": 0,
            "status": "firing" if any(a.status == "firing" for a in alerts) else "resolved",
            "receiver": self._receiver,
            "groupLabels": {"alertname": alertname},
            "commonLabels": common([a.labels for a in alerts]),
            "commonAnnotations": common([a.annotations for a in alerts]),
            "externalURL": self._external_url,
            "alerts": [
                {"status": a.status, "labels": dict(a.labels),
                 "annotations": dict(a.annotations), "startsAt": _timestamp(a.starts_at),
                 "endsAt": _ZERO_TIME if a.ends_at is None else _timestamp(a.ends_at),
                 "generatorURL": a.generator_url, "fingerprint": fingerprint(a.labels)}
                for a in alerts
            ],
        }
