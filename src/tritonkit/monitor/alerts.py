"""Alert rules with hysteresis and de-duplication; the sinks that deliver them to Alertmanager
and to webhooks are in `tritonkit.monitor.delivery`.

Rules come from `configs/alerts.yaml`; at each evaluation the sidecar hands the engine the
signals it computed, with an explicit clock (a signal it could not compute is left out)::

    engine = AlertEngine(load_alert_rules(), sinks=[AlertmanagerSink("http://127.0.0.1:9093")])
    engine.evaluate(time.time(), {"error_rate": 0.07, "feature_drift": {"tenure": 2.0}})
    engine.close()

Each (rule, labels) series moves inactive -> pending -> firing -> resolved: pending once the
rule's threshold is crossed, firing once that held `for_s`, resolved once the value stayed on
the other side of `clear_threshold` for `resolve_after_s`. A sink hears of a firing alert once,
then again every `resend_s` (Alertmanager forgets alerts that are not re-sent), and of its
resolution once; a failed delivery is logged and tried again at the next evaluation.
"""

from __future__ import annotations

import logging
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tritonkit.errors import TritonKitError
from tritonkit.paths import PROJECT_ROOT

logger = logging.getLogger(__name__)

DEFAULT_RULES = PROJECT_ROOT / "configs" / "alerts.yaml"
State = Literal["inactive", "pending", "firing", "resolved"]
Signals = Mapping[str, float | Mapping[str, float] | None]

#: The signals the sidecar computes, each with the label that tells its series apart (None: the
#: signal is one number). Drift levels are `drift_stats.signal_level`: 0 ok, 1 warning, 2 critical.
SIGNALS: dict[str, str | None] = {
    "error_rate": None,               # failed / all requests in the window
    "latency_p95_ms": None,           # 95th percentile of request latency
    "requests_per_minute": None,
    "queue_time_share": None,         # time spent queued / total request time
    "feature_drift": "feature",       # drift level per feature
    "unseen_category_share": "feature",
    "prediction_drift": None,         # drift level of the predicted probability
    "drifted_feature_share": None,    # share of judged features at warning or critical
    "model_unavailable": None,        # 1 while the model does not answer, else 0
}
_FNV_OFFSET, _FNV_PRIME, _MASK = 14695981039346656037, 1099511628211, (1 << 64) - 1


class AlertConfigError(TritonKitError):
    """The alert rules (configs/alerts.yaml) are invalid; the message names the rule and field."""


class SignalError(TritonKitError):
    """A signal handed to the engine has the wrong shape (a number where labels are expected)."""


class DeliveryError(TritonKitError):
    """An alert receiver could not be reached in time or refused the alerts."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AlertRule(_Frozen):
    """One rule: fire when `signal op threshold` held `for_s`, clear on the far side of
    `clear_threshold` after `resolve_after_s`. Templates may use {alertname}, {severity},
    {service}, {signal}, {value}, {threshold}, {clear_threshold} and the signal's label."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    signal: str
    op: Literal[">", "<"]
    threshold: float
    clear_threshold: float
    for_s: float = Field(0.0, ge=0)
    resolve_after_s: float = Field(0.0, ge=0)
    severity: Literal["warning", "critical", "page", "ticket"]
    summary: str
    description: str = ""

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        if value not in SIGNALS:
            raise ValueError(f"unknown signal {value!r}; the sidecar computes {sorted(SIGNALS)}")
        return value

    @model_validator(mode="after")
    def _hysteresis_and_templates(self) -> AlertRule:
        if self.op == ">" and self.clear_threshold > self.threshold:
            raise ValueError(f"clear_threshold ({self.clear_threshold}) must be at or below "
                             f"threshold ({self.threshold}) for op '>'")
        if self.op == "<" and self.clear_threshold < self.threshold:
            raise ValueError(f"clear_threshold ({self.clear_threshold}) must be at or above "
                             f"threshold ({self.threshold}) for op '<'")
        sample = self._fields(1.0, {"model": "x", **({self.label: "x"} if self.label else {})},
                              service="x")
        for name in ("summary", "description"):
            template: str = getattr(self, name)
            unknown = {f for _, f, _, _ in string.Formatter().parse(template) if f} - set(sample)
            if unknown:
                raise ValueError(f"{name} uses {sorted(unknown)}; known fields: {sorted(sample)}")
            try:
                template.format(**sample)
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{name} cannot be formatted: {exc}") from exc
        return self

    @property
    def label(self) -> str | None:
        """The label that tells this rule's series apart, if its signal has one."""
        return SIGNALS[self.signal]

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.op == ">" else value < self.threshold

    def cleared(self, value: float) -> bool:
        return value < self.clear_threshold if self.op == ">" else value > self.clear_threshold

    def annotations(self, value: float, labels: Mapping[str, str], service: str
                    ) -> dict[str, str]:
        fields = self._fields(value, labels, service)
        texts = {"summary": self.summary.format(**fields),
                 "description": self.description.format(**fields)}
        return {k: v for k, v in texts.items() if v}

    def _fields(self, value: float, labels: Mapping[str, str], service: str) -> dict[str, Any]:
        return {**labels, "alertname": self.name, "severity": self.severity, "service": service,
                "signal": self.signal, "value": value, "threshold": self.threshold,
                "clear_threshold": self.clear_threshold}


