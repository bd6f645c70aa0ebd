"""The monitoring stack's configuration, offline: Prometheus' config, rules and their promtool unit
tests, Alertmanager's routes and inhibitions, Grafana's provisioning, the compose file and the
sidecar's image. The tools run when installed (Debian: `apt-get install prometheus
prometheus-alertmanager docker-compose`) and the test says so when one is missing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonkit.errors import TritonKitError
from tritonkit.families.render import render_repository
from tritonkit.monitor.receivers import alertmanager_config, load_config, receivers, secret_name
from tritonkit.monitor.rules import PRODUCTION_RULES, render_rules
from tritonkit.paths import PROJECT_ROOT
from tritonkit.repository.entry_points import EntryPoint, repository_entry_points
from tritonkit.serve.secrets import make_production_secrets
from tritonkit.spec import Spec, load_spec
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.text.artifacts import TextEmbeddingArtifacts

from ..support import require_tool

MONITORING = PROJECT_ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
RULE_FILES = sorted((MONITORING / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((MONITORING / "prometheus" / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = MONITORING / "alertmanager" / "alertmanager.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "serving.json"
GRAFANA_PROVISIONING = MONITORING / "grafana" / "provisioning"
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
SIDECAR_ALERTS = PROJECT_ROOT / "configs" / "alerts.yaml"
SEVERITIES = {"page", "ticket", "critical", "warning", "none"}


def _tool(name: str, package: str) -> str:
    return require_tool(name, f"apt-get install {package}")


def _run(*cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120,
                          cwd=PROJECT_ROOT, env=env)


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


# -- Prometheus ------------------------------------------------------------------------------

def test_prometheus_config_passes_promtool_check_config() -> None:
    promtool = _tool("promtool", "prometheus")
    result = _run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout


def test_prometheus_rules_pass_promtool_check_rules() -> None:
    promtool = _tool("promtool", "prometheus")
    result = _run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rules_pass_their_promtool_unit_tests() -> None:
    promtool = _tool("promtool", "prometheus")
    assert {p.stem for p in RULE_TESTS} >= {"gateway_test", "serving_test", "drift_test"}
    result = _run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_tests_cover_every_alert_firing_and_silent() -> None:
    """Each alert name has a promtool case where it fires and one where it stays silent."""
    fired: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - silent == {"Watchdog"}, "alerts never shown silent (the Watchdog never is)"


def test_prometheus_scrapes_the_compose_services_on_their_ports() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in config["scrape_configs"]}
    services = _compose()["services"]
    assert targets["triton"] == ["triton:8002"]
    assert "--metrics-port=8002" in services["triton"]["command"]
    assert targets["tritonkit-monitor"] == ["monitor:9108"]
    assert services["monitor"]["environment"]["TRITONKIT_MONITOR_PORT"] == "9108"
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]


def test_prometheus_alerts_carry_severity_service_and_runbook() -> None:
    alerts = _alerts()
    assert alerts
    for rule in alerts:
        assert rule["alert"].startswith("Triton") or rule["alert"] == "Watchdog", rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        # drift and serving alerts are each model's or entry point's own
        assert rule["labels"]["service"] in ("triton", "gateway", "monitoring",
                                             "{{ $labels.model }}"), rule
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def test_prometheus_alert_names_differ_from_the_sidecars() -> None:
    """Both send to Alertmanager: a shared name would merge two evaluators' alerts."""
    sidecar = {rule["name"] for rule in yaml.safe_load(SIDECAR_ALERTS.read_text())["rules"]}
    assert {rule["alert"] for rule in _alerts()} & sidecar == set()


def test_an_alert_both_evaluators_raise_has_the_same_severities_in_each() -> None:
    """The sidecar's `X` and Prometheus' `TritonX` are one alert judged twice: the same
    severities route them to the same people (ModelErrorRateHigh paged from one and went to
    the critical channel from the other)."""
    sidecar: dict[str, set[str]] = {}
    for rule in yaml.safe_load(SIDECAR_ALERTS.read_text())["rules"]:
        sidecar.setdefault(f"Triton{rule['name']}", set()).add(rule["severity"])
    prometheus: dict[str, set[str]] = {}
    for rule in _alerts():
        prometheus.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    shared = sidecar.keys() & prometheus.keys()
    assert len(shared) >= 8, shared
    assert {name: sidecar[name] for name in shared} == {name: prometheus[name] for name in shared}


