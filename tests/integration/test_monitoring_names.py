"""The monitoring stack against the real things: a tritonserver with summaries on and the compose
file's restricted APIs, a real Prometheus (`/usr/bin/prometheus`) that scrapes it and evaluates
our rules, a real Alertmanager with our config. Every metric the rules and the dashboard name is
one Triton or the sidecar emits; every selector on Triton's metrics selects live series; the error
ratio Prometheus records from Triton's counters is the one the client saw; the burn-rate page
reaches Alertmanager, which inhibits as configured and delivers the page to the pager
receiver (the shipped default: the sidecar's inbox).

Prometheus and Alertmanager come from Debian (`apt-get install prometheus
prometheus-alertmanager`); without them those tests skip and say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tritonkit.gateway.metrics import GatewayMetrics
from tritonkit.monitor.exported import SIDECAR_METRICS
from tritonkit.monitor.inbox import Inbox, InboxRefused
from tritonkit.monitor.rules import PRODUCTION_RULES, render_rules
from tritonkit.paths import PROJECT_ROOT
from tritonkit.repository.config import read_config
from tritonkit.repository.entry_points import repository_entry_points
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import TritonServer
from tritonkit.serve.stack import ALERTMANAGER_BINARIES, AlertmanagerProcess

from ..support import body_for, post, require_tool, serve, stub_pids, with_input

MONITORING = PROJECT_ROOT / "monitoring"
#: The static rule files; the serving rules are rendered for the served repository (the
#: `rule_files` fixture), as `make up` renders them.
STATIC_RULE_FILES = sorted(p for p in (MONITORING / "prometheus" / "rules").glob("*.yml")
                           if p.name != PRODUCTION_RULES.name)
DASHBOARD = MONITORING / "grafana" / "dashboards" / "serving.json"
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ADMIN_KEY = "test-admin-key"
#: Series Prometheus makes itself rather than scrapes.
PROMETHEUS_MADE = {"up", "ALERTS"}
#: Requests sent once Prometheus watches: good ones, and ones the step refuses (an unknown
#: category), which Triton 2.51 counts twice each as failures of the ensemble.
GOOD_REQUESTS, BAD_REQUESTS, SERVER_ERRORS = 18, 2, 3

T = TypeVar("T")


# -- PromQL names, from the rules and the dashboard ------------------------------------------

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|\{[^}]*\}|\[[^\]]*\]'
                    r'|[A-Za-z_:][A-Za-z0-9_:]*|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\S')
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: str  # "{...}" or ""
    where: str

    def labels(self) -> set[str]:
        return set(re.findall(r'(\w+)\s*(?:=~|!~|!=|=)', self.matchers))

    def promql(self) -> str:
        """The selector with Grafana's variables replaced by what selects everything."""
        matchers = self.matchers
        for variable in ("$feature", "$drift_model", "$model"):
            matchers = matchers.replace(variable, ".*")
        return self.name + matchers


def selectors(expr: str, where: str) -> list[Selector]:
    """The series selectors of a PromQL expression: every metric name with its matchers."""
    tokens = _TOKEN.findall(expr)
    found = []
    in_labels = False
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if in_labels:
            in_labels = token != ")"
            continue
        if token in _LABEL_LISTS and following == "(":
            in_labels = True
            continue
        if not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", token) or token in _KEYWORDS:
            continue
        if following in ("(", "by", "without"):  # a function or an aggregation
            continue
        found.append(Selector(token, following if following.startswith("{") else "", where))
    return found


def rule_selectors(rule_files: list[Path]) -> list[Selector]:
    out = []
    for path in rule_files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule["record"]
                out += selectors(rule["expr"], f"{path.name}: {name}")
    return out


