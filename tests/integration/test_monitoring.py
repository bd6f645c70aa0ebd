"""The monitoring sidecar against the real things: a tritonserver with summary latencies and a
restricted repository API, real traffic of held-out customers (shifted where drift is wanted), a
real Alertmanager, headless Chromium for the report, and the serve CLI that `make up` runs.

Windows are driven with `evaluate_once(now)` on a simulated clock that advances a whole window
per evaluation, so the shipped rules (configs/alerts.yaml: drift fires after 600 s, resolves
after 1800 s) are what is tested, in seconds; the traffic of each window is real and flushed by
the steps before the window closes.

    .venv/bin/python -m pytest tests/integration/test_monitoring.py -q
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonkit.gateway.settings import DEFAULT_KEYS_FILE, DEV_KEY_FILES
from tritonkit.monitor.alerts import DEFAULT_RULES
from tritonkit.monitor.exported import SIDECAR_METRICS
from tritonkit.monitor.service import Evaluation, MonitorService
from tritonkit.monitor.settings import MonitorSettings
from tritonkit.monitor.sources import PrometheusSource, TritonMetricsSource
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import TritonServer
from tritonkit.serve.stack import (
    ALERTMANAGER_BINARIES,
    PROMETHEUS_BINARIES,
    AlertmanagerProcess,
    PrometheusProcess,
    prometheus_config,
)
from tritonkit.tabular.artifacts import TabularArtifacts

from ..support import (
    batch_body,
    body_for,
    counter,
    post,
    require_tool,
    serve,
    stub_pids,
    with_input,
)

ADMIN_KEY = "monitor-test-admin-key"
#: Simulated seconds per window: the shipped drift rules fire after 600 s (`for_s`).
WINDOW_S = 600.0
DRIFT_RULES = {"ModelFeatureDrift", "ModelUnseenCategories", "ModelPredictionDrift",
               "ModelDatasetDrift"}
ROWS = "tritonkit_rows_total"


class Clock:
    """Simulated time for the sidecar's windows and alert rules."""

    def __init__(self) -> None:
        self.now = time.time()

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture(scope="module")
def monitored_triton(repositories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[TritonServer]:
    """The embedded repository as `make up` serves it: summaries on, repository API keyed."""
    server = serve(repositories["embedded"], tmp_path_factory.mktemp("monitored"),
                   summary_latencies=True, admin_key=ADMIN_KEY)
    yield server
    server.stop(check=True)


@pytest.fixture
def sidecar(monitored_triton: TritonServer) -> Iterator[Callable[..., MonitorService]]:
    """Make sidecars watching `monitored_triton` (HTTP on a free port, loops off: the test
    drives `evaluate_once`), once the steps have flushed every earlier row."""
    made: list[MonitorService] = []

    def make(**settings: Any) -> MonitorService:
        _settled(monitored_triton)
        defaults: dict[str, Any] = {
            "triton_url": monitored_triton.http_url, "metrics_url": monitored_triton.metrics_url,
            "port": 0, "window_s": WINDOW_S, "admin_key": ADMIN_KEY}
        service = MonitorService(MonitorSettings(**{**defaults, **settings}))
        made.append(service)
        return service.start(evaluate_loop=False, health_loop=False)

    yield make
    for service in made:
        service.stop()


def _rows(triton: TritonServer) -> float:
    return counter(triton, ROWS, model="churn")


def _settled(triton: TritonServer, timeout_s: float = 15.0) -> None:
    """Wait until the steps' row counter stops moving (they flush every second)."""
    deadline = time.monotonic() + timeout_s
    last = _rows(triton)
    while time.monotonic() < deadline:
        time.sleep(1.2)
        now = _rows(triton)
        if now == last:
            return
        last = now
    raise AssertionError("the drift counters kept moving")


def _send(triton: TritonServer, customers: Sequence[dict[str, Any]], batch: int = 50,
          expect: int = 200) -> None:
    """Send the customers in requests of `batch` rows and wait until the steps flushed them."""
    before = _rows(triton)
    for start in range(0, len(customers), batch):
        status, answer = post(triton, batch_body(customers[start:start + batch]))
        assert status == expect, answer
    deadline = time.monotonic() + 15
    while _rows(triton) < before + len(customers):
        assert time.monotonic() < deadline, "the steps did not publish the rows sent"
        time.sleep(0.2)


def _drifted(customers: Sequence[dict[str, Any]], artifacts: TabularArtifacts
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Customers 36 months older (clipped to the training range), and 40 of them (5 % of the
    window, over the 2 % critical share) with a contract unseen in training."""
    profile = json.loads(artifacts.profile.read_text())
    longest = profile["numeric"]["tenure"]["maximum"]
    shifted = [{**c, "tenure": min(float(c["tenure"]) + 36, longest)} for c in customers]
    return shifted[40:], [{**c, "contract": "Weekly"} for c in shifted[:40]]


def _firing(service: MonitorService, rule: str) -> set[str]:
    """The `feature` labels (or "" for none) of the alerts of `rule` firing now."""
    return {a.labels.get("feature", "") for a in service.firing()
            if a.labels["alertname"] == rule}


def _fast_rules(folder: Path, *names: str) -> Path:
    """The shipped rules, except that `names` fire and resolve at once (for_s 0)."""
    rules = yaml.safe_load(DEFAULT_RULES.read_text())
    for rule in rules["rules"]:
        if rule["name"] in names:
            rule["for_s"] = rule["resolve_after_s"] = 0
    path = folder / "alerts.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_sidecar_raises_no_drift_alert_when_held_out_customers_are_served(
    sidecar: Callable[..., MonitorService], monitored_triton: TritonServer,
    customers: list[dict[str, Any]], record_property: Callable[[str, object], None],
) -> None:
    service, clock = sidecar(), Clock()
    service.evaluate_once(clock.now)
    evaluations: list[Evaluation] = []
    for _ in range(4):
        _send(monitored_triton, customers)
        evaluations.append(service.evaluate_once(clock.advance(WINDOW_S)))

    flagged = [f for e in evaluations if e.signals for f in e.signals.drifted_features()]
    fired = [t for e in evaluations for t in e.transitions
             if t.rule in DRIFT_RULES and t.state == "firing"]
    record_property("windows", len(evaluations))
    record_property("false_alarms", len(fired))
    record_property("drifted_feature_verdicts", len(flagged))
    print(f"held-out traffic: {len(evaluations)} windows of {len(customers)} rows, "
          f"{len(fired)} drift alerts fired, {len(flagged)} feature verdicts at warning or worse")
    assert all(e.signals is not None and e.signals.judged for e in evaluations)
    assert all(e.signals.prediction.severity == "ok" for e in evaluations if e.signals)
    assert flagged == []
    assert fired == []
    assert not any(a.labels["alertname"] in DRIFT_RULES for a in service.engine.firing())


def test_sidecar_flags_exactly_the_shifted_features_and_resolves_when_traffic_returns_to_normal(
    sidecar: Callable[..., MonitorService], monitored_triton: TritonServer,
    customers: list[dict[str, Any]], artifacts: TabularArtifacts,
) -> None:
    service, clock = sidecar(), Clock()
    service.evaluate_once(clock.now)
    shifted, weekly = _drifted(customers, artifacts)

    verdicts = []
    for _ in range(2):
        _send(monitored_triton, weekly, expect=400)  # refused by the step, counted as unseen
        _send(monitored_triton, shifted)
        evaluation = service.evaluate_once(clock.advance(WINDOW_S))
        assert evaluation.signals is not None
        verdicts.append(evaluation.signals.drifted_features())

    assert verdicts == [["tenure", "contract"]] * 2
    assert _firing(service, "ModelFeatureDrift") == {"tenure", "contract"}
    assert _firing(service, "ModelUnseenCategories") == {"contract"}
    assert _firing(service, "ModelDatasetDrift") == set()  # 2 of 19 features

    resolved = []
    for advance in (WINDOW_S, 1800.0):  # the shipped rules resolve after 1800 s of normal data
        _send(monitored_triton, customers)
        evaluation = service.evaluate_once(clock.advance(advance))
        resolved += [(t.rule, t.labels.get("feature", "")) for t in evaluation.transitions
                     if t.state == "resolved"]

    assert {("ModelFeatureDrift", "tenure"), ("ModelFeatureDrift", "contract"),
            ("ModelUnseenCategories", "contract")} <= set(resolved)
    assert not any(a.labels["alertname"] in DRIFT_RULES for a in service.engine.firing())
    assert [a["labels"]["alertname"] for a in service.alerts_json()["resolved"]
            if a["labels"].get("feature") == "tenure"]


def _error_burst(triton: TritonServer, customers: Sequence[dict[str, Any]], bad: int,
                 good: int) -> None:
    """`bad` requests the step refuses (seniorcitizen 7), `good` ones it answers."""
    for customer in customers[:bad]:
        status, answer = post(triton, with_input(body_for(customer), "seniorcitizen", data=[7]))
        assert status == 400, answer
    for customer in customers[:good]:
        status, answer = post(triton, body_for(customer))
        assert status == 200, answer


def test_sidecar_counts_the_steps_refusals_as_the_clients_not_as_server_errors(
    sidecar: Callable[..., MonitorService], monitored_triton: TritonServer,
    customers: list[dict[str, Any]],
) -> None:
    """Requests the step refuses (HTTP 400) are Triton failures, counted twice for the
    ensemble: the sidecar takes them off with the step's refusal counter."""
    service, clock = sidecar(window_s=300), Clock()
    service.evaluate_once(clock.now)

    for _ in range(2):  # the shipped rule wants 300 s above 5 %
        _error_burst(monitored_triton, customers, bad=20, good=20)
        _settled(monitored_triton)
        service.evaluate_once(clock.advance(300))
        serving = service.latest_serving["churn"]
        assert (serving.requests, serving.refusals, serving.failures) == (40, 20, 0)
        assert serving.error_rate == 0 and serving.refusal_rate == pytest.approx(0.5)
    assert _firing(service, "ModelErrorRateHigh") == set()
    status, metrics = _get(f"{service.url}/metrics")
    assert status == 200
    assert 'tritonkit_monitor_error_rate{model="churn"} 0.0' in metrics.decode()
    assert 'tritonkit_monitor_client_refusal_rate{model="churn"} 0.5' in metrics.decode()


def test_sidecar_fires_the_error_rate_alert_when_the_server_fails_requests(
    repositories: dict[str, Path], customers: list[dict[str, Any]], tmp_path: Path,
) -> None:
    """A dead stub's 500s are the server's failures: the page fires, for the entry point whose
    step died, and the sidecar's own failed probes are not counted among the clients'."""
    # A server of its own: Triton 2.51 never finishes unloading a killed instance.
    monitored_triton = serve(repositories["embedded"], tmp_path, admin_key=ADMIN_KEY)
    service = MonitorService(MonitorSettings(
        triton_url=monitored_triton.http_url, metrics_url=monitored_triton.metrics_url,
        port=0, admin_key=ADMIN_KEY, window_s=300, heal=False)).start(
            evaluate_loop=False, health_loop=False)
    clock = Clock()
    service.evaluate_once(clock.now)
    os.kill(stub_pids(monitored_triton, "churn_fused")[0], signal.SIGKILL)  # one of two
    try:
        for _ in range(2):
            failed = 0
            for customer in customers[:20]:
                status, _ = post(monitored_triton, body_for(customer))
                assert status in (200, 500)
                failed += status == 500
            assert failed > 0
            report = service.check_health()  # its failed probes are not the clients'
            probes_failed = sum(not c.ok for c in report.checks if c.name == "inference_churn")
            assert probes_failed == 1
            service.evaluate_once(clock.advance(300))
            serving = service.latest_serving["churn"]
            assert (serving.requests, serving.failures, serving.probes) == (20, failed, 4)
        assert _firing(service, "ModelErrorRateHigh") == {""}
        status, metrics = _get(f"{service.url}/metrics")
        assert re.search(r'tritonkit_monitor_error_rate\{model="churn"\} 0\.[1-9]',
                         metrics.decode())
        assert re.search(r'tritonkit_monitor_alert_firing\{alertname="ModelErrorRateHigh",'
                         r'feature="",model="churn",severity="critical"\} 1\.0', metrics.decode())
    finally:
        service.stop()
        monitored_triton.stop(timeout_s=5, check=False)


def test_a_stack_only_the_probes_call_raises_the_low_traffic_alert(
    sidecar: Callable[..., MonitorService], monitored_triton: TritonServer,
) -> None:
    """12 probes a simulated minute to each entry point (above the rule's 10/min) and no
    client: the traffic is 0, and ModelTrafficLow fires after its 600 s for every entry
    point. The probes reach every entry point Triton serves and count no drift row."""
    service, clock = sidecar(window_s=300), Clock()
    rows = _rows(monitored_triton)
    fired_at = None
    for minute in range(16):
        for _ in range(3):
            report = service.check_health()
            assert report.ok, report.as_json()
        service.evaluate_once(clock.advance(60))
        if fired_at is None and _firing(service, "ModelTrafficLow"):
            fired_at = minute
    assert {c.name for c in report.checks} >= {"inference_churn", "inference_churn_packed"}
    firing = {a.labels["model"] for a in service.firing()
              if a.labels["alertname"] == "ModelTrafficLow"}
    assert firing == set(service.entries) >= {"churn", "churn_packed"}
    assert service.latest_serving["churn"].probes > 0
    assert service.latest_serving["churn"].requests_per_minute == 0
    # the first window is judged at minute 1, pending from then, firing 600 s later
    assert fired_at == 11
    _settled(monitored_triton)
    assert _rows(monitored_triton) == rows  # 192 probes, no drift row


def test_sidecar_reads_p95_latency_when_the_ensemble_caches_responses_and_exports_no_summary(
    sidecar: Callable[..., MonitorService], monitored_triton: TritonServer,
    customers: list[dict[str, Any]],
) -> None:
    # The spec turns Triton's response cache on for the ensemble, which then exports no latency
    # summary of its own (Triton 2.51); the sidecar falls back to its steps' summaries.
    own = counter(monitored_triton, "nv_inference_request_summary_us_count", model="churn")
    assert own == 0, "the ensemble exports its own summary again: drop the step fallback"
    service, clock = sidecar(window_s=300), Clock()
    service.evaluate_once(clock.now)
    _send(monitored_triton, customers[:100], batch=1)
    evaluation = service.evaluate_once(clock.advance(60))
    assert evaluation.signals is not None
    p95, p99 = (evaluation.signals.serving.latency_p95_ms,
                evaluation.signals.serving.latency_p99_ms)
    assert p95 is not None and p99 is not None
    assert 0 < p95 <= p99 < 1000
    status, metrics = _get(f"{service.url}/metrics")
    assert status == 200
    assert re.search(r'tritonkit_monitor_latency_p95_ms\{model="churn"\} [0-9.]+',
                     metrics.decode())


def test_alertmanager_receives_the_alert_and_its_resolution_when_the_sidecar_delivers(
    sidecar: Callable[..., MonitorService], monitored_triton: TritonServer,
    customers: list[dict[str, Any]], alertmanager: AlertmanagerProcess, tmp_path: Path,
) -> None:
    # Real time here (Alertmanager judges startsAt/endsAt by its clock), so the rule fires at
    # once instead of after its shipped 300 s; windows of 0.5 s hold one step of traffic each.
    # No client sends anything in the first window: the traffic alert of churn fires; 20
    # customers in the next one resolve it.
    service = sidecar(alertmanager_url=alertmanager.url, window_s=0.5,
                      entry_points=("churn",),
                      alerts_file=_fast_rules(tmp_path, "ModelTrafficLow"))

    def window_later() -> Evaluation:
        time.sleep(0.6)
        return service.evaluate_once()

    service.evaluate_once()
    window_later()

    def delivered() -> list[dict[str, Any]]:
        return [a for a in alertmanager.alerts()
                if a["labels"].get("alertname") == "ModelTrafficLow"]

    (alert,) = delivered()
    assert alert["labels"] == {"alertname": "ModelTrafficLow", "severity": "ticket",
                               "service": "churn", "model": "churn"}
    assert alert["status"]["state"] == "active"
    assert "churn gets 0.0 client requests/min" in alert["annotations"]["summary"]

    _error_burst(monitored_triton, customers, bad=0, good=20)
    evaluation = window_later()
    assert [t.state for t in evaluation.transitions if t.rule == "ModelTrafficLow"] == [
        "resolved"]
    deadline = time.monotonic() + 10
    while delivered() and delivered()[0]["status"]["state"] == "active":
        # Alertmanager drops an alert whose endsAt has passed
        assert time.monotonic() < deadline, f"Alertmanager still holds {delivered()}"
        time.sleep(0.2)


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_sidecar_inbox_keeps_what_alertmanager_delivers_and_names_what_it_refuses(
        sidecar: Callable[..., MonitorService]) -> None:
    service = sidecar(entry_points=("churn",))
    inbox = f"{service.url}/alerts/inbox"
    payload = {"version": "4", "status": "firing", "receiver": "pager", "groupKey": "{}:{}",
               "alerts": [{"status": "firing", "startsAt": "2026-12-03T00:00:00Z",
                           "labels": {"alertname": "TritonServerDown", "severity": "page"},
                           "annotations": {"summary": "<b>down</b>"}}]}
    refused = {
        "garbage": (f"{inbox}/pager", b"\x00\xff{{", 400, "not JSON"),
        "not v4": (f"{inbox}/pager", json.dumps({"alerts": []}).encode(), 400, '"version": "4"'),
        "alerts": (f"{inbox}/pager", json.dumps({"version": "4", "alerts": 3}).encode(), 400,
                   "not a list"),
        "receiver": (f"{inbox}/..%2Fetc", b"{}", 404, "no receiver named"),
        "elsewhere": (f"{service.url}/health", b"{}", 404, "Alertmanager posts to"),
    }
    for case, (url, body, status, message) in refused.items():
        answer = _post(url, body)
        assert answer[0] == status and message in answer[1]["error"], (case, answer)
    too_big = _post(f"{inbox}/pager", b"", {"Content-Length": str(2 << 20)})
    assert too_big[0] == 413 and "more than" in too_big[1]["error"]

    assert _post(f"{inbox}/pager", json.dumps(payload).encode()) == (200, {"received": 1})
    status, body = _get(inbox)
    kept = json.loads(body)
    assert status == 200 and kept["receivers"]["pager"]["received"] == 1
    (note,) = kept["notifications"]
    assert (note["receiver"], note["status"]) == ("pager", "firing")
    assert note["alerts"][0]["labels"]["alertname"] == "TritonServerDown"
    report = _get(f"{service.url}/report")[1].decode()
    assert "Delivered notifications" in report and "TritonServerDown" in report
    assert "<b>down</b>" not in report  # nothing posted is rendered as HTML
    metrics = _get(f"{service.url}/metrics")[1].decode()
    assert ('tritonkit_monitor_notifications_received_total{receiver="pager",status="firing"} '
            '1.0') in metrics
    assert _get(f"{service.url}/alerts")[0] == 200  # still serving


def test_sidecar_metrics_expose_exactly_the_exported_names_when_a_window_was_evaluated(
    sidecar: Callable[..., MonitorService], monitored_triton: TritonServer,
    customers: list[dict[str, Any]],
) -> None:
    service, clock = sidecar(), Clock()
    service.evaluate_once(clock.now)
    _send(monitored_triton, customers[:100])
    service.evaluate_once(clock.advance(WINDOW_S))

    status, body = _get(f"{service.url}/metrics")

    assert status == 200
    exposed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body.decode(), re.MULTILINE))
    ours = {n: k for n, k in exposed.items() if not n.startswith(("process_", "python_"))}
    assert ours == {name: spec.kind for name, spec in SIDECAR_METRICS.items()}
    assert 'tritonkit_monitor_window_rows{model="churn"} 100.0' in body.decode()