def test_serving_rules_are_what_the_renderer_makes_of_the_production_repository(
        tabular_built: dict[str, TabularArtifacts], minilm_exported: TextEmbeddingArtifacts,
        tmp_path: Path) -> None:
    """monitoring/prometheus/rules/serving.yml is generated: a spec change that adds, removes
    or reshapes an entry point must come with `make rules`. The repository is the shipped
    spec's production one, every model served FP32 (a variant changes no step)."""
    spec = load_spec()
    models = {name: model.model_copy(update={"variants": model.variants.model_copy(
        update={"serve": {t: "fp32" for t in spec.targets}})})
        for name, model in spec.models.items()}
    render_repository(spec.model_copy(update={"models": models}), "production", tmp_path)
    entries = repository_entry_points(tmp_path)
    rendered = render_rules(entries)
    assert PRODUCTION_RULES.read_text() == rendered, "stale serving rules: run `make rules`"
    served = {e.name for e in entries}
    recorded = {rule["labels"]["model"] for rule in _rules()
                if rule.get("record") == "tritonkit:requests:rate5m"}
    assert recorded == served == {"churn", "churn_packed", "cancer", "cancer_packed", "minilm"}


def test_failures_are_divided_by_the_entry_points_multiplicity_and_refusals_subtracted() -> None:
    """Triton 2.51 counts a failed ensemble request twice, a model served as it is once; the
    first step's refusals are the callers' and come off the server's errors."""
    text = render_rules([EntryPoint("ens", ("ens_pre", "ens_model"), cached=True),
                         EntryPoint("alone", (), cached=True)])
    rules = {(r.get("record"), r.get("labels", {}).get("model")): " ".join(r["expr"].split())
             for group in yaml.safe_load(text)["groups"] for r in group["rules"]
             if "record" in r}
    ens = rules["tritonkit:server_errors:rate5m", "ens"]
    assert 'nv_inference_request_failure{model="ens"}[5m])) or' in ens and ")) / 2 -" in ens
    assert 'tritonkit_refused_requests_total{model="ens_pre"}[5m]' in ens
    alone = rules["tritonkit:server_errors:rate5m", "alone"]
    assert "/ 2" not in alone and 'tritonkit_refused_requests_total{model="alone"}' in alone
    assert 'model=~"ens_pre|ens_model"' in rules["tritonkit:latency_p95_ms", "ens"]
    assert "tritonkit_monitor_probe_requests_total" in rules["tritonkit:requests:rate1d", "ens"]


def test_burn_rate_alerts_page_and_ticket_on_the_sre_windows() -> None:
    burn = [r for r in _alerts() if r["alert"] == "TritonModelErrorBudgetBurn"]
    windows = {r["labels"]["slo_window"]: (r["labels"]["severity"], " ".join(r["expr"].split()))
               for r in burn}
    budget = "tritonkit:error_budget:ratio"
    assert windows == {
        "1h": ("page", f"tritonkit:request_error_ratio:rate1h > on (model) (14.4 * {budget}) "
                       f"and tritonkit:request_error_ratio:rate5m > on (model) (14.4 * {budget})"),
        "6h": ("page", f"tritonkit:request_error_ratio:rate6h > on (model) (6 * {budget}) "
                       f"and tritonkit:request_error_ratio:rate30m > on (model) (6 * {budget})"),
        "1d": ("ticket", f"tritonkit:request_error_ratio:rate1d > on (model) (3 * {budget}) "
                         f"and tritonkit:request_error_ratio:rate2h > on (model) (3 * {budget})"),
    }
    budgets = {r["labels"]["model"]: r["expr"] for r in _rules()
               if r.get("record") == budget}
    spec = load_spec()
    expected = {}
    for entry in budgets:
        found = spec.model_behind(entry)
        assert found is not None, entry
        expected[entry] = f"vector({1 - found[1].availability_slo:.6g})"
    assert budgets == expected
    assert {"churn", "churn_packed", "cancer", "cancer_packed", "minilm"} == set(budgets)