def recorded_names(rule_files: list[Path]) -> set[str]:
    return {rule["record"] for path in rule_files
            for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "record" in rule}


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and templating query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = [(f"panel {p['title']!r}", t["expr"])
           for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
        out.append((f"variable ${variable['name']}", inner.group(1) if inner else query))
    return out


def dashboard_selectors() -> list[Selector]:
    return [s for where, expr in dashboard_queries() for s in selectors(expr, where)]


def sidecar_names() -> dict[str, tuple[str, ...]]:
    """Sample names the sidecar exports (a histogram's as Prometheus scrapes it) -> labels."""
    names = {}
    for name, exported in SIDECAR_METRICS.items():
        suffixes = ("_bucket", "_sum", "_count") if exported.kind == "histogram" else ("",)
        for suffix in suffixes:
            names[name + suffix] = exported.labels
    return names


def test_selectors_finds_names_and_matchers_but_not_functions_or_label_lists() -> None:
    found = selectors('sum by (model) (rate(a_total{model="churn",q=~"x"}[5m])) / on (model) '
                      'group_left b:rec > 2 and c{l="v"} unless max without (job) (d) * 1e3',
                      "test")
    assert [(s.name, s.matchers) for s in found] == [
        ("a_total", '{model="churn",q=~"x"}'), ("b:rec", ""), ("c", '{l="v"}'), ("d", "")]
    assert found[0].labels() == {"model", "q"}


def gateway_names() -> set[str]:
    """Sample names the gateway exports on its metrics port (labelled series included, which
    have no sample before their first use)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    return {family.name + suffix for family in GatewayMetrics().registry.collect()
            for suffix in suffixes.get(family.type, ("",))}


def test_rules_and_dashboard_name_only_metrics_that_triton_or_the_sidecar_emit(
        triton_samples: dict[str, set[str]], rule_files: list[Path]) -> None:
    recorded = recorded_names(rule_files)
    sidecar = sidecar_names()
    used = rule_selectors(rule_files) + dashboard_selectors()
    unknown = [(s.where, s.name) for s in used
               if s.name not in triton_samples and s.name not in sidecar
               and s.name not in recorded and s.name not in PROMETHEUS_MADE
               and s.name not in gateway_names()]
    assert unknown == []
    names = {s.name for s in used}
    # The check sees what it should: Triton's, the python step's and the sidecar's metrics.
    assert {"nv_inference_request_failure", "nv_inference_request_summary_us",
            "tritonkit_rejected_rows_total", "tritonkit_monitor_feature_drift_severity"} <= names
    # Recording rules are read by our rules only after being recorded by them.
    assert {s.name for s in used if ":" in s.name} <= recorded


def test_sidecar_selectors_use_only_the_labels_the_sidecar_exports(
        rule_files: list[Path]) -> None:
    sidecar = sidecar_names()
    for selector in rule_selectors(rule_files) + dashboard_selectors():
        if selector.name in sidecar:
            allowed = set(sidecar[selector.name]) | {"job", "instance"}
            assert selector.labels() <= allowed, (selector.where, selector.name)


def test_prometheus_scrapes_triton_and_reads_its_request_counter(prometheus: Prometheus) -> None:
    targets = prometheus.get("/api/v1/targets")["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("triton", "up")]
    result = prometheus.query("nv_inference_request_success")
    assert {r["metric"]["model"] for r in result} >= {"churn"}


def test_every_triton_selector_of_rules_and_dashboard_selects_live_series(
        prometheus: Prometheus, triton_samples: dict[str, set[str]],
        repositories: dict[str, Path], rule_files: list[Path]) -> None:
    """Names and label values alike: a `model="churn"` or `quantile="0.95"` that Triton does not
    use would select nothing, and the alert would never fire. One exception, pinned: Triton 2.51
    exports no request summary for a model whose response cache is on, as the ensemble's is;
    the p95 alert falls back to its steps' summaries then."""
    checked = [s for s in rule_selectors(rule_files) + dashboard_selectors()
               if s.name in triton_samples]
    assert len(checked) > 20
    cached = read_config(repositories["embedded"] / "churn" / "config.pbtxt").response_cache.enable

    def ensemble_summary(selector: Selector) -> bool:
        # churn, and churn_packed (a cached step served as it is on the embedded target)
        return selector.name == "nv_inference_request_summary_us" and \
            re.search(r'model="churn(_packed)?"', selector.matchers) is not None

    def empty() -> list[tuple[str, str]]:
        return [(s.where, s.promql()) for s in checked
                if not prometheus.get("/api/v1/series", **{"match[]": s.promql()})["data"]]

    expected = [(s.where, s.promql()) for s in checked if cached and ensemble_summary(s)]
    assert expected or not cached
    # The drift counters reach Prometheus at its first scrape after the step's flush.
    missing = empty()
    if missing != expected:
        time.sleep(3)
        missing = empty()
    assert missing == expected
    fallback = [s for s in checked if s.name == "nv_inference_request_summary_us"
                and 'model="churn_fused"' in s.matchers]
    assert fallback, "the p95 alert has no fallback to the steps' summaries"


def test_every_rule_evaluates_without_error_on_live_triton(prometheus: Prometheus,
                                                         rule_files: list[Path]) -> None:
    groups = _until(lambda: _evaluated_groups(prometheus), "rule groups evaluated")
    files = {Path(g["file"]).name for g in groups}
    assert files == {p.name for p in rule_files}
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]
              if r["health"] != "ok"]
    assert broken == []


