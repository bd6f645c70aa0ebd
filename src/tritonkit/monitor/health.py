"""Health of the served model, judged by real inferences, and healing of a dead python stub.

Workaround (Triton 2.51, docs/platform.md): a python stub that dies is not restarted, and
`/v2/health/ready` and `/v2/models/<name>/ready` keep answering 200 while every request that
reaches the dead instance fails with 500 "Stub process '<model>_0_1' is not healthy". Only a
real inference tells, and reloading the step through the repository API brings it back. So each
check sends a few real requests (held-out test rows, marked as probes so that the drift counts
leave them out) through the ensemble, and on a 5xx while Triton is up reloads the failing steps
(those named in the error, else every step of the ensemble). Every entry point Triton serves
is checked so, each with its own probes (`tritonkit.monitor.probes`)::

    monitor = HealthMonitor(TritonProbe("http://127.0.0.1:8000", admin_key=key),
                            {"churn": tabular_bodies(customers, contract("churn"), packed=False)})
    report = monitor.check()          # report.ok, report.checks, report.healed
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from tritonkit.client.repository import ReloadError, TritonRepository
from tritonkit.monitor.probes import ProbeBodies

logger = logging.getLogger(__name__)

#: How Triton names a model instance in its errors: '<model>_<group>_<index>'.
_INSTANCE = re.compile(r"'([A-Za-z0-9_.-]+?)_\d+_\d+'")


@dataclasses.dataclass(frozen=True)
class Check:
    """One health check's outcome; `ms` is how long it took, where that matters."""

    name: str
    ok: bool
    detail: str
    ms: float | None = None


@dataclasses.dataclass(frozen=True)
class HealthReport:
    at: float
    checks: tuple[Check, ...]
    healed: tuple[str, ...] = ()  # models this check reloaded
    unavailable: bool = False     # an entry point did not answer (even if healed since)
    degraded: tuple[str, ...] = ()  # what works, but not as configured (a fallback)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "failing",
            "checked_at": self.at,
            "failing": [c.name for c in self.checks if not c.ok],
            "checks": {c.name: {"ok": c.ok, "detail": c.detail,
                                **({"ms": round(c.ms, 2)} if c.ms is not None else {})}
                       for c in self.checks},
            "healed": list(self.healed),
            "degraded": list(self.degraded),
        }


@dataclasses.dataclass(frozen=True)
class HealthEvent:
    """Something the health monitor saw or did, with when (seconds since the epoch)."""

    at: float
    kind: str  # "unavailable", "reloaded", "reload_failed", "recovered"
    detail: str


HealError = ReloadError  # what a failed heal raises (tritonkit.client.repository)


class TritonProbe:
    """The HTTP calls a health check makes to Triton, each with a timeout."""

    def __init__(self, url: str, *, admin_key: str | None = None, timeout_s: float = 5.0,
                 load_timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s))
        #: configs and reloads: restricted APIs where Triton runs with an admin key
        self.repository = TritonRepository(url, admin_key=admin_key, timeout_s=timeout_s,
                                           load_timeout_s=load_timeout_s)

    def ready(self) -> tuple[bool, str]:
        try:
            response = self._client.get(f"{self.url}/v2/health/ready")
        except httpx.HTTPError as exc:
            return False, f"cannot reach Triton at {self.url}: {exc!r}"
        return response.status_code == 200, f"/v2/health/ready answered {response.status_code}"

    def steps(self, ensemble: str) -> tuple[str, ...]:
        """The composing models of `ensemble`, from its config's ensemble steps."""
        config = self.repository.config(ensemble)
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        return tuple(dict.fromkeys(step["model_name"] for step in steps))

    def infer(self, model: str, body: Mapping[str, Any]) -> tuple[int, str, float]:
        """(HTTP status, error message or "", milliseconds); status 0 when unreachable."""
        start = time.perf_counter()
        try:
            response = self._client.post(f"{self.url}/v2/models/{model}/infer", json=body)
        except httpx.HTTPError as exc:
            return 0, f"no answer from {self.url}: {exc!r}", (time.perf_counter() - start) * 1e3
        ms = (time.perf_counter() - start) * 1e3
        if response.status_code == 200:
            return 200, "", ms
        try:
            message = str(response.json().get("error", response.text))
        except ValueError:
            message = response.text
        return response.status_code, " ".join(message.split())[:300], ms

    def reload(self, model: str) -> None:
        """Reload `model` with fresh instances (`TritonRepository.reload`, the override that
        really reloads on 2.51); raise HealError when Triton refuses."""
        self.repository.reload(model)

    def close(self) -> None:
        self._client.close()
        self.repository.close()