def test_each_entry_point_burns_the_budget_of_its_models_availability_slo(tmp_path: Path
                                                                          ) -> None:
    """10 % of requests fail at two entry points: the one whose model promises 90 % stays within
    its budget (1.0x), the one that promises 99.5 % pages on both windows and gets a ticket.
    promtool evaluates the rendered rules on the series."""
    promtool = _tool("promtool", "prometheus")
    spec = load_spec()
    lenient = spec.models["churn"].model_copy(update={"availability_slo": 0.9})
    spec = spec.model_copy(update={"models": {**spec.models, "churn": lenient}})
    rules = tmp_path / "serving.yml"
    rules.write_text(render_rules([EntryPoint("churn", (), cached=False),
                                   EntryPoint("minilm", (), cached=False)], spec))
    series = [{"series": f'nv_inference_request_{kind}{{job="triton",model="{model}"}}',
               "values": f"0+{per_minute}x1500"}
              for model in ("churn", "minilm")
              for kind, per_minute in (("success", 540), ("failure", 60))]
    cases = tmp_path / "burn_test.yml"
    cases.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m",
                                     "tests": [{"interval": "1m", "input_series": series,
                                                "promql_expr_test": [{
        "expr": 'count by (model, severity) (ALERTS{alertname="TritonModelErrorBudgetBurn",'
                'alertstate="firing"})', "eval_time": "24h",
        "exp_samples": [{"labels": '{model="minilm",severity="page"}', "value": 2},
                        {"labels": '{model="minilm",severity="ticket"}', "value": 1}]}]}]}))
    result = _run(promtool, "test", "rules", str(cases))
    assert result.returncode == 0, result.stdout + result.stderr



# -- Alertmanager ----------------------------------------------------------------------------

@pytest.fixture
def rendered_alertmanager_config(tmp_path: Path) -> Path:
    """The shipped config as `make up` writes it for Debian's Alertmanager 0.25 (which has no
    url_file): every receiver's URL written in, here the sidecar's inbox."""
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(alertmanager_config("http://127.0.0.1:9108", environ={})))
    return path


def test_alertmanager_config_passes_amtool_check_config(rendered_alertmanager_config: Path
                                                        ) -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    result = _run(amtool, "check-config", str(rendered_alertmanager_config))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("severity", "receiver"), [
    ("page", "pager"), ("critical", "critical"), ("warning", "ticket"), ("ticket", "ticket")])
def test_alertmanager_routes_each_severity_to_its_receiver(
        severity: str, receiver: str, rendered_alertmanager_config: Path) -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    result = _run(amtool, "config", "routes", "test",
                  f"--config.file={rendered_alertmanager_config}",
                  f"--verify.receivers={receiver}", "alertname=TritonModelErrorBudgetBurn",
                  "service=churn", f"severity={severity}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_sends_the_watchdog_to_the_dead_man_receiver_alone(
        rendered_alertmanager_config: Path) -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    result = _run(amtool, "config", "routes", "test",
                  f"--config.file={rendered_alertmanager_config}",
                  "--verify.receivers=deadman", "alertname=Watchdog", "severity=none")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_receiver_reads_its_url_from_a_secret_compose_mounts_and_the_secrets_writer_makes(
        tmp_path: Path) -> None:
    names = receivers(load_config())
    assert names == ["deadman", "pager", "critical", "ticket"]
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    mounted = set(compose["services"]["alertmanager"]["secrets"])
    assert {secret_name(n) for n in names} <= mounted
    assert {secret_name(n) for n in names} <= set(compose["secrets"])
    written, _ = make_production_secrets(
        tmp_path / "secrets", environ={"TRITONKIT_ALERT_PAGER_URL": "https://pager.example/x"})
    urls = {path.name: path.read_text().strip() for path in written
            if path.parent.name == "alertmanager"}
    assert urls == {"deadman-url": "http://monitor:9108/alerts/inbox/deadman",
                    "pager-url": "https://pager.example/x",
                    "critical-url": "http://monitor:9108/alerts/inbox/critical",
                    "ticket-url": "http://monitor:9108/alerts/inbox/ticket"}
    for name in names:  # the file compose names is the one written
        assert compose["secrets"][secret_name(name)]["file"].endswith(
            f"/alertmanager/{name}-url")


def test_make_up_writes_each_receivers_url_from_its_variable_or_the_sidecars_inbox() -> None:
    config = alertmanager_config("http://127.0.0.1:9108",
                                 environ={"TRITONKIT_ALERT_TICKET_URL": "https://tickets.example/"})
    hooks = {r["name"]: r["webhook_configs"] for r in config["receivers"]}
    assert hooks["ticket"] == [{"send_resolved": True, "url": "https://tickets.example/"}]
    assert hooks["pager"] == [{"send_resolved": True,
                               "url": "http://127.0.0.1:9108/alerts/inbox/pager"}]
    with pytest.raises(TritonKitError, match="TRITONKIT_ALERT_PAGER_URL"):
        alertmanager_config("http://127.0.0.1:9108",
                            environ={"TRITONKIT_ALERT_PAGER_URL": "pager.example"})


def test_alertmanager_groups_by_alertname_and_service() -> None:
    route = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["route"]
    assert route["group_by"] == ["alertname", "service"]


