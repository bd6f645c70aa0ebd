"""The monitoring sidecar: every `interval_s` it scrapes, windows, judges and alerts; every
`health_interval_s` it checks the model with real inferences (and heals it); an HTTP server
answers `/metrics`, `/health`, `/alerts`, `/report` and the alert inbox (`/alerts/inbox`, where
Alertmanager's default receivers deliver: `tritonkit.monitor.inbox`), as `monitor.api` says.
Its settings are `monitor.settings`'::

    with MonitorService(MonitorSettings(triton_url="http://127.0.0.1:8000", port=0)) as service:
        print(service.url)                    # http://127.0.0.1:<the port it got>
        service.evaluate_once()               # what the loop runs; tests pass `now`
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
import time
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tritonkit.errors import ArtifactMissingError, TritonKitError
from tritonkit.monitor.alerts import (
    Alert,
    AlertEngine,
    AlertSink,
    Transition,
    load_alert_rules,
)
from tritonkit.monitor.api import alert_json, handler, transition_json
from tritonkit.monitor.delivery import AlertmanagerSink, WebhookSink
from tritonkit.monitor.drift_stats import DriftThresholds
from tritonkit.monitor.health import Check, HealthMonitor, HealthReport, TritonProbe
from tritonkit.monitor.inbox import Inbox
from tritonkit.monitor.metrics import SidecarMetrics
from tritonkit.monitor.probes import ProbeBodies, probe_bodies
from tritonkit.monitor.report import render_report
from tritonkit.monitor.settings import MonitorSettings, load_profile
from tritonkit.monitor.signals import PROBES, Serving, WindowJudge, WindowSignals, serving
from tritonkit.monitor.sources import (
    FallbackSource,
    MetricSource,
    PrometheusSource,
    SourceError,
    TritonMetricsSource,
)
from tritonkit.monitor.windows import CounterWindows, Sample
from tritonkit.repository.entry_points import EntryPoint, entry_points
from tritonkit.spec import Spec, TabularClassifier, load_spec
from tritonkit.tabular.artifacts import TabularArtifacts

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What one evaluation saw and changed."""

    at: float
    signals: WindowSignals | None  # None before the second scrape, or when the scrape failed
    transitions: tuple[Transition, ...]
    source_error: str | None
    seconds: float