class AlertRules(_Frozen):
    """The rule file: the `service` label every alert carries, and the rules."""

    service: str = "tritonkit"
    rules: tuple[AlertRule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> AlertRules:
        seen: set[tuple[str, str]] = set()
        for rule in self.rules:
            if (rule.name, rule.severity) in seen:
                raise ValueError(f"rule {rule.name!r} with severity {rule.severity!r} is defined "
                                 "twice: rename one or give it another severity")
            seen.add((rule.name, rule.severity))
        return self


def load_alert_rules(path: Path = DEFAULT_RULES) -> AlertRules:
    """Load and check the rule file; the error names the rule and the field that is wrong."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise AlertConfigError(f"alert rules {path} not found") from exc
    except yaml.YAMLError as exc:
        raise AlertConfigError(f"alert rules {path} are not valid YAML: {exc}") from exc
    try:
        return AlertRules.model_validate(data)
    except ValidationError as exc:
        raise AlertConfigError(f"alert rules {path} are invalid:\n"
                               + "\n".join(_describe(e, data) for e in exc.errors())) from exc


def _describe(error: Mapping[str, Any], data: Any) -> str:
    """One validation error as "rule 'Name' (rules[2]) field op: message"."""
    loc = tuple(error["loc"])
    where = ".".join(str(part) for part in loc) or "(top level)"
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        raw = data["rules"][loc[1]]
        name = raw.get("name", "?") if isinstance(raw, dict) else "?"
        field_name = ".".join(str(part) for part in loc[2:]) or "(rule)"
        where = f"rule {name!r} (rules[{loc[1]}]) field {field_name}"
    return f"  {where}: {error['msg']}"


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: FNV-1a 64 over the sorted names and values."""
    digest = _FNV_OFFSET
    for name in sorted(labels):
        for byte in name.encode() + b"\xff" + labels[name].encode() + b"\xff":
            digest = ((digest ^ byte) * _FNV_PRIME) & _MASK
    return f"{digest:016x}"


@dataclass(frozen=True)
class Alert:
    """One alert as receivers see it; `ends_at` is None while it fires."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    ends_at: float | None
    generator_url: str

    @property
    def status(self) -> Literal["firing", "resolved"]:
        return "firing" if self.ends_at is None else "resolved"


@dataclass(frozen=True)
class Transition:
    """A series changed state at `at` (seconds since the epoch) with the signal at `value`."""

    rule: str
    severity: str
    labels: Mapping[str, str]
    previous: State
    state: State
    value: float
    at: float


@dataclass
class _Series:
    rule: AlertRule
    labels: dict[str, str]
    state: State = "inactive"
    active_since: float = 0.0         # when the threshold was first crossed: startsAt
    clear_since: float | None = None  # firing, and on the clear side since then
    value: float = math.nan
    ended_at: float | None = None
    delivered_at: dict[int, float] = field(default_factory=dict)  # sink -> last firing send
    owed_resolution: set[int] = field(default_factory=set)        # sinks yet to hear it ended


class AlertSink(Protocol):
    """Where alerts go. `resend_s`: how often a firing alert is sent again (None: never)."""

    name: str
    resend_s: float | None

    def send(self, alerts: Sequence[Alert], now: float) -> None:
        """Deliver the alerts or raise DeliveryError."""

    def close(self) -> None:
        """Release connections."""


class AlertEngine:
    """Evaluates the rules against the signals and delivers what changed to the sinks.

    Call it from one loop (it is not thread-safe); delivery happens inside `evaluate` and waits
    at most each sink's `timeout_s` per POST.
    """

    def __init__(self, rules: AlertRules, *, sinks: Sequence[AlertSink] = (),
                 generator_url: str = "", model: str | None = None) -> None:
        """`model`: the entry point this engine's signals are of; its alerts carry it as the
        `model` label and as `service` (default: the rule file's service, no model label)."""
        self.rules = rules
        self.model = model
        self._service = model or rules.service
        self._extra = {"model": model} if model else {}
        self._sinks = tuple(sinks)
        self._generator_url = generator_url
        self._series: dict[tuple[int, tuple[tuple[str, str], ...]], _Series] = {}

    def evaluate(self, now: float, signals: Signals) -> list[Transition]:
        """Advance every series to `now` and deliver; returns the state changes, none repeated.

        A signal (or a label of it) that is absent, None or NaN leaves its series as they were.
        """
        self._check(signals)
        transitions = []
        for index, rule in enumerate(self.rules.rules):
            for labels, value in _values(rule, signals.get(rule.signal)):
                key = (index, tuple(sorted(labels.items())))
                series = self._series.get(key)
                if series is None:
                    series = self._series[key] = _Series(rule, self._labels(rule, labels))
                previous = series.state
                self._step(series, value, now)
                if series.state != previous:
                    transitions.append(Transition(rule.name, rule.severity, series.labels,
                                                  previous, series.state, value, now))
        self._deliver(now)
        return transitions

    def firing(self) -> list[Alert]:
        """The alerts firing now."""
        return [self._alert(s) for s in self._series.values() if s.state == "firing"]

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()

    def __enter__(self) -> AlertEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check(self, signals: Signals) -> None:
        for rule in self.rules.rules:
            value = signals.get(rule.signal)
            if value is None:
                continue
            if rule.label and not isinstance(value, Mapping):
                raise SignalError(f"signal {rule.signal} needs one value per {rule.label}, "
                                  f"got {value!r}")
            if not rule.label and isinstance(value, Mapping):
                raise SignalError(f"signal {rule.signal} is one number, got {dict(value)!r}")

    def _labels(self, rule: AlertRule, labels: Mapping[str, str]) -> dict[str, str]:
        return {**labels, **self._extra, "alertname": rule.name, "severity": rule.severity,
                "service": self._service}

    def _step(self, series: _Series, value: float, now: float) -> None:
        rule = series.rule
        series.value = value
        if series.state in ("inactive", "resolved") and rule.breached(value):
            series.state, series.active_since = "pending", now
        if series.state == "pending":
            if not rule.breached(value):
                series.state = "inactive"
            elif now - series.active_since >= rule.for_s:
                series.state, series.clear_since, series.ended_at = "firing", None, None
                series.delivered_at, series.owed_resolution = {}, set()
                logger.warning("alert %s firing %s: %s", rule.name, _shown(series.labels),
                               self._annotations(series).get("summary", f"value {value:g}"))
        elif series.state == "firing":
            if not rule.cleared(value):
                series.clear_since = None
                return
            if series.clear_since is None:
                series.clear_since = now
            if now - series.clear_since >= rule.resolve_after_s:
                series.state, series.ended_at = "resolved", now
                series.owed_resolution = set(range(len(self._sinks)))
                logger.info("alert %s resolved %s: value %g", rule.name, _shown(series.labels),
                            value)

    def _annotations(self, series: _Series) -> dict[str, str]:
        signal_labels = {k: v for k, v in series.labels.items() if k == series.rule.label}
        return series.rule.annotations(series.value, {"model": self._service, **signal_labels},
                                       self._service)

    def _alert(self, series: _Series) -> Alert:
        return Alert(dict(series.labels), self._annotations(series), series.active_since,
                     series.ended_at, self._generator_url)

    def _deliver(self, now: float) -> None:
        for index, sink in enumerate(self._sinks):
            due = [s for s in self._series.values() if _due(s, index, sink.resend_s, now)]
            if not due:
                continue
            try:
                sink.send([self._alert(s) for s in due], now)
            except DeliveryError as exc:
                logger.warning("could not deliver %d alert(s) to %s, retrying at the next "
                               "evaluation: %s", len(due), sink.name, exc)
                continue
            for series in due:
                if series.state == "firing":
                    series.delivered_at[index] = now
                else:
                    series.owed_resolution.discard(index)


def _values(rule: AlertRule, signal: float | Mapping[str, float] | None
            ) -> list[tuple[dict[str, str], float]]:
    """The (labels, value) series of one signal, those without a number left out."""
    if signal is None:
        return []
    pairs = ([({}, signal)] if not isinstance(signal, Mapping)
             else [({rule.label or "label": str(k)}, v) for k, v in signal.items()])
    return [(labels, float(v)) for labels, v in pairs if v is not None and not math.isnan(v)]


def _due(series: _Series, sink: int, resend_s: float | None, now: float) -> bool:
    if series.state == "resolved":
        return sink in series.owed_resolution
    if series.state != "firing":
        return False
    last = series.delivered_at.get(sink)
    return last is None or (resend_s is not None and now - last >= resend_s)


def _shown(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
