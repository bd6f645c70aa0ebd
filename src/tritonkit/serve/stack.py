"""What `make up` runs beside the embedded Triton: the monitoring sidecar in this process,
Prometheus and Alertmanager from the Debian binaries (`apt-get install prometheus
prometheus-alertmanager`), and the public /predict gateway; one owner per process that
`make up` and the tests both use.

Each child dies with its parent, is polled for readiness against a deadline (its log's tail in
the error when it does not come up), and is stopped with SIGTERM, then killed. The embedded
Prometheus gets `monitoring/prometheus/prometheus.yml` with local targets (same job names, the
same rules folder); Alertmanager gets `monitoring/alertmanager/alertmanager.yml` with its
receivers' URLs written in (`tritonkit.monitor.receivers`): the sidecar's inbox unless
`TRITONKIT_ALERT_<RECEIVER>_URL` names another::

    stack = EmbeddedStack(triton, StackOptions(monitor_port=9108, alertmanager_port=9093)).start()
    print(stack.banner()); ...; stack.stop()
    with AlertmanagerProcess(port=free_port(), workdir=tmp, inbox=sidecar.url) as alertmanager:
        alertmanager.alerts()         # GET /api/v2/alerts
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from tritonkit.child_process import ChildProcess, http_ok
from tritonkit.client.customers import DEFAULT_MODEL, held_out_example
from tritonkit.errors import ServerStartError, TritonKitError
from tritonkit.gateway.auth import ensure_dev_keys
from tritonkit.gateway.process import GatewayProcess
from tritonkit.gateway.settings import DEFAULT_KEYS_FILE
from tritonkit.monitor.receivers import alertmanager_config
from tritonkit.monitor.rules import PRODUCTION_RULES, render_rules
from tritonkit.monitor.service import MonitorService
from tritonkit.monitor.settings import MonitorSettings
from tritonkit.paths import CACHE, PROJECT_ROOT
from tritonkit.repository.entry_points import repository_entry_points
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import TritonServer
from tritonkit.tabular.contract import contract as contract_of

logger = logging.getLogger(__name__)


def predict_example() -> dict[str, Any]:
    """A `/predict` body for the banner: churn's first held-out customer, whole numbers as
    JSON integers (the gateway refuses 0.0 for an integer feature)."""
    row = held_out_example()
    churn = contract_of(DEFAULT_MODEL)
    whole = churn.schema.integer_features
    return {"customer_id": str(row[churn.id_column]),
            "features": {n: int(row[n]) if n in whole else row[n] for n in churn.features}}


MONITORING = PROJECT_ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
#: Debian's names first, then upstream's.
PROMETHEUS_BINARIES = ("prometheus",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
_P = TypeVar("_P", bound="ManagedProcess")


def find_binary(names: tuple[str, ...]) -> str | None:
    """The first of `names` on PATH (or in /usr/bin), None when none is installed."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin")
        if found:
            return found
    return None


class ManagedProcess(ChildProcess):
    """A monitoring server from its Debian binary, with its log and data in `workdir`."""

    binaries: tuple[str, ...] = ()
    install_hint = ""

    def __init__(self, *, port: int, workdir: Path, host: str = "127.0.0.1") -> None:
        super().__init__(port=port, host=host, log_file=workdir / f"{self.name}.log")
        self.workdir = workdir

    def command(self) -> list[str]:
        binary = find_binary(self.binaries)
        if binary is None:
            raise ServerStartError(f"{self.name} is not installed: {self.install_hint}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.arguments(binary)

    def arguments(self, binary: str) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        return http_ok(f"{self.url}/-/ready")


class AlertmanagerProcess(ManagedProcess):
    """Alertmanager on one port, clustering off (it would bind 0.0.0.0:9094 otherwise)."""

    name = "alertmanager"
    binaries = ALERTMANAGER_BINARIES
    install_hint = "apt-get install prometheus-alertmanager"

    def __init__(self, *, port: int, workdir: Path, inbox: str, host: str = "127.0.0.1"
                 ) -> None:
        """`inbox`: the sidecar's base URL, where every receiver delivers unless its
        `TRITONKIT_ALERT_<RECEIVER>_URL` names another (`tritonkit.monitor.receivers`)."""
        super().__init__(port=port, workdir=workdir, host=host)
        self.config_file = workdir / "alertmanager.yml"
        # rendered now: a variable that is no URL is an error before anything starts
        self.config = alertmanager_config(inbox)

    def arguments(self, binary: str) -> list[str]:
        self.config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        return [binary, f"--config.file={self.config_file}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}", "--cluster.listen-address="]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds now (`GET /api/v2/alerts`)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as response:
            alerts: list[dict[str, Any]] = json.loads(response.read())
        return alerts


class PrometheusProcess(ManagedProcess):
    """Prometheus with a config file written for local targets (`prometheus_config`)."""

    name = "prometheus"
    binaries = PROMETHEUS_BINARIES
    install_hint = "apt-get install prometheus"

    def __init__(self, *, port: int, workdir: Path, config: dict[str, Any],
                 host: str = "127.0.0.1") -> None:
        super().__init__(port=port, workdir=workdir, host=host)
        self.config_file = workdir / "prometheus.yml"
        self.config = config

    def arguments(self, binary: str) -> list[str]:
        self.config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        return [binary, f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}"]


def prometheus_config(targets: Mapping[str, str | Sequence[str]], alertmanager: str | None,
                      template: Path = PROMETHEUS_CONFIG, interval_s: float = 15.0,
                      serving_rules: Path | None = None) -> dict[str, Any]:
    """The production `prometheus.yml` with local targets: same jobs, same rule files, except
    the serving rules where `serving_rules` names the ones rendered for the served repository
    (`tritonkit.monitor.rules`: production's name steps the embedded target fuses).

    Args:
        targets: job name -> host:port, or several (jobs of the template not named here are
            dropped).
        alertmanager: host:port of Alertmanager, or None for no alerting.
        template: the production config whose jobs and rule files are kept.
        interval_s: scrape and rule-evaluation interval.
    """
    base: dict[str, Any] = yaml.safe_load(template.read_text()) if template.exists() else {}
    folder = template.parent
    jobs = [job["job_name"] for job in base.get("scrape_configs", [])] or list(targets)
    config: dict[str, Any] = {
        "global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval":
                   f"{interval_s:g}s"},
        "rule_files": _rule_files(folder, base.get("rule_files", []), serving_rules),
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": _listed(
            targets[job])}]} for job in jobs if job in targets],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [alertmanager]}]}]}
    return config