def test_report_renders_svg_plots_in_headless_chromium_when_a_window_was_judged(
    sidecar: Callable[..., MonitorService], monitored_triton: TritonServer,
    customers: list[dict[str, Any]], artifacts: TabularArtifacts, tmp_path: Path,
) -> None:
    chromium = require_tool("chromium", "apt-get install chromium", "chromium-browser")
    service, clock = sidecar(), Clock()
    service.evaluate_once(clock.now)
    _send(monitored_triton, customers)
    service.evaluate_once(clock.advance(WINDOW_S))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking"]
    url = f"{service.url}/report"

    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=90, check=True).stdout
    screenshot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={screenshot}", "--window-size=1200,2000", url],
                   capture_output=True, timeout=90, check=True)

    profile = json.loads(artifacts.profile.read_text())
    features = [*profile["numeric"], *profile["categorical"]]
    plots = re.findall(r'<svg[^>]*class="plot"[^>]*aria-label="([^"]+)"', dom)
    assert [label.split(":")[0] for label in plots] == [*features, "prediction"]
    for feature in features:  # a window bar and a reference bar per bin
        section = dom.split(f'id="feature-{feature}"', 1)[1].split("</section>", 1)[0]
        bins = (len(profile["numeric"][feature]["edges"]) + 1 if feature in profile["numeric"]
                else len(profile["categorical"][feature]["frequencies"]) + 2)
        assert section.count('class="window"') == bins
        assert section.count('class="reference"') == bins
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sidecar_reads_triton_directly_and_says_so_when_its_prometheus_is_down(
    sidecar: Callable[..., MonitorService], monitored_triton: TritonServer,
    customers: list[dict[str, Any]],
) -> None:
    """Prometheus gone (compose: its container down) must not blind the sidecar: it judges
    Triton's own /metrics, /health stays 200 and names the fallback, and a gauge tells."""
    closed = f"http://127.0.0.1:{free_port()}"
    service, clock = sidecar(prometheus_url=closed, window_s=300), Clock()
    service.evaluate_once(clock.now)
    _error_burst(monitored_triton, customers, bad=0, good=10)
    _settled(monitored_triton)
    evaluation = service.evaluate_once(clock.advance(300))

    assert evaluation.source_error is None
    assert service.latest_serving["churn"].requests == 10  # counted from Triton directly
    status, body = _get(f"{service.url}/health")
    health = json.loads(body)
    assert status == 200, health
    (degraded,) = health["degraded"]
    assert "reading Triton's /metrics directly" in degraded and closed in degraded
    _, metrics = _get(f"{service.url}/metrics")
    assert "tritonkit_monitor_source_fallback 1.0" in metrics.decode()