def test_every_dashboard_query_evaluates_without_error(prometheus: Prometheus) -> None:
    errors = []
    for where, expr in dashboard_queries():
        try:
            prometheus.query(Selector("", expr.replace("$__rate_interval", "1m"), where
                                      ).promql())
        except AssertionError as exc:  # Prometheus refused the query; its message says why
            errors.append((where, str(exc)))
    assert errors == []


def test_the_dashboards_entry_point_variable_offers_every_entry_point_triton_serves(
        prometheus: Prometheus, repositories: dict[str, Path]) -> None:
    """The serving panels select `model=~"$model"` on the recorded series; the variable is
    their model labels, so a model the spec adds gets its panels with no dashboard edit."""
    served = {e.name for e in repository_entry_points(repositories["embedded"])}
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "model"]
    query = re.fullmatch(r"label_values\((.*), model\)", variable["query"]["query"])
    assert query, variable

    def offered() -> set[str] | None:
        models = {r["metric"]["model"] for r in prometheus.query(query.group(1))}
        return models if models == served else None

    assert _until(offered, f"the $model variable offering {sorted(served)}") == served
    assert {"churn", "churn_packed"} <= served  # the test repository serves churn's two


def test_recorded_ratios_tell_the_servers_errors_from_the_callers_refusals(
        prometheus: Prometheus, traffic: dict[str, int]) -> None:
    """Triton counts each failed ensemble request twice, refused or not: the recorded error
    ratio is the server's failures (the dead stub's 500s), the refusal ratio the step's 400s."""
    total = sum(traffic.values())

    def ratio(name: str) -> float | None:
        result = prometheus.query(f'{name}{{model="churn"}}')
        return float(result[0]["value"][1]) if result else None

    errors = traffic["failed"] / total
    assert _until(lambda: _settled(ratio("tritonkit:request_error_ratio:rate5m"), errors),
                  "the recorded error ratio") == pytest.approx(errors, rel=1e-6)
    refused = traffic["refused"] / total
    assert _until(lambda: _settled(ratio("tritonkit:client_refusal_ratio:rate5m"), refused),
                  "the recorded refusal ratio") == pytest.approx(refused, rel=1e-6)
    failures = prometheus.query('sum(nv_inference_request_failure{model="churn"})')
    assert float(failures[0]["value"][1]) == 2 * (traffic["failed"] + traffic["refused"])


def test_a_burst_of_errors_pages_through_alertmanager_which_inhibits_the_ticket(
        prometheus: Prometheus, alertmanager: Alertmanager, traffic: dict[str, int]) -> None:
    """About 10 % of requests failed on the server: the 1 h and 6 h pages and the 1 d ticket
    fire in Prometheus;
    Alertmanager gets them and silences the ticket under the page."""
    def delivered() -> dict[str, dict[str, Any]] | None:
        alerts = {a["labels"]["slo_window"]: a for a in alertmanager.alerts()
                  if a["labels"]["alertname"] == "TritonModelErrorBudgetBurn"}
        return alerts if set(alerts) == {"1h", "6h", "1d"} else None

    alerts = _until(delivered, "burn-rate alerts in Alertmanager", timeout_s=30)
    assert {w: a["labels"]["severity"] for w, a in alerts.items()} == \
        {"1h": "page", "6h": "page", "1d": "ticket"}
    assert alerts["1d"]["status"]["state"] == "suppressed"
    assert alerts["1d"]["status"]["inhibitedBy"]
    assert alerts["1h"]["status"]["state"] == "active"

    def paged() -> list[dict[str, Any]] | None:
        notes = [n for n in alertmanager.inbox.as_json()["notifications"]
                 if any(a["labels"].get("alertname") == "TritonModelErrorBudgetBurn"
                        for a in n["alerts"])]
        return notes or None

    # the pager route waits 10 s to group; the receiver is the inbox of the shipped default
    notes = _until(paged, "the page delivered to the pager receiver", timeout_s=40)
    assert {n["receiver"] for n in notes} == {"pager"}  # the inhibited ticket is not sent
    assert {a["labels"]["slo_window"] for n in notes for a in n["alerts"]} == {"1h", "6h"}
    assert all(n["status"] == "firing" for n in notes)
    firing = {a["labels"]["alertname"] for a in prometheus.get("/api/v1/alerts")["data"]["alerts"]}
    assert "TritonServerDown" not in firing and "TritonModelNotLoaded" not in firing


