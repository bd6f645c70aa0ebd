"""The alert engine's state machine on an explicit clock (for_s, hysteresis, de-duplication,
resolution, missing signals), what it hands its sinks, and the rule file's checks."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonkit.monitor.alerts import (
    DEFAULT_RULES,
    SIGNALS,
    Alert,
    AlertConfigError,
    AlertEngine,
    AlertRules,
    DeliveryError,
    SignalError,
    fingerprint,
    load_alert_rules,
)


def _rule(**overrides: Any) -> dict[str, Any]:
    rule = {"name": "ErrorRateHigh", "signal": "error_rate", "op": ">", "threshold": 0.05,
            "clear_threshold": 0.03, "for_s": 60, "resolve_after_s": 120, "severity": "page",
            "summary": "error rate {value:.0%}", "description": "above {threshold:.0%}"}
    return {**rule, **overrides}


def _engine(*rules: dict[str, Any], sinks: Sequence[Any] = ()) -> AlertEngine:
    return AlertEngine(AlertRules.model_validate({"rules": list(rules or [_rule()])}),
                       sinks=sinks, generator_url="http://sidecar/alerts")


def _states(engine: AlertEngine, timeline: list[tuple[float, Any]], signal: str = "error_rate"
            ) -> list[list[str]]:
    """The transitions (as 'previous->state') of each evaluation of a timeline of values."""
    return [[f"{t.previous}->{t.state}" for t in engine.evaluate(now, {signal: value})]
            for now, value in timeline]


def test_engine_fires_only_after_for_s_when_the_threshold_keeps_being_crossed() -> None:
    engine = _engine()
    assert _states(engine, [(0, 0.07), (30, 0.08), (59, 0.07), (60, 0.07)]) == [
        ["inactive->pending"], [], [], ["pending->firing"]]
    [alert] = engine.firing()
    assert alert.starts_at == 0  # since the threshold was first crossed, as Prometheus does


def test_engine_fires_at_once_when_for_s_is_zero() -> None:
    engine = _engine(_rule(for_s=0))
    assert _states(engine, [(0, 0.07)]) == [["inactive->firing"]]


def test_engine_goes_back_to_inactive_when_the_value_drops_before_for_s() -> None:
    engine = _engine()
    assert _states(engine, [(0, 0.07), (30, 0.05), (90, 0.07), (149, 0.07), (150, 0.07)]) == [
        ["inactive->pending"], ["pending->inactive"], ["inactive->pending"], [],
        ["pending->firing"]]


def test_engine_keeps_firing_when_the_value_falls_between_clear_threshold_and_threshold() -> None:
    engine = _engine(_rule(for_s=0, resolve_after_s=0))
    assert _states(engine, [(0, 0.07), (10, 0.04), (20, 0.031), (30, 0.03), (40, 0.029)]) == [
        ["inactive->firing"], [], [], [], ["firing->resolved"]]


def test_engine_resolves_only_when_the_value_stays_clear_for_resolve_after_s() -> None:
    engine = _engine(_rule(for_s=0))
    # Clear at 100, back above clear_threshold at 200 (the clock restarts), clear from 300.
    timeline = [(0, 0.07), (100, 0.01), (200, 0.04), (300, 0.01), (419, 0.01), (420, 0.0)]
    assert _states(engine, timeline) == [["inactive->firing"], [], [], [], [],
                                         ["firing->resolved"]]
    assert engine.firing() == []


def test_engine_announces_a_firing_alert_once_when_it_keeps_firing() -> None:
    engine = _engine(_rule(for_s=0))
    transitions = [engine.evaluate(float(now), {"error_rate": 0.2}) for now in range(0, 600, 15)]
    assert [len(t) for t in transitions] == [1] + [0] * 39
    assert len(engine.firing()) == 1


@pytest.mark.parametrize("missing", [{}, {"error_rate": None}, {"error_rate": math.nan}])
def test_engine_keeps_state_when_the_signal_is_missing(missing: dict[str, Any]) -> None:
    engine = _engine()
    engine.evaluate(0, {"error_rate": 0.07})
    assert engine.evaluate(1000, missing) == []  # pending stays pending
    assert _states(engine, [(1001, 0.07)]) == [["pending->firing"]]
    assert engine.evaluate(5000, missing) == []  # firing stays firing, however long
    assert len(engine.firing()) == 1
    assert _states(engine, [(5001, 0.0), (5121, 0.0)]) == [[], ["firing->resolved"]]


def test_engine_tracks_each_feature_apart_when_a_signal_has_labels() -> None:
    engine = _engine(_rule(name="FeatureDrift", signal="feature_drift", threshold=0.5,
                           clear_threshold=0.5, for_s=0, severity="warning",
                           summary="{feature} drifted (level {value:.0f})"))
    first = engine.evaluate(0, {"feature_drift": {"tenure": 2.0, "contract": 0.0}})
    assert [(t.labels["feature"], t.state) for t in first] == [("tenure", "firing")]
    second = engine.evaluate(60, {"feature_drift": {"contract": 1.0}})  # tenure: no rows yet
    assert [(t.labels["feature"], t.state) for t in second] == [("contract", "firing")]
    alerts = {a.labels["feature"]: a for a in engine.firing()}
    assert set(alerts) == {"tenure", "contract"}
    assert dict(alerts["tenure"].labels) == {"alertname": "FeatureDrift", "severity": "warning",
                                             "service": "tritonkit", "feature": "tenure"}
    assert alerts["tenure"].annotations["summary"] == "tenure drifted (level 2)"


def test_engine_fires_on_a_fall_and_clears_above_clear_threshold_when_op_is_less_than() -> None:
    engine = _engine(_rule(name="TrafficLow", signal="requests_per_minute", op="<",
                           threshold=10, clear_threshold=15, for_s=0, resolve_after_s=0))
    assert _states(engine, [(0, 12), (10, 8), (20, 12), (30, 15), (40, 16)],
                   "requests_per_minute") == [[], ["inactive->firing"], [], [],
                                              ["firing->resolved"]]


def test_engine_fires_again_when_a_resolved_alert_crosses_the_threshold_again() -> None:
    engine = _engine(_rule(for_s=0, resolve_after_s=0))
    assert _states(engine, [(0, 0.07), (10, 0.0), (20, 0.07)]) == [
        ["inactive->firing"], ["firing->resolved"], ["resolved->firing"]]
    assert engine.firing()[0].starts_at == 20


def test_engine_raises_signal_error_when_a_labelled_signal_comes_as_one_number() -> None:
    engine = _engine(_rule(name="FeatureDrift", signal="feature_drift", threshold=0.5,
                           clear_threshold=0.5, summary="{feature}"))
    with pytest.raises(SignalError, match="feature_drift needs one value per feature"):
        engine.evaluate(0, {"feature_drift": 2.0})
    with pytest.raises(SignalError, match="error_rate is one number"):
        _engine().evaluate(0, {"error_rate": {"x": 1.0}})


class RecordingSink:
    """A sink that keeps what it was handed; it refuses while `refuse` is set."""

    def __init__(self, resend_s: float | None) -> None:
        self.name, self.resend_s, self.refuse = "recording", resend_s, False
        self.sent: list[tuple[float, list[Alert]]] = []

    def send(self, alerts: Sequence[Alert], now: float) -> None:
        if self.refuse:
            raise DeliveryError("receiver down")
        self.sent.append((now, list(alerts)))

    def close(self) -> None:
        pass


def test_engine_sends_a_firing_alert_once_then_every_resend_s_and_its_resolution_once() -> None:
    repeating, once = RecordingSink(resend_s=60), RecordingSink(resend_s=None)
    engine = _engine(_rule(for_s=0, resolve_after_s=0), sinks=[repeating, once])
    for now in range(0, 150, 10):
        engine.evaluate(float(now), {"error_rate": 0.07})
    engine.evaluate(150.0, {"error_rate": 0.0})
    engine.evaluate(160.0, {"error_rate": 0.0})
    assert [(now, [a.status for a in alerts]) for now, alerts in repeating.sent] == [
        (0, ["firing"]), (60, ["firing"]), (120, ["firing"]), (150, ["resolved"])]
    assert [(now, [a.status for a in alerts]) for now, alerts in once.sent] == [
        (0, ["firing"]), (150, ["resolved"])]
    resolved = once.sent[-1][1][0]
    assert (resolved.starts_at, resolved.ends_at) == (0, 150)
    assert resolved.generator_url == "http://sidecar/alerts"


def test_engine_logs_and_retries_at_the_next_evaluation_when_a_delivery_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RecordingSink(resend_s=None)
    engine = _engine(_rule(for_s=0, resolve_after_s=0), sinks=[sink])
    sink.refuse = True
    with caplog.at_level(logging.WARNING, logger="tritonkit.monitor.alerts"):
        assert _states(engine, [(0, 0.07)]) == [["inactive->firing"]]
    assert "could not deliver 1 alert(s) to recording" in caplog.text
    assert "alert ErrorRateHigh firing" in caplog.text
    sink.refuse = False
    engine.evaluate(10, {"error_rate": 0.07})
    engine.evaluate(20, {"error_rate": 0.07})
    assert [now for now, _ in sink.sent] == [10]


def test_fingerprint_is_alertmanagers_fnv1a_when_labels_come_in_any_order() -> None:
    assert fingerprint({}) == "cbf29ce484222325"  # FNV-1a 64's offset basis: no labels
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "12"}) != fingerprint({"a1": "2"})  # names and values kept apart


def test_load_alert_rules_reads_every_rule_the_sidecar_needs_when_given_the_shipped_file(
) -> None:
    rules = load_alert_rules()
    assert rules.service == "tritonkit"
    assert {r.signal for r in rules.rules} == set(SIGNALS)
    by_signal = {(r.signal, r.op, r.threshold) for r in rules.rules}
    assert {("error_rate", ">", 0.05), ("latency_p95_ms", ">", 200),
            ("requests_per_minute", "<", 10), ("queue_time_share", ">", 0.5)} <= by_signal
    engine = AlertEngine(rules)
    engine.evaluate(0, {"unseen_category_share": {"contract": 0.03}})
    engine.evaluate(600, {"unseen_category_share": {"contract": 0.03}})
    summaries = {a.labels["severity"]: a.annotations["summary"] for a in engine.firing()}
    assert summaries == {"warning": "3.0% of contract values are categories unseen in training",
                         "critical": "3.0% of contract values are categories unseen in training"}


@pytest.mark.parametrize(("change", "message"), [
    ({"clear_threshold": 0.07},
     r"rule 'ErrorRateHigh' \(rules\[0\]\) field \(rule\).*clear_threshold \(0.07\) must be at "
     r"or below threshold"),
    ({"signal": "error_ratio"}, r"rule 'ErrorRateHigh' .* field signal.*unknown signal"),
    ({"for": 60}, r"rule 'ErrorRateHigh' .* field for: Extra inputs are not permitted"),
    ({"summary": "{feature} is off"}, r"summary uses \['feature'\]"),
    ({"description": "{value:%Y}"}, r"description cannot be formatted"),
    ({"for_s": -1}, r"field for_s: Input should be greater than or equal to 0"),
    ({"severity": "info"}, r"field severity: Input should be 'warning', 'critical'"),
])
def test_load_alert_rules_raises_naming_the_rule_and_field_when_a_rule_is_wrong(
    tmp_path: Path, change: dict[str, Any], message: str,
) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump({"rules": [_rule(**change)]}))
    with pytest.raises(AlertConfigError, match=message):
        load_alert_rules(path)


def test_load_alert_rules_raises_when_a_rule_and_severity_appear_twice(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump({"rules": [_rule(), _rule(threshold=0.1)]}))
    with pytest.raises(AlertConfigError, match="'ErrorRateHigh' with severity 'page' is defined"):
        load_alert_rules(path)
    assert load_alert_rules(DEFAULT_RULES).rules  # the shipped file passes the same check


def test_load_alert_rules_raises_when_the_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(AlertConfigError, match="not found"):
        load_alert_rules(tmp_path / "nope.yaml")