class MonitorService:
    """The sidecar. Build it, `start()` it (or use it as a context manager), `stop()` it."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.profile, self.version, profile_path = load_profile(settings)
        customers_file = profile_path.parent / "test.csv"
        if not customers_file.exists():
            raise ArtifactMissingError(f"{customers_file} (the health probes' customers) not "
                                       "found: run `make build-engines`")
        self.spec: Spec = load_spec()
        self.judge = WindowJudge(self.profile, model=settings.model, version=self.version,
                                 thresholds=DriftThresholds(min_rows=settings.min_rows))
        #: by model: `--model`'s judge, then one for each other tabular model Triton serves
        self.judges: dict[str, WindowJudge] = {settings.model: self.judge}
        self._unjudged: set[str] = set()
        self.windows = CounterWindows(settings.window_s)
        triton_source = TritonMetricsSource(settings.resolved_metrics_url(), settings.timeout_s)
        self.source: MetricSource = (
            FallbackSource(PrometheusSource(settings.prometheus_url, settings.timeout_s),
                           triton_source)
            if settings.prometheus_url else triton_source)
        self._switches = 0
        self.metrics = SidecarMetrics()
        self._sinks: list[AlertSink] = []
        if settings.alertmanager_url:
            self._sinks.append(AlertmanagerSink(settings.alertmanager_url,
                                                timeout_s=settings.timeout_s))
        if settings.webhook_url:
            self._sinks.append(WebhookSink(settings.webhook_url, timeout_s=settings.timeout_s))
        self.rules = load_alert_rules(settings.alerts_file)
        #: one engine per entry point: its alerts carry it as `model` and `service`
        self.engines: dict[str, AlertEngine] = {}
        #: the entry points Triton serves, with their steps (filled at the first discovery)
        self.entries: dict[str, EntryPoint] = {}
        self.health = HealthMonitor(
            TritonProbe(settings.triton_url, admin_key=settings.admin_key,
                        timeout_s=settings.timeout_s),
            self._discover, probes=settings.probes,
            latency_budget_ms=settings.latency_budget_ms, heal=settings.heal)
        self.health.on_heal.append(self.metrics.count_heal)
        self.health.on_probe.append(self._count_probe)
        self._probe_counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._probe_lock = threading.Lock()
        self.latest_serving: dict[str, Serving] = {}
        self.latest: Evaluation | None = None
        self.latest_signals: WindowSignals | None = None  # of the newest window judged
        self.resolved: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self.inbox = Inbox()
        self.engine = self._engine(settings.model)  # the drift model's: drift alerts too
        self._source_error: str | None = "not scraped yet"
        self._evaluate_lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._http: ThreadingHTTPServer | None = None

    # -- entry points and probes ----------------------------------------------------------------
    def _discover(self) -> dict[str, ProbeBodies]:
        """The entry points Triton serves (its repository index and configs, through the admin
        key where the APIs are restricted) that the spec has probes for."""
        repository = self.health.probe.repository
        configs = {name: repository.config(name) for name in repository.served()}
        wanted = set(self.settings.entry_points)
        targets: dict[str, ProbeBodies] = {}
        for entry in entry_points(configs):
            if wanted and entry.name not in wanted:
                continue
            bodies = probe_bodies(entry, configs[entry.name], self.spec)
            if bodies is None:
                logger.info("no probes for %s: no model of the spec is behind it", entry.name)
                continue
            self.entries[entry.name] = entry
            targets[entry.name] = bodies
        return targets

    def _judges(self) -> dict[str, WindowJudge]:
        """The drift judge of each model: `--model`'s, and every other tabular model of the
        spec with drift metrics that Triton serves, from its build's reference profile (a
        model whose profile is missing is left out, once, with a warning)."""
        for name, model in self.spec.models.items():
            if name in self.judges or name in self._unjudged or name not in self.entries:
                continue
            if not (isinstance(model, TabularClassifier) and model.drift_metrics.enabled):
                continue
            paths = TabularArtifacts.for_version(model.version, name=name)
            try:
                profile = json.loads(paths.profile.read_text())
            except (OSError, ValueError) as exc:
                logger.warning("no drift verdicts for %s: its reference profile %s cannot be "
                               "read (%s): run `make build-engines`", name, paths.profile, exc)
                self._unjudged.add(name)
                continue
            self.judges[name] = WindowJudge(profile, model=name, version=str(model.version),
                                            thresholds=self.judge.thresholds)
        return self.judges

    def _count_probe(self, entry: str, ok: bool) -> None:
        with self._probe_lock:
            self._probe_counts[entry, "ok" if ok else "failed"] += 1
        self.metrics.count_probe(entry, ok)

    def _probe_samples(self) -> list[Sample]:
        """The probes sent so far, as samples of PROBES for the windows."""
        with self._probe_lock:
            counts = dict(self._probe_counts)
        return [(PROBES, {"model": entry, "outcome": outcome}, float(n))
                for (entry, outcome), n in counts.items()]

    def _engine(self, entry: str) -> AlertEngine:
        engine = self.engines.get(entry)
        if engine is None:
            engine = self.engines[entry] = AlertEngine(self.rules, sinks=self._sinks,
                                                       model=entry)
        return engine

    def firing(self) -> list[Alert]:
        return [alert for engine in self.engines.values() for alert in engine.firing()]

    # -- the loop ---------------------------------------------------------------------------
    def evaluate_once(self, now: float | None = None) -> Evaluation:
        """Scrape, add the snapshot, judge the window, evaluate and deliver the alerts.

        Args:
            now: the evaluation's time in seconds (default: the clock); tests pass their own
                to drive windows deterministically.
        """
        with self._evaluate_lock:
            at = time.time() if now is None else now
            samples = None
            try:
                samples = self.source.scrape()
                self._source_error = None
            except SourceError as exc:
                self._source_error = str(exc)
                self.metrics.count_scrape_error(self.source.name)
                logger.warning("scrape failed: %s", exc)
            started = time.perf_counter()
            signals = None
            drift: dict[str, WindowSignals] = {}  # by model: the drift verdicts of the window
            if samples is not None:
                switches = getattr(self.source, "switches", 0)
                if switches != self._switches:  # another source counts differently
                    self._switches = switches
                    self.windows = CounterWindows(self.settings.window_s)
                own = self._probe_samples()
                self.windows.add(at, [s for s in samples if s[0] != PROBES] + own)
                window = self.windows.window()
                if window is not None:
                    _ = self.health.targets  # finds the entry points, once Triton can say
                    for entry in self.entries.values():
                        self.latest_serving[entry.name] = serving(window, entry)
                    for model, judge in self._judges().items():
                        drift_entry = self.entries.get(model, EntryPoint(model, (), False))
                        drift[model] = judge.judge(window, drift_entry)
                        self.metrics.publish(drift[model])
                        self.latest_serving[model] = drift[model].serving
                    signals = drift[self.settings.model]
                    for entry_serving in self.latest_serving.values():
                        self.metrics.publish_serving(entry_serving)
            self.metrics.set_source_fallback(getattr(self.source, "falling_back", None)
                                             is not None)
            unavailable = self.health.take_unavailable()
            transitions: list[Transition] = []
            for entry_name in {*self.entries, *unavailable, self.settings.model}:
                entry_serving = (self.latest_serving.get(entry_name) if signals is not None
                                 else None)
                alert_signals: dict[str, Any] = (
                    entry_serving.alert_signals(unavailable.get(entry_name))
                    if entry_serving is not None
                    else {"model_unavailable": unavailable.get(entry_name)})
                if entry_name in drift:
                    alert_signals = drift[entry_name].alert_signals(unavailable.get(entry_name))
                transitions += self._engine(entry_name).evaluate(at, alert_signals)
            for transition in transitions:
                if transition.state == "resolved":
                    self.resolved.appendleft(transition_json(transition))
            self.metrics.set_alerts(self.firing())
            seconds = time.perf_counter() - started
            self.metrics.observe_evaluation(seconds)
            if signals is not None:
                self.latest_signals = signals
            self.latest = Evaluation(at, signals, tuple(transitions), self._source_error, seconds)
            return self.latest

    def check_health(self) -> HealthReport:
        """Run the health checks now (what the health loop runs), metrics source included."""
        with self._health_lock:
            report = self.health.check()
        self.metrics.set_health({c.name: c.ok for c in self._with_source(report).checks})
        return report

    def health_report(self) -> HealthReport:
        """The newest health report (one is made now if none exists), with the source check."""
        report = self.health.latest
        if report is None:
            report = self.check_health()
        return self._with_source(report)

    def _with_source(self, report: HealthReport) -> HealthReport:
        error = self._source_error
        fallback = getattr(self.source, "falling_back", None)
        detail = error or f"{self.source.url} scraped"
        if fallback is not None and error is None:
            # serving on: the sidecar judges one replica's counters until Prometheus is back
            direct = self.settings.resolved_metrics_url()
            detail = (f"reading Triton's /metrics directly at {direct} (one replica) because "
                      f"Prometheus cannot be reached: {fallback}")
        source = Check(f"metrics_source_{self.source.name}", error is None, detail)
        return dataclasses.replace(report, checks=(*report.checks, source),
                                   degraded=(detail,) if fallback is not None else ())

    def alerts_json(self) -> dict[str, Any]:
        with self._evaluate_lock:
            firing = [alert_json(a) for a in self.firing()]
            resolved = list(self.resolved)
        return {"firing": firing, "resolved": resolved}

    def receive_notification(self, receiver: str, body: bytes) -> dict[str, Any]:
        """One webhook payload Alertmanager delivered (`POST /alerts/inbox/<receiver>`)."""
        notification = self.inbox.receive(receiver, body)
        self.metrics.count_notification(receiver, notification["status"] or "unknown",
                                        self.inbox.last_received()[receiver])
        return notification

    def report_html(self) -> str:
        with self._evaluate_lock:
            signals = self.latest_signals
            firing = self.firing()
        return render_report(signals, self.profile, firing=firing,
                             health=self.health.latest, inbox=self.inbox.as_json())

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port the HTTP server got (settings.port, or a free one for port 0)."""
        if self._http is None:
            raise TritonKitError("the sidecar's HTTP server is not started: call start()")
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def start(self, *, evaluate_loop: bool = True, health_loop: bool = True
              ) -> MonitorService:
        """Serve HTTP; evaluate every interval_s and check health every health_interval_s in
        background threads (tests turn a loop off and call `evaluate_once` themselves)."""
        try:
            self._http = ThreadingHTTPServer((self.settings.host, self.settings.port),
                                             handler(self))
        except OSError as exc:
            raise TritonKitError(f"the sidecar cannot listen on {self.settings.host}:"
                                 f"{self.settings.port}: {exc.strerror}: pick another port "
                                 "(--port / TRITONKIT_MONITOR_PORT)") from exc
        self._http.daemon_threads = True
        self._spawn("monitor-http", self._http.serve_forever)
        if evaluate_loop:
            self._spawn("monitor-evaluate",
                        lambda: self._every(self.settings.interval_s, self.evaluate_once))
        if health_loop:
            self._spawn("monitor-health",
                        lambda: self._every(self.settings.health_interval_s, self.check_health))
        logger.info("monitoring sidecar on %s", self.url)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        for sink in self._sinks:  # shared by the engines
            sink.close()
        self.source.close()
        self.health.probe.close()

    def __enter__(self) -> MonitorService:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _every(self, interval_s: float, work: Any) -> None:
        """Run `work` now and then every `interval_s` until stop(); a failure is logged."""
        while not self._stop.is_set():
            try:
                work()
            except Exception:  # the service keeps running whatever one round did
                logger.exception("%s failed", threading.current_thread().name)
            self._stop.wait(interval_s)