class HealthMonitor:
    """Checks every entry point with real inferences and reloads steps that stopped answering.

    Args:
        probe: the HTTP calls to Triton.
        targets: entry point -> its probes' requests (`tritonkit.monitor.probes`); or a
            function that finds them (it may raise `ReloadError` while Triton cannot say: it is
            tried again at most every `discover_every_s`).
        probes: requests per entry point and check; a model has several instances and only one
            may be dead.
        latency_budget_ms: the slowest probe must answer within this.
        heal: reload failing steps (False: only report them).
        heal_backoff_s: wait before reloading the same model again if the check still fails;
            doubles at each failed heal, up to 10 minutes.
    """

    def __init__(self, probe: TritonProbe,
                 targets: Mapping[str, ProbeBodies] | Callable[[], Mapping[str, ProbeBodies]],
                 *, probes: int = 4, latency_budget_ms: float = 1000.0, heal: bool = True,
                 heal_backoff_s: float = 10.0, discover_every_s: float = 30.0) -> None:
        self.probe = probe
        self._discover = targets if callable(targets) else None
        self._targets: dict[str, ProbeBodies] | None = (
            None if callable(targets) else dict(targets))
        self._discover_error = "not tried yet"
        self._discover_every_s = discover_every_s
        self._discovered_at = -math.inf
        self._next: collections.Counter[str] = collections.Counter()
        self.probes = probes
        self.latency_budget_ms = latency_budget_ms
        self.heal = heal
        self._backoff_s = heal_backoff_s
        self._retry_at: dict[str, tuple[float, float]] = {}  # model -> (not before, backoff)
        self._steps: dict[str, tuple[str, ...]] = {}
        self._steps_tried_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._unavailable: dict[str, bool] = {}  # since the last take_unavailable()
        self.latest: HealthReport | None = None
        self.events: collections.deque[HealthEvent] = collections.deque(maxlen=100)
        self.on_heal: list[Callable[[str], None]] = []  # told of every model reloaded
        #: told of every probe: (entry point, answered with 200)
        self.on_probe: list[Callable[[str, bool], None]] = []

    @property
    def targets(self) -> dict[str, ProbeBodies]:
        """The entry points watched (empty while they cannot be found)."""
        if self._targets is None and self._discover is not None and (
                time.monotonic() - self._discovered_at >= self._discover_every_s):
            self._discovered_at = time.monotonic()
            try:
                found = dict(self._discover())
            except (ReloadError, ValueError, KeyError, OSError) as exc:
                self._discover_error = f"cannot list the entry points Triton serves: {exc}"
                logger.info("%s", self._discover_error)
            else:
                if found:
                    self._targets = found
                    logger.info("watching %s", ", ".join(found))
                else:
                    self._discover_error = "Triton serves no entry point the spec knows"
        return self._targets or {}

    def steps(self, entry: str) -> tuple[str, ...]:
        """The step models of the ensemble `entry`, read once from Triton (empty while it
        cannot say, and for a model served as it is)."""
        tried = self._steps_tried_at.get(entry, -math.inf)
        # At most one try a minute while Triton cannot say: each costs up to a timeout.
        if entry not in self._steps and time.monotonic() - tried >= 60.0:
            self._steps_tried_at[entry] = time.monotonic()
            try:
                self._steps[entry] = self.probe.steps(entry)
            except (ReloadError, ValueError, KeyError) as exc:
                logger.info("cannot read the steps of %s yet: %r", entry, exc)
        return self._steps.get(entry, ())

    def check(self) -> HealthReport:
        """Run every check now (and heal if needed); the report is also kept in `latest`."""
        now = time.time()
        ready, detail = self.probe.ready()
        checks = [Check("triton_ready", ready, detail)]
        healed: list[str] = []
        unavailable: dict[str, bool] = {}
        targets = self.targets if ready else {}
        if ready and not targets:
            checks.append(Check("entry_points", False, self._discover_error))
        for entry in targets if ready else (self._targets or {}):
            if not ready:
                checks.append(Check(f"inference_{entry}", False,
                                    "not tried: Triton is not ready"))
                unavailable[entry] = True
                continue
            entry_checks, entry_healed, failed = self._check_entry(now, entry)
            checks += entry_checks
            healed += entry_healed
            unavailable[entry] = failed
        report = HealthReport(at=now, checks=tuple(checks), healed=tuple(healed),
                              unavailable=any(unavailable.values()) or not ready)
        with self._lock:
            for entry, failed in unavailable.items():
                self._unavailable[entry] = failed or self._unavailable.get(entry, False)
            self.latest = report
        return report

    def _check_entry(self, now: float, entry: str) -> tuple[list[Check], list[str], bool]:
        failures, slowest = self._probe_all(entry)
        unavailable = bool(failures)
        healed: tuple[str, ...] = ()
        if failures:
            self._event(now, "unavailable", f"{entry}: {failures[0][1]}")
        if failures and self.heal and any(status >= 500 for status, _ in failures):
            healed = self._heal(entry, failures)
            if healed:
                failures, slowest = self._probe_all(entry)
                if not failures:
                    self._event(time.time(), "recovered", f"{entry}, after reloading "
                                f"{', '.join(healed)}")
        if not failures:
            for model in (*self.steps(entry), entry):
                self._retry_at.pop(model, None)
        checks = [Check(
            f"inference_{entry}", not failures,
            failures[0][1] if failures else
            (f"{self.probes} real inferences answered"
             + (f" after reloading {', '.join(healed)}" if healed else "")), slowest)]
        if not failures:
            checks.append(Check(
                f"latency_{entry}", slowest <= self.latency_budget_ms,
                f"slowest probe {slowest:.1f} ms, budget {self.latency_budget_ms:g} ms",
                slowest))
        return checks, list(healed), unavailable

    def take_unavailable(self) -> dict[str, float]:
        """Per entry point: 1.0 if it failed to answer at any check since the last call, 0.0 if
        every check since passed; entry points no check reached are left out (the
        `model_unavailable` alert signal)."""
        with self._lock:
            values, self._unavailable = self._unavailable, {}
        return {entry: float(failed) for entry, failed in values.items()}

    def _probe_all(self, entry: str) -> tuple[list[tuple[int, str]], float]:
        """Send `probes` requests to `entry`; ([(status, message)] of the failures, slowest)."""
        failures = []
        slowest = 0.0
        bodies = self.targets[entry]
        for _ in range(self.probes):
            body = bodies(self._next[entry])
            self._next[entry] += 1
            status, message, ms = self.probe.infer(entry, body)
            slowest = max(slowest, ms)
            for callback in self.on_probe:
                callback(entry, status == 200)
            if status != 200:
                failures.append((status, f"HTTP {status}: {message}"))
        return failures, slowest

    def _heal(self, entry: str, failures: Sequence[tuple[int, str]]) -> tuple[str, ...]:
        steps = self.steps(entry) or (entry,)
        named = {m for _, message in failures for m in _INSTANCE.findall(message)}
        targets = [s for s in steps if s in named] or list(steps)
        now = time.time()
        healed = []
        for model in targets:
            not_before, backoff = self._retry_at.get(model, (0.0, self._backoff_s))
            if now < not_before:
                continue
            self._retry_at[model] = (now + backoff, min(backoff * 2, 600.0))
            try:
                self.probe.reload(model)
            except HealError as exc:
                logger.error("%s", exc)
                self._event(time.time(), "reload_failed", str(exc))
                continue
            logger.warning("reloaded %s: a real inference through %s failed", model, entry)
            self._event(time.time(), "reloaded", model)
            healed.append(model)
            for callback in self.on_heal:
                callback(model)
        return tuple(healed)

    def _event(self, at: float, kind: str, detail: str) -> None:
        self.events.append(HealthEvent(at, kind, detail))