def _listed(targets: str | Sequence[str]) -> list[str]:
    return [targets] if isinstance(targets, str) else list(targets)


def _rule_files(folder: Path, patterns: list[str], serving_rules: Path | None) -> list[str]:
    if serving_rules is None:
        return [str(folder / pattern) for pattern in patterns]
    files = sorted({path for pattern in patterns for path in folder.glob(pattern)})
    return [str(p) for p in files if p.name != PRODUCTION_RULES.name] + [str(serving_rules)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class StackOptions:
    """What `make up` starts beside tritonserver; a port of None leaves that server out."""

    monitor: bool = True
    monitor_port: int = 0  # 0: any free port
    prometheus_port: int | None = None
    alertmanager_port: int | None = None
    admin_key: str | None = None
    #: the file holding `admin_key`: the gateway reads it for its admin reload
    admin_key_file: Path | None = None
    workdir: Path = CACHE / "monitoring"
    gateway_port: int = 0  # 0: no gateway


class EmbeddedStack:
    """The sidecar (in this process), Alertmanager and Prometheus beside a running Triton.

    Monitoring is never a reason to stop serving: a part that cannot start is left out and
    named in `notes` (and in the banner) with its fix.
    """

    def __init__(self, triton: TritonServer, options: StackOptions,
                 replicas: Sequence[TritonServer] = ()) -> None:
        """`triton`: the server the sidecar watches; `replicas`: every Triton the gateway
        calls and Prometheus scrapes (default: `triton` alone)."""
        self.triton = triton
        self.replicas = list(replicas) or [triton]
        self.options = options
        self.monitor: MonitorService | None = None
        self.alertmanager: AlertmanagerProcess | None = None
        self.prometheus: PrometheusProcess | None = None
        self.gateway: GatewayProcess | None = None
        self.gateway_key: str | None = None
        self._gateway_admin_key: str | None = None
        self.notes: list[str] = []

    def start(self) -> EmbeddedStack:
        o, host = self.options, self.triton.settings.host
        # known before either starts: Alertmanager delivers to the sidecar's inbox, the sidecar
        # sends its alerts to Alertmanager
        monitor_port = o.monitor_port or free_port(host)
        if o.alertmanager_port is not None:
            try:
                self.alertmanager = self._start_process(AlertmanagerProcess(
                    port=o.alertmanager_port, host=host, inbox=f"http://{host}:{monitor_port}",
                    workdir=o.workdir / f"alertmanager-{o.alertmanager_port}"))
            except TritonKitError as exc:  # a TRITONKIT_ALERT_*_URL that is no URL
                self.notes.append(f"alertmanager did not start: {exc}")
        if o.monitor:
            try:
                self.monitor = MonitorService(MonitorSettings(
                    triton_url=self.triton.http_url, metrics_url=self.triton.metrics_url,
                    host=host, port=monitor_port, admin_key=o.admin_key,
                    alertmanager_url=self.alertmanager.url if self.alertmanager else None,
                )).start()
            except TritonKitError as exc:
                self.notes.append(f"the monitoring sidecar did not start: {exc}")
        if o.gateway_port:
            self._start_gateway(host, o.gateway_port)
        if o.prometheus_port is not None:
            targets: dict[str, str | list[str]] = {
                "triton": [urlsplit(r.metrics_url).netloc for r in self.replicas],
                "prometheus": f"{host}:{o.prometheus_port}"}
            if self.monitor is not None:
                targets["tritonkit-monitor"] = f"{host}:{self.monitor.port}"
            if self.alertmanager is not None:
                targets["alertmanager"] = f"{host}:{self.alertmanager.port}"
            if self.gateway is not None:
                targets["gateway"] = f"{host}:{self.gateway.port}"
            workdir = o.workdir / f"prometheus-{o.prometheus_port}"
            workdir.mkdir(parents=True, exist_ok=True)
            serving_rules = workdir / "serving.yml"
            serving_rules.write_text(render_rules(
                repository_entry_points(self.triton.settings.model_repository)))
            self.prometheus = self._start_process(PrometheusProcess(
                port=o.prometheus_port, host=host, workdir=workdir,
                config=prometheus_config(
                    targets, f"{host}:{self.alertmanager.port}" if self.alertmanager else None,
                    serving_rules=serving_rules)))
        return self

    def _start_gateway(self, host: str, port: int) -> None:
        try:
            keys = ensure_dev_keys(DEFAULT_KEYS_FILE)
            self.gateway_key, self._gateway_admin_key = keys["caller"], keys["admin"]
            # KServe v2 binary tensors over HTTP: the gateway's cheaper path to Triton
            # (bench/gateway.py: ~85 µs of gateway CPU per call against ~250 µs over gRPC).
            triton = ",".join(r.http_url.removeprefix("http://") for r in self.replicas)
            key_file = self.options.admin_key_file
            self.gateway = GatewayProcess(
                triton_url=triton, protocol="http", host=host, port=port, dev_mode=True,
                extra_args=["--triton-admin-key-file", str(key_file)] if key_file else ()
            ).start()
        except (TritonKitError, OSError) as exc:
            self.notes.append(f"the /predict gateway did not start: {exc}")

    def drain(self, index: int, timeout_s: float = 60.0) -> None:
        """Take Triton replica `index` out of the gateway's rotation, its calls answered (a
        rolling restart's first step); nothing without a gateway."""
        self._gateway_admin(f"/admin/replicas/{index}/drain?timeout_s={timeout_s:g}",
                            timeout_s + 10)

    def enable(self, index: int) -> None:
        """Put Triton replica `index` back in the gateway's rotation."""
        self._gateway_admin(f"/admin/replicas/{index}/enable", 30)

    def _gateway_admin(self, path: str, timeout_s: float) -> None:
        if self.gateway is None or self._gateway_admin_key is None:
            return
        request = urllib.request.Request(f"{self.gateway.url}{path}", data=b"", method="POST",
                                         headers={"X-API-Key": self._gateway_admin_key})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                pass
        except (urllib.error.URLError, OSError) as exc:
            # the restart goes on: the gateway retries what a stopping replica refuses
            logger.warning("the gateway did not take %s: %s", path, exc)

    def _start_process(self, process: _P) -> _P | None:
        try:
            process.start()
        except ServerStartError as exc:
            self.notes.append(f"{process.name} did not start: {exc}")
            return None
        return process

    def banner(self) -> str:
        lines = []
        if self.monitor is not None:
            url = self.monitor.url
            lines.append(f"  sidecar  {url}/health  {url}/alerts  {url}/report  {url}/metrics")
            if self.alertmanager is not None:
                lines.append(f"  delivered alerts  {url}/alerts/inbox   (Alertmanager's "
                             "receivers; TRITONKIT_ALERT_<RECEIVER>_URL names your own)")
        for name, process in (("Prometheus", self.prometheus),
                              ("Alertmanager", self.alertmanager)):
            if process is not None:
                lines.append(f"  {name:<12} {process.url}   (log {process.log_file})")
        if self.gateway is not None:
            url = self.gateway.url
            lines.append(f"  gateway  {url}/predict   (OpenAPI {url}/docs, log "
                         f"{self.gateway.log_file})")
            try:
                example = predict_example()
            except (OSError, KeyError, TritonKitError) as exc:
                lines.append(f"  (no example request: {exc})")
            else:
                lines.append(f"  curl -s {url}/predict -H 'X-API-Key: {self.gateway_key}' "
                             "-H 'Content-Type: application/json' \\\n    -d '"
                             + json.dumps(example, separators=(",", ":")) + "'")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def stop(self) -> None:
        """Stop every part (the gateway and Prometheus first, Alertmanager last); a second call
        does nothing."""
        prometheus, monitor, alertmanager = self.prometheus, self.monitor, self.alertmanager
        gateway, self.gateway = self.gateway, None
        self.prometheus = self.monitor = self.alertmanager = None
        if gateway is not None:
            gateway.stop(check=False)
        if prometheus is not None:
            prometheus.stop()
        if monitor is not None:
            monitor.stop()
        if alertmanager is not None:
            alertmanager.stop()