@pytest.mark.parametrize(("source", "target", "inhibited"), [
    # dataset-level drift silences the per-feature alerts it covers, from either evaluator
    ("ModelDatasetDrift/critical", "TritonModelFeatureDrift/critical/tenure", True),
    ("TritonModelDatasetDrift/critical", "ModelFeatureDrift/warning/tenure", True),
    ("TritonModelDatasetDrift/warning", "TritonModelFeatureDrift/warning/tenure", True),
    ("TritonModelDatasetDrift/warning", "TritonModelFeatureDrift/critical/tenure", False),
    # critical silences the warning of the same alert and feature only
    ("TritonModelUnseenCategories/critical/contract",
     "TritonModelUnseenCategories/warning/contract", True),
    ("TritonModelUnseenCategories/critical/contract",
     "TritonModelUnseenCategories/warning/gender", False),
    ("TritonModelLatencyP95High/critical", "TritonModelQueueTimeDominant/warning", False),
    # Triton down: the sidecar's failing checks are not a second page
    ("TritonServerDown/page", "TritonModelNotAnswering/page", True),
])
def test_alertmanager_inhibits_as_configured(alertmanager: Alertmanager, source: str,
                                             target: str, inhibited: bool) -> None:
    # Every inhibit rule requires an equal `service`: one per case keeps the cases apart.
    service = f"case-{time.monotonic_ns()}"
    source_labels, target_labels = _labels(source, service), _labels(target, service)
    alertmanager.post([source_labels, target_labels])

    def state() -> dict[str, Any] | None:
        for alert in alertmanager.alerts():
            if alert["labels"] == target_labels:
                return alert["status"]
        return None

    status = _until(state, f"{target} in Alertmanager")
    if inhibited:
        status = _until(lambda: _inhibited(state()), f"{target} inhibited by {source}")
    else:
        time.sleep(0.5)  # give the inhibitor the time it took in the positive cases
        status = state() or status
    assert bool(status["inhibitedBy"]) is inhibited, status


# -- fixtures: the real servers ----------------------------------------------------------------

@dataclass
class Prometheus:
    url: str

    def get(self, path: str, **params: str) -> dict[str, Any]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(self.url + path + query, timeout=10) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                raise AssertionError(f"{path} {params}: {exc.code} {exc.read()!r}") from None
        assert body["status"] == "success", body
        return body

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr)["data"]["result"]
        return result


