"""Alert delivery to real receivers: a real Alertmanager (Debian's `prometheus-alertmanager`) on a
free port, and a local HTTP receiver that records version-4 webhook payloads."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tritonkit.monitor.alerts import AlertEngine, AlertRules, fingerprint
from tritonkit.monitor.delivery import AlertmanagerSink, WebhookSink
from tritonkit.serve.ports import free_port

from ..support import require_tool

ALERTMANAGER_CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""
RULES = AlertRules.model_validate({"rules": [
    {"name": "FeatureDrift", "signal": "feature_drift", "op": ">", "threshold": 0.5,
     "clear_threshold": 0.5, "for_s": 0, "resolve_after_s": 0, "severity": "warning",
     "summary": "{feature} drifted (level {value:.0f})",
     "description": "The live distribution moved away from training."},
    {"name": "ErrorRateHigh", "signal": "error_rate", "op": ">", "threshold": 0.05,
     "clear_threshold": 0.03, "for_s": 0, "resolve_after_s": 0, "severity": "page",
     "summary": "error rate {value:.0%}"},
]})
GENERATOR_URL = "http://127.0.0.1:9/alerts"


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Alertmanager with a null receiver on a free port; yields its base URL."""
    binary = require_tool("prometheus-alertmanager", "apt-get install prometheus-alertmanager",
                          "alertmanager")
    folder = tmp_path_factory.mktemp("alertmanager")
    config = folder / "alertmanager.yml"
    config.write_text(ALERTMANAGER_CONFIG)
    url = f"http://127.0.0.1:{free_port()}"
    log_path = folder / "alertmanager.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--web.listen-address={url.removeprefix('http://')}",
             f"--storage.path={folder / 'data'}", f"--config.file={config}",
             "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(url, process, log_path, timeout_s=30)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float
                ) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"alertmanager exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    pytest.fail(f"alertmanager not ready after {timeout_s} s:\n{log.read_text()}")


class Receiver(ThreadingHTTPServer):
    """Records the JSON bodies POSTed to it; answers with `statuses` in turn, then 200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.payloads: list[dict[str, Any]] = []
        self.statuses: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _RecordingHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        if status == 200:
            self.server.payloads.append(body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the request log out of the test output."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _alerts(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v2/alerts", timeout=5.0)
    response.raise_for_status()
    return [a for a in response.json() if a["labels"].get("service") == "tritonkit"]


def test_alertmanager_shows_the_engines_alerts_and_drops_them_when_resolutions_are_sent(
    alertmanager: str,
) -> None:
    with AlertEngine(RULES, sinks=[AlertmanagerSink(alertmanager, resend_s=60)],
                     generator_url=GENERATOR_URL) as engine:
        engine.evaluate(time.time(), {"feature_drift": {"tenure": 2.0, "contract": 0.0},
                                      "error_rate": 0.2})
        shown = {a["labels"]["alertname"]: a for a in _alerts(alertmanager)}
        assert set(shown) == {"FeatureDrift", "ErrorRateHigh"}  # contract did not drift
        drift = shown["FeatureDrift"]
        assert drift["labels"] == {"alertname": "FeatureDrift", "severity": "warning",
                                   "service": "tritonkit", "feature": "tenure"}
        assert drift["annotations"]["summary"] == "tenure drifted (level 2)"
        assert drift["status"]["state"] == "active"
        assert drift["generatorURL"] == GENERATOR_URL
        assert drift["fingerprint"] == fingerprint(drift["labels"])  # same hash as ours

        engine.evaluate(time.time(), {"feature_drift": {"tenure": 0.0}})
        assert [a["labels"]["alertname"] for a in _alerts(alertmanager)] == ["ErrorRateHigh"]
        engine.evaluate(time.time(), {"error_rate": 0.0})
        assert _alerts(alertmanager) == []


def test_webhook_receives_v4_payloads_when_alerts_fire_and_resolve(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url, receiver="churn-team", external_url="http://sidecar:9100")
    with AlertEngine(RULES, sinks=[sink], generator_url=GENERATOR_URL) as engine:
        started = 1_700_000_000.0
        engine.evaluate(started, {"feature_drift": {"tenure": 2.0, "contract": 1.0}})
        engine.evaluate(started + 60, {"feature_drift": {"tenure": 2.0, "contract": 1.0}})
        engine.evaluate(started + 120, {"feature_drift": {"tenure": 0.0, "contract": 1.0}})

    firing, resolved = receiver.payloads  # nothing re-sent at +60: announced once
    assert {k: v for k, v in firing.items() if k != "alerts"} == {
        "version": "4",
        "groupKey": '{}:{alertname="FeatureDrift"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "churn-team",
        "groupLabels": {"alertname": "FeatureDrift"},
        "commonLabels": {"alertname": "FeatureDrift", "severity": "warning",
                         "service": "tritonkit"},
        "commonAnnotations": {"description": "The live distribution moved away from training."},
        "externalURL": "http://sidecar:9100",
    }
    by_feature = {a["labels"]["feature"]: a for a in firing["alerts"]}
    assert set(by_feature) == {"tenure", "contract"}
    tenure = by_feature["tenure"]
    assert tenure == {
        "status": "firing",
        "labels": {"alertname": "FeatureDrift", "severity": "warning", "service": "tritonkit",
                   "feature": "tenure"},
        "annotations": {"summary": "tenure drifted (level 2)",
                        "description": "The live distribution moved away from training."},
        "startsAt": "2023-11-14T22:13:20.000Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": GENERATOR_URL,
        "fingerprint": fingerprint(tenure["labels"]),
    }
    assert resolved["status"] == "resolved"
    [ended] = resolved["alerts"]
    assert (ended["labels"]["feature"], ended["status"]) == ("tenure", "resolved")
    assert (ended["startsAt"], ended["endsAt"]) == ("2023-11-14T22:13:20.000Z",
                                                    "2023-11-14T22:15:20.000Z")
    assert ended["fingerprint"] == tenure["fingerprint"]


def test_engine_logs_and_redelivers_when_the_webhook_fails_or_is_unreachable(
    receiver: Receiver, caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.statuses = [503]
    unreachable = WebhookSink(f"http://127.0.0.1:{free_port()}/hook", timeout_s=2.0)
    with caplog.at_level(logging.WARNING, logger="tritonkit.monitor.alerts"), AlertEngine(
        RULES, sinks=[WebhookSink(receiver.url), unreachable]) as engine:
        engine.evaluate(1_700_000_000.0, {"error_rate": 0.2})
        assert receiver.payloads == []
        engine.evaluate(1_700_000_030.0, {"error_rate": 0.2})
    [payload] = receiver.payloads
    assert payload["alerts"][0]["labels"]["alertname"] == "ErrorRateHigh"
    failures = [r.getMessage() for r in caplog.records if "could not deliver" in r.getMessage()]
    assert any("answered 503" in m for m in failures)
    assert sum("ConnectError" in m for m in failures) == 2  # tried at each evaluation