def test_alertmanager_inhibition_matchers_name_alerts_that_exist() -> None:
    """A renamed alert must not leave an inhibit rule that silently matches nothing."""
    names = {rule["alert"] for rule in _alerts()}
    if SIDECAR_ALERTS.exists():
        names |= {rule["name"] for rule in yaml.safe_load(SIDECAR_ALERTS.read_text())["rules"]}
    matcher = re.compile(r'^alertname(=~?)"(.*)"$')
    for rule in yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["inhibit_rules"]:
        for side in ("source_matchers", "target_matchers"):
            for text in rule[side]:
                match = matcher.match(text)
                if not match:
                    continue
                op, value = match.groups()
                hits = {n for n in names if (re.fullmatch(value, n) if op == "=~" else n == value)}
                assert hits, f"{side} {text} matches no alert of {sorted(names)}"


# -- Grafana ---------------------------------------------------------------------------------

def test_grafana_dashboard_reads_the_provisioned_prometheus() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    uid = datasources[0]["uid"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid and target["expr"], panel["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("requests", "latency", "queue", "error", "drift", "psi", "jensen-shannon",
                  "unseen", "prediction", "alerts"):
        assert topic in titles, topic


def test_grafana_provisions_the_dashboards_folder_that_compose_mounts() -> None:
    providers = yaml.safe_load(
        (GRAFANA_PROVISIONING / "dashboards" / "dashboards.yml").read_text())["providers"]
    volumes = _compose()["services"]["grafana"]["volumes"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in volumes}
    assert mounts["./monitoring/grafana/dashboards"] == providers[0]["options"]["path"]
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"


# -- docker-compose.yml ----------------------------------------------------------------------

def test_compose_runs_triton_and_its_monitoring() -> None:
    services = _compose()["services"]
    assert set(services) >= {"triton", "monitor", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        assert service["healthcheck"]["test"], name


def test_compose_serves_the_production_repository_that_the_spec_renders(spec: Spec) -> None:
    triton = _compose()["services"]["triton"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in triton["volumes"]}
    assert Path(mounts["/models"]) == Path(".") / spec.targets["production"].repository
    assert "./build/production/model_repository:/models:ro" in triton["volumes"]
    assert "--model-repository=/models" in triton["command"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]


def test_compose_triton_healthcheck_probes_the_ensembles_readiness() -> None:
    test = _compose()["services"]["triton"]["healthcheck"]["test"]
    assert any(part.endswith("/v2/models/churn/ready") for part in test), test
    assert not any("/v2/health/ready" in part for part in test)


def test_compose_summary_latencies_are_on_as_the_docs_say() -> None:
    """The p95 alert and the dashboard read Triton's latency quantiles; docs/monitoring.md,
    "Monitoring stack (production)" says they are on."""
    assert "--metrics-config=summary_latencies=true" in _compose()["services"]["triton"]["command"]
    page = (PROJECT_ROOT / "docs" / "monitoring.md").read_text()
    section = page[page.index("\n## Monitoring stack (production)\n"):]
    section = section.split("\n## ", 2)[1]
    assert "--metrics-config=summary_latencies=true" in section


def test_compose_monitor_runs_the_sidecar_against_the_stack() -> None:
    monitor = _compose()["services"]["monitor"]
    assert monitor["build"]["dockerfile"] == "monitoring/Dockerfile"
    env = monitor["environment"]
    assert env["TRITONKIT_MONITOR_TRITON_URL"] == "http://triton:8000"
    assert env["TRITONKIT_MONITOR_METRICS_URL"] == "http://triton:8002/metrics"
    assert env["TRITONKIT_MONITOR_PROMETHEUS_URL"] == "http://prometheus:9090"
    assert env["TRITONKIT_MONITOR_ALERTMANAGER_URL"] == "http://alertmanager:9093"
    assert any("localhost:9108/health" in part for part in monitor["healthcheck"]["test"])
    dockerfile = (MONITORING / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "pip install -c constraints.txt '.[cpu]'" in dockerfile
    assert 'CMD ["python", "-m", "tritonkit.monitor.cli"]' in dockerfile


def test_compose_monitor_environment_names_options_the_sidecar_reads() -> None:
    """A misspelt TRITONKIT_MONITOR_* variable would be ignored without a word."""
    result = _run(sys.executable, "-m", "tritonkit.monitor.cli", "--help")
    assert result.returncode == 0, result.stderr
    documented = set(re.findall(r"TRITONKIT_MONITOR_[A-Z_]+", result.stdout))
    env = _compose()["services"]["monitor"]["environment"]
    assert set(env) - documented == set()