def test_health_fails_and_scrape_errors_count_when_the_metrics_source_is_unreachable(
    sidecar: Callable[..., MonitorService],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/metrics"
    service = sidecar(metrics_url=closed)

    evaluation = service.evaluate_once()
    status, body = _get(f"{service.url}/health")

    assert evaluation.source_error is not None and closed in evaluation.source_error
    assert status == 503
    health = json.loads(body)
    assert health["failing"] == ["metrics_source_triton"]
    assert health["checks"]["inference_churn"]["ok"]  # Triton itself answers
    _, metrics = _get(f"{service.url}/metrics")
    assert 'tritonkit_monitor_scrape_errors_total{source="triton"} 1.0' in metrics.decode()
    assert _get(f"{service.url}/alerts")[0] == 200  # the service keeps serving


def test_prometheus_source_reads_what_triton_exposes_when_prometheus_scrapes_triton(
    sidecar: Callable[..., MonitorService], monitored_triton: TritonServer,
    customers: list[dict[str, Any]], tmp_path: Path,
) -> None:
    require_tool(PROMETHEUS_BINARIES[0], "apt-get install prometheus")
    _send(monitored_triton, customers[:60])
    _settled(monitored_triton)
    layout = sidecar().judge.layout
    direct = TritonMetricsSource(monitored_triton.metrics_url)
    triton = direct.scrape()
    direct.close()
    config = prometheus_config({"triton": monitored_triton.metrics_url.split("/")[2]}, None,
                               interval_s=1)
    with PrometheusProcess(port=free_port(), workdir=tmp_path, config=config) as prometheus:
        source = PrometheusSource(prometheus.url)
        deadline = time.monotonic() + 30
        while not (scraped := source.scrape()) or not any(n == ROWS for n, _, _ in scraped):
            assert time.monotonic() < deadline, "Prometheus never scraped Triton"
            time.sleep(0.5)
        source.close()

    def named(samples: list[Any], name: str) -> float:
        return sum(value for n, labels, value in samples
                   if n == name and labels.get("model") == "churn")

    # The same drift counts and request counters, under the names Triton exposes.
    assert (layout.vector(scraped) == layout.vector(triton)).all()
    assert layout.window(layout.vector(scraped)).rows > 0
    assert named(scraped, "nv_inference_request_success") == named(
        triton, "nv_inference_request_success") > 0
    assert named(scraped, "nv_inference_request_failure") == named(
        triton, "nv_inference_request_failure")


def test_sidecar_reloads_a_killed_python_stub_when_real_inferences_fail(
    repositories: dict[str, Path], customers: list[dict[str, Any]], tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    # A server of its own: Triton 2.51 never finishes unloading the killed instance, so this
    # server cannot stop cleanly afterwards (it is killed after a short wait).
    server = serve(repositories["embedded"], tmp_path, admin_key=ADMIN_KEY)
    service = MonitorService(MonitorSettings(
        triton_url=server.http_url, metrics_url=server.metrics_url, port=0,
        admin_key=ADMIN_KEY, health_interval_s=5.0,
        # The shipped rule pages only after 60 s without answers; a heal takes less.
        alerts_file=_fast_rules(tmp_path, "ModelUnavailable")))
    try:
        service.start(evaluate_loop=False)  # the health loop runs, every 5 s as by default
        deadline = time.monotonic() + 30
        while service.health.latest is None or not service.health.latest.ok:
            assert time.monotonic() < deadline, service.health.latest
            time.sleep(0.2)
        stubs = stub_pids(server, "churn_fused")
        assert len(stubs) == 2, stubs

        killed_at = time.time()
        os.kill(stubs[0], signal.SIGKILL)
        deadline = time.monotonic() + 45
        while not any(e.kind == "recovered" and e.at > killed_at for e in service.health.events):
            assert time.monotonic() < deadline, list(service.health.events)
            time.sleep(0.2)

        events = [e for e in service.health.events if e.at > killed_at]
        detected = next(e for e in events if e.kind == "unavailable")
        recovered = next(e for e in events if e.kind == "recovered")
        record_property("detection_s", round(detected.at - killed_at, 2))
        record_property("healing_s", round(recovered.at - killed_at, 2))
        print(f"stub killed: detected after {detected.at - killed_at:.1f} s ({detected.detail}),"
              f" served again after {recovered.at - killed_at:.1f} s")
        assert "is not healthy" in detected.detail
        assert detected.at - killed_at <= 15
        assert recovered.at - killed_at <= 30
        assert [e.detail for e in events if e.kind == "reloaded"] == ["churn_fused"]
        statuses = [post(server, body_for(c))[0] for c in customers[:20]]
        assert statuses == [200] * 20
        _, metrics = _get(f"{service.url}/metrics")
        assert 'tritonkit_monitor_heals_total{model="churn_fused"} 1.0' in metrics.decode()

        fired = service.evaluate_once()
        service.check_health()
        cleared = service.evaluate_once()
        assert [t.state for t in fired.transitions if t.rule == "ModelUnavailable"] == [
            "firing"]
        assert [t.state for t in cleared.transitions if t.rule == "ModelUnavailable"] == [
            "resolved"]
    finally:
        service.stop()
        server.stop(timeout_s=5, check=False)


def test_serve_cli_runs_sidecar_prometheus_alertmanager_and_gateway_beside_triton_in_make_up(
    repositories: dict[str, Path], tmp_path: Path,
) -> None:
    require_tool(PROMETHEUS_BINARIES[0], "apt-get install prometheus")
    require_tool(ALERTMANAGER_BINARIES[0], "apt-get install prometheus-alertmanager",
                 *ALERTMANAGER_BINARIES[1:])
    ports = {name: free_port()
             for name in ("http", "monitor", "prometheus", "alertmanager", "gateway")}
    key_file = tmp_path / "admin-key"
    cli = subprocess.Popen(
        [sys.executable, "-m", "tritonkit.serve.cli", "--model-repository",
         str(repositories["embedded"]), "--http-port", str(ports["http"]),
         "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
         "--log-file", str(tmp_path / "tritonserver.log"), "--admin-key-file", str(key_file),
         "--monitor-port", str(ports["monitor"]), "--prometheus-port", str(ports["prometheus"]),
         "--alertmanager-port", str(ports["alertmanager"]),
         "--gateway-port", str(ports["gateway"]),
         "--monitoring-dir", str(tmp_path / "monitoring")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = ""
        while "Try it" not in banner:
            line = cli.stdout.readline()  # type: ignore[union-attr]
            assert line, f"serve CLI exited early:\n{banner}"
            banner += line
        sidecar = f"http://127.0.0.1:{ports['monitor']}"
        assert f"sidecar  {sidecar}/health  {sidecar}/alerts  {sidecar}/report" in banner
        assert f"Prometheus   http://127.0.0.1:{ports['prometheus']}" in banner
        assert f"Alertmanager http://127.0.0.1:{ports['alertmanager']}" in banner
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        assert f"gateway  {gateway}/predict" in banner
        # The banner's example request, with the development key, answers.
        key = re.search(r"X-API-Key: (\S+)'", banner)
        body = re.search(r"-d '(\{.*\})'", banner)
        assert key and body, banner
        predict = urllib.request.Request(
            f"{gateway}/predict", data=body.group(1).encode(), method="POST",
            headers={"X-API-Key": key.group(1), "Content-Type": "application/json"})
        with urllib.request.urlopen(predict, timeout=10) as response:
            answer = json.loads(response.read())
        sent = json.loads(body.group(1))["customer_id"]  # churn's first held-out customer
        assert answer["customer_id"] == sent and 0 < answer["churn_probability"] < 1
        assert answer["model_version"] == "1"

        deadline = time.monotonic() + 20  # until its first scrape and health check
        while (health := _get(f"{sidecar}/health"))[0] != 200:
            assert time.monotonic() < deadline, health
            time.sleep(0.5)
        def jobs() -> set[str]:
            _, targets = _get(f"http://127.0.0.1:{ports['prometheus']}/api/v1/targets")
            return {t["labels"]["job"] for t in json.loads(targets)["data"]["activeTargets"]}

        while not jobs():  # Prometheus is ready before its service discovery has synced
            assert time.monotonic() < deadline, "Prometheus found no targets"
            time.sleep(0.5)
        assert jobs() == {"triton", "tritonkit-monitor", "prometheus", "alertmanager", "gateway"}
        # Out of the box the receivers deliver to the sidecar's inbox: Prometheus' Watchdog
        # reaches it through Alertmanager's dead-man route (its first evaluation: <= 15 s).
        assert f"delivered alerts  {sidecar}/alerts/inbox" in banner
        started, deadline = time.monotonic(), time.monotonic() + 90
        prometheus_alerts = f"http://127.0.0.1:{ports['prometheus']}/api/v1/alerts"
        alertmanager_alerts = f"http://127.0.0.1:{ports['alertmanager']}/api/v2/alerts"
        while not (watchdog := [n for n in json.loads(_get(f"{sidecar}/alerts/inbox")[1])[
                "notifications"] if n["receiver"] == "deadman"]):
            assert time.monotonic() < deadline, (
                "no Watchdog delivered to the sidecar's inbox; Prometheus has "
                f"{_get(prometheus_alerts)[1]!r}, Alertmanager {_get(alertmanager_alerts)[1]!r}")
            time.sleep(1)
        print(f"Watchdog in the inbox {time.monotonic() - started:.0f} s after Prometheus' "
              "targets were up")
        assert watchdog[0]["alerts"][0]["labels"]["alertname"] == "Watchdog"
        _, metrics = _get(f"{sidecar}/metrics")
        assert re.search(r'tritonkit_monitor_notifications_received_total\{receiver="deadman",'
                         r'status="firing"\} [1-9]', metrics.decode())
        load = f"http://127.0.0.1:{ports['http']}/v2/repository/models/churn_fused/load"
        refused = urllib.request.Request(load, data=b"{}", method="POST")
        assert _status(refused) == 403
        keyed = urllib.request.Request(load, data=b"{}", method="POST",
                                       headers={"admin-key": key_file.read_text().strip()})
        assert _status(keyed) == 200
        # the gateway's admin reload gets the same key file: it reloads through the
        # restricted repository API
        admin = (DEFAULT_KEYS_FILE.parent / DEV_KEY_FILES[1]).read_text().strip()
        reload = urllib.request.Request(f"{gateway}/admin/models/churn_packed/load", data=b"",
                                        method="POST", headers={"X-API-Key": admin})
        assert _status(reload) == 200
    finally:
        cli.send_signal(signal.SIGTERM)
        code = cli.wait(timeout=60)
        cli.stdout.close()  # type: ignore[union-attr]
    assert code == 0
    for name in ("prometheus", "alertmanager", "monitor", "gateway"):
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{ports[name]}/", timeout=2)


def _status(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code