@dataclass
class Alertmanager:
    url: str
    inbox: Inbox

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as response:
            alerts: list[dict[str, Any]] = json.loads(response.read())
        return alerts

    def post(self, labels: list[dict[str, str]]) -> None:
        body = json.dumps([{"labels": ls, "annotations": {"summary": "test"}} for ls in labels])
        request = urllib.request.Request(f"{self.url}/api/v2/alerts", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


@pytest.fixture(scope="module")
def monitored_triton(repositories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[TritonServer]:
    """The embedded repository with summaries on and the restricted APIs production closes
    (serve/server.py RESTRICTED_APIS, deploy/triton/entrypoint.sh)."""
    server = serve(repositories["embedded"], tmp_path_factory.mktemp("monitored-triton"),
                   summary_latencies=True, admin_key=ADMIN_KEY)
    yield server
    # `traffic` killed a stub: Triton 2.51 never finishes unloading that instance
    server.stop(timeout_s=5, check=False)


@pytest.fixture(scope="module")
def rule_files(repositories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
               ) -> list[Path]:
    """The static rules and the serving rules rendered for the served repository."""
    serving = tmp_path_factory.mktemp("rules") / PRODUCTION_RULES.name
    serving.write_text(render_rules(repository_entry_points(repositories["embedded"])))
    return [*STATIC_RULE_FILES, serving]


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[str, Inbox]]:
    """The sidecar's inbox (`tritonkit.monitor.inbox`) on a port of its own: where the shipped
    receivers deliver by default, without a sidecar's probes in this module's counted traffic."""
    received = Inbox()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                received.receive(self.path.removeprefix("/alerts/inbox/"), body)
                self.send_response(200)
            except InboxRefused as exc:
                self.send_response(exc.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory, inbox: tuple[str, Inbox]
                 ) -> Iterator[Alertmanager]:
    """A real Alertmanager with the shipped config as `make up` writes it: every receiver
    delivers to `inbox`."""
    require_tool(ALERTMANAGER_BINARIES[0], "apt-get install prometheus-alertmanager",
                 *ALERTMANAGER_BINARIES[1:])
    process = AlertmanagerProcess(port=free_port(), inbox=inbox[0],
                                  workdir=tmp_path_factory.mktemp("alertmanager"))
    process.start()
    yield Alertmanager(process.url, inbox[1])
    process.stop()


@pytest.fixture(scope="module")
def prometheus(monitored_triton: TritonServer, alertmanager: Alertmanager,
               tmp_path_factory: pytest.TempPathFactory, rule_files: list[Path]
               ) -> Iterator[Prometheus]:
    """Scrapes the test's Triton every second and evaluates our rules every second."""
    binary = require_tool("prometheus", "apt-get install prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    metrics = urllib.parse.urlsplit(monitored_triton.metrics_url)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [urllib.parse.urlsplit(alertmanager.url).netloc]}]}]},
        "scrape_configs": [{"job_name": "triton", "metrics_path": metrics.path,
                            "static_configs": [{"targets": [metrics.netloc]}]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with _running([binary, f"--config.file={folder / 'prometheus.yml'}",
                   f"--storage.tsdb.path={folder / 'data'}",
                   f"--web.listen-address=127.0.0.1:{port}"], folder / "prometheus.log"):
        server = Prometheus(f"http://127.0.0.1:{port}")
        _until(lambda: _http_status(f"{server.url}/-/ready") == 200 or None, "Prometheus ready")
        _until(lambda: [t for t in server.get("/api/v1/targets")["data"]["activeTargets"]
                        if t["health"] == "up"] or None, "Triton's target up")
        yield server


@pytest.fixture(scope="module")
def traffic(monitored_triton: TritonServer, prometheus: Prometheus,
            customers: list[dict[str, Any]]) -> dict[str, int]:
    """Requests sent once Prometheus has scraped Triton's counters at zero."""
    for customer in customers[:GOOD_REQUESTS]:
        status, answer = post(monitored_triton, body_for(customer))
        assert status == 200, answer
    for customer in customers[:BAD_REQUESTS]:
        bad = with_input(body_for(customer), "contract", data=["Weekly"])
        status, answer = post(monitored_triton, bad)
        assert status == 400, answer
    # one of the fused step's two stubs dies: requests reaching it fail with 500
    os.kill(stub_pids(monitored_triton, "churn_fused")[0], signal.SIGKILL)
    succeeded, failed = GOOD_REQUESTS, 0
    for customer in customers[GOOD_REQUESTS:]:
        if failed == SERVER_ERRORS:
            break
        status, answer = post(monitored_triton, body_for(customer))
        assert status in (200, 500), answer
        succeeded += status == 200
        failed += status == 500
    assert failed == SERVER_ERRORS
    return {"succeeded": succeeded, "refused": BAD_REQUESTS, "failed": failed}


@pytest.fixture(scope="module")
def triton_samples(monitored_triton: TritonServer, traffic: dict[str, int]
                   ) -> dict[str, set[str]]:
    """Sample name -> label names on Triton's /metrics, once the step has flushed its drift
    counters (every flush_interval_s) after the traffic."""
    def scrape() -> dict[str, set[str]] | None:
        with urllib.request.urlopen(monitored_triton.metrics_url, timeout=10) as response:
            text = response.read().decode()
        samples: dict[str, set[str]] = {}
        for line in text.splitlines():
            match = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s", line)
            if match:
                samples.setdefault(match.group(1), set()).update(
                    re.findall(r'(\w+)="', match.group(2) or ""))
        return samples if "tritonkit_rejected_rows_total" in samples else None
    return _until(scrape, "the drift counters on Triton's /metrics")


# -- helpers ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _running(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process for the length of a `with` block: SIGTERM, wait, then kill."""
    with open(log, "wb") as handle:
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _until(probe: Callable[[], T | None], what: str, timeout_s: float = 20.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = probe()
        except (OSError, urllib.error.URLError):  # not up yet
            value = None
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def _http_status(url: str, data: bytes | None = None, headers: dict[str, str] | None = None
                 ) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def _evaluated_groups(prometheus: Prometheus) -> list[dict[str, Any]] | None:
    groups: list[dict[str, Any]] = prometheus.get("/api/v1/rules")["data"]["groups"]
    done = groups and all(not r.get("lastEvaluation", "0001").startswith("0001")
                          for g in groups for r in g["rules"])
    return groups if done else None


def _settled(value: float | None, expected: float) -> float | None:
    return value if value is not None and abs(value - expected) < 1e-9 else None


def _inhibited(status: dict[str, Any] | None) -> dict[str, Any] | None:
    return status if status and status["inhibitedBy"] else None


def _labels(spec: str, service: str) -> dict[str, str]:
    """ "alertname/severity[/feature]" -> an alert's labels."""
    name, severity, *feature = spec.split("/")
    labels = {"alertname": name, "severity": severity, "service": service}
    if feature:
        labels["feature"] = feature[0]
    return labels
