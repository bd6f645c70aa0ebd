"""Rollouts of a new model version through the gateway's admin API: canary, blue-green and
rolling, each gated and rolled back on its own.

- canary: load the version beside the stable one (ready and warm on every replica), route
  5 % -> 25 % of the customers to it (sticky per customer), soak each step and gate it against
  the stable version over the same window (`gates.judge`: errors, p95, drift), then 100 % and
  unload the previous version. A failed gate sets the canary's weight to 0 at once, unloads
  it, raises an alert and ends with `rolled_back`; a window that stays too small past
  `max_wait_s` is `inconclusive` and rolled back the same way (never a pass).
- blue-green: load the version beside the current one, switch every customer to it at once,
  soak and gate it against the previous version's window before the switch; the previous
  version stays loaded, so a switch back is one more blue-green run (instant).
- rolling: replica by replica in place, each drained first (with several), loaded with the new
  version alone, warmed and put back, gated against the window before the first one; a failed
  gate puts the previous version back on the replicas done so far.

The gateway routes, counts and loads (tritonkit.gateway.admin); this module decides::

    admin = GatewayAdmin("http://127.0.0.1:8080", admin_key)
    report = Rollout(admin, RolloutPlan(version="2", strategy="canary")).run()
    report.outcome, [step.observed_share for step in report.steps]
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import httpx

from tritonkit.errors import TritonKitError
from tritonkit.rollout.gates import GateThresholds, Verdict, Window, judge

logger = logging.getLogger(__name__)

Strategy = Literal["canary", "blue-green", "rolling"]
Outcome = Literal["promoted", "switched", "rolled_back", "inconclusive"]
#: The key of the calls that name no version in the gateway's per-version counts.
UNVERSIONED = "latest"


class RolloutFailed(TritonKitError):
    """The rollout could not run (the gateway refused a step, a version did not load)."""


class GatewayAdmin:
    """The gateway's /admin calls a rollout makes, with an admin key."""

    def __init__(self, url: str, admin_key: str, *, timeout_s: float = 30.0,
                 verify: bool | str = True) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout_s, verify=verify,
                                    headers={"X-API-Key": admin_key})

    def _call(self, method: str, path: str, what: str, timeout_s: float | None = None,
              **options: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, f"{self.url}{path}",
                                             timeout=timeout_s or self._client.timeout,
                                             **options)
        except httpx.HTTPError as exc:
            raise RolloutFailed(f"{what}: no answer from the gateway at {self.url}: "
                                f"{exc!r}") from exc
        if response.status_code != 200:
            raise RolloutFailed(f"{what}: the gateway answered {response.status_code}: "
                                f"{' '.join(response.text.split())[:300]}")
        body: dict[str, Any] = response.json()
        return body

    def state(self) -> dict[str, Any]:
        """Weights, stable version, per-version counts, replicas, versions loaded."""
        return self._call("GET", "/admin/rollout", "reading the rollout's state")

    def set_weights(self, weights: Mapping[str, float], stable: str | None) -> None:
        self._call("PUT", "/admin/rollout", f"setting the weights {dict(weights)}",
                   json={"weights": dict(weights), "stable": stable})

    def load(self, version: str, *, replica: int | None = None, exclusive: bool = False,
             timeout_s: float = 300.0) -> dict[str, Any]:
        params: dict[str, Any] = {"exclusive": str(exclusive).lower(), "timeout_s": timeout_s}
        if replica is not None:
            params["replica"] = replica
        return self._call("POST", f"/admin/versions/{version}/load",
                          f"loading version {version}", timeout_s=timeout_s + 60,
                          params=params)

    def unload(self, version: str, *, replica: int | None = None) -> None:
        params = {} if replica is None else {"replica": replica}
        self._call("POST", f"/admin/versions/{version}/unload", f"unloading version {version}",
                   timeout_s=180, params=params)

    def rollback(self, version: str, reason: str) -> None:
        self._call("POST", "/admin/rollout/rollback", f"rolling back version {version}",
                   json={"version": version, "reason": reason})

    def drain(self, replica: int) -> None:
        self._call("POST", f"/admin/replicas/{replica}/drain", f"draining replica {replica}",
                   timeout_s=90, params={"timeout_s": 60})

    def enable(self, replica: int) -> None:
        self._call("POST", f"/admin/replicas/{replica}/enable", f"enabling replica {replica}")

    def close(self) -> None:
        self._client.close()


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutPlan:
    """What to roll out and how."""

    version: str
    strategy: Strategy = "canary"
    #: canary weights in percent, the last one 100
    steps: tuple[float, ...] = (5.0, 25.0, 100.0)
    #: how long each step runs before its gate may pass (a failing gate fails at once)
    soak_s: float = 60.0
    #: how long a step may wait for enough customers before the rollout is inconclusive
    max_wait_s: float = 600.0
    poll_s: float = 1.0
    thresholds: GateThresholds = dataclasses.field(default_factory=GateThresholds)
    #: leave the previous version loaded after a canary's promotion
    keep_previous: bool = False

    def __post_init__(self) -> None:
        if not self.steps or self.steps[-1] != 100 or any(
                not a < b for a, b in zip((0.0, *self.steps), self.steps, strict=False)):
            raise ValueError(f"canary steps rise from above 0 to 100, not {self.steps}")


@dataclasses.dataclass
class StepReport:
    """One step: the weight asked, the share observed, the gate's verdict."""

    weight: float
    seconds: float
    #: wall-clock start and end of the step's window (seconds since the epoch)
    started_at: float
    ended_at: float
    canary_rows: int
    stable_rows: int
    observed_share: float | None
    status: str
    reasons: list[str]
    measured: dict[str, Any]


@dataclasses.dataclass
class RolloutReport:
    version: str
    strategy: Strategy
    previous: str | None
    outcome: Outcome | None = None
    steps: list[StepReport] = dataclasses.field(default_factory=list)
    #: from the failing gate's verdict to the canary's weight at 0
    rollback_s: float | None = None
    message: str = ""

    @property
    def exit_code(self) -> int:
        return {"promoted": 0, "switched": 0, "rolled_back": 1, "inconclusive": 3}.get(
            self.outcome or "", 4)


class Rollout:
    """Runs one plan against one gateway; `say` reports progress, `alert` a rollback."""

    def __init__(self, admin: GatewayAdmin, plan: RolloutPlan, *,
                 say: Callable[[str], None] = logger.info,
                 alert: Callable[[RolloutReport], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.admin, self.plan, self.say, self.alert = admin, plan, say, alert
        self.clock, self.sleep = clock, sleep

    def run(self) -> RolloutReport:
        state = self.admin.state()
        version = self.plan.version
        live = {v for v, w in state["weights"].items() if w > 0}
        if version in live and len(live) == 1:
            raise RolloutFailed(f"version {version} already takes every customer")
        if len(live) > 1:
            raise RolloutFailed(f"a rollout is under way (weights {state['weights']}): let it "
                                "finish, or roll it back (POST /admin/rollout/rollback)")
        runner = {"canary": self._canary, "blue-green": self._blue_green,
                  "rolling": self._rolling}[self.plan.strategy]
        report = runner(state)
        self.say(f"rollout of version {version} ({self.plan.strategy}): {report.outcome}"
                 + (f": {report.message}" if report.message else ""))
        return report

    # -- strategies ---------------------------------------------------------------------------
    def _load_beside(self, state: dict[str, Any]) -> str:
        """Load the plan's version beside the current one on every replica; returns the
        current (stable) version, which the gateway pins first if no weights were set."""
        version = self.plan.version
        self.say(f"loading version {version} beside the current one on every replica")
        loaded = self.admin.load(version)
        stable: str | None = loaded["weights"]["stable"] or state["stable"]
        if stable is None or stable == version:
            raise RolloutFailed(f"no stable version to compare version {version} with "
                                f"(weights {loaded['weights']})")
        return stable

    def _canary(self, state: dict[str, Any]) -> RolloutReport:
        version = self.plan.version
        stable = self._load_beside(state)
        report = RolloutReport(version, "canary", stable)
        for weight in self.plan.steps[:-1]:
            self.admin.set_weights({version: weight, stable: 100 - weight}, stable)
            self.say(f"step {weight:g} %: version {version} takes {weight:g} % of the "
                     f"customers, {stable} the rest")
            step = self._gate(stable, version, weight, self.admin.state()["versions"])
            report.steps.append(step)
            if step.status != "pass":
                return self._roll_back(report, step)
        self.admin.set_weights({version: 100.0}, version)
        before, started = self.admin.state()["versions"], self.clock()
        self.sleep(min(self.plan.soak_s, 5.0))
        report.steps.append(self._observed(stable, version, 100.0, before, started))
        if not self.plan.keep_previous:
            self.admin.unload(stable)
        report.outcome = "promoted"
        return report

    def _blue_green(self, state: dict[str, Any]) -> RolloutReport:
        version = self.plan.version
        previous = self._load_beside(state)
        report = RolloutReport(version, "blue-green", previous)
        baseline = self._baseline(previous, previous)
        self.admin.set_weights({version: 100.0}, version)
        self.say(f"switched every customer to version {version} (version {previous} stays "
                 "loaded for a switch back)")
        step = self._gate_against(baseline, version, 100.0)
        report.steps.append(step)
        if step.status != "pass":
            return self._roll_back(report, step, switch_back=True)
        report.outcome = "switched"
        return report

    def _rolling(self, state: dict[str, Any]) -> RolloutReport:
        version = self.plan.version
        loaded = state.get("loaded") or {}
        previous = state["stable"] or _only_version(loaded)
        report = RolloutReport(version, "rolling", previous)
        replicas = list(range(len(state["replicas"])))
        baseline = self._baseline(state["stable"] or UNVERSIONED, previous)
        # each replica answers with the one version it has: no version named in the calls
        self.admin.set_weights({}, None)
        done: list[int] = []
        for index in replicas:
            several = len(replicas) > 1
            if several:
                self.admin.drain(index)
            self.say(f"replica {index}: loading version {version} in place of {previous}")
            self.admin.load(version, replica=index, exclusive=True)
            if several:
                self.admin.enable(index)
            done.append(index)
            step = self._gate_against(baseline, UNVERSIONED, 100.0 * len(done) / len(replicas))
            report.steps.append(step)
            if step.status != "pass":
                if previous is None:
                    raise RolloutFailed(f"version {version} failed its gate on replica "
                                        f"{index} and no previous version is known to put "
                                        f"back: {'; '.join(step.reasons)}")
                started = self.clock()
                for back in done:
                    if several:
                        self.admin.drain(back)
                    self.admin.load(previous, replica=back, exclusive=True)
                    if several:
                        self.admin.enable(back)
                self.admin.set_weights({previous: 100.0}, previous)
                return self._roll_back(report, step, started=started, unload=False)
        self.admin.set_weights({version: 100.0}, version)
        report.outcome = "promoted"
        return report

    # -- gates --------------------------------------------------------------------------------
    def _soak(self, verdict_of: Callable[[dict[str, Any]], Verdict]
              ) -> tuple[Verdict, float, dict[str, Any]]:
        """Poll the counts until the verdict fails, passes after the soak, or still waits at
        the step's deadline: (verdict, seconds, the last counts)."""
        started = self.clock()
        while True:
            self.sleep(self.plan.poll_s)
            after = self.admin.state()["versions"]
            verdict = verdict_of(after)
            elapsed = self.clock() - started
            if verdict.status == "fail" or (
                    verdict.status == "pass" and elapsed >= self.plan.soak_s) or (
                    verdict.status == "wait" and elapsed >= self.plan.max_wait_s):
                return verdict, elapsed, after

    def _gate(self, stable: str, canary: str, weight: float, before: dict[str, Any]
              ) -> StepReport:
        """Soak one canary step and judge it against the stable version's same window."""
        verdict, elapsed, after = self._soak(lambda after: judge(
            Window.between(before.get(stable), after.get(stable)),
            Window.between(before.get(canary), after.get(canary)), self.plan.thresholds))
        return self._step(weight, elapsed, verdict, before, after, stable, canary)

    def _baseline(self, key: str | None, stable: str | None) -> Window:
        """The stable version's window (counted under `key`) over one soak before anything
        changes."""
        key = key or UNVERSIONED
        before = self.admin.state()["versions"]
        self.say(f"measuring version {stable}'s baseline for {self.plan.soak_s:g} s")
        self.sleep(self.plan.soak_s)
        return Window.between(before.get(key), self.admin.state()["versions"].get(key))

    def _gate_against(self, baseline: Window, key: str, weight: float) -> StepReport:
        """Soak the new version (counted under `key`) and judge it against `baseline`."""
        before = self.admin.state()["versions"]
        verdict, elapsed, after = self._soak(lambda after: judge(
            baseline, Window.between(before.get(key), after.get(key)), self.plan.thresholds))
        window = Window.between(before.get(key), after.get(key))
        return StepReport(weight, elapsed, time.time() - elapsed, time.time(), window.total,
                          baseline.total, None, verdict.status, list(verdict.reasons),
                          verdict.measured)

    def _step(self, weight: float, elapsed: float, verdict: Verdict, before: dict[str, Any],
              after: dict[str, Any], stable: str, canary: str) -> StepReport:
        stable_rows = Window.between(before.get(stable), after.get(stable)).total
        canary_rows = Window.between(before.get(canary), after.get(canary)).total
        total = stable_rows + canary_rows
        share = 100.0 * canary_rows / total if total else None
        self.say(f"  gate at {weight:g} %: {verdict.status} after {elapsed:.0f} s, version "
                 f"{canary} took {share if share is None else round(share, 2)} % of "
                 f"{total} customers; " + "; ".join(verdict.reasons))
        return StepReport(weight, elapsed, time.time() - elapsed, time.time(), canary_rows,
                          stable_rows, share, verdict.status, list(verdict.reasons),
                          verdict.measured)

    def _observed(self, stable: str, canary: str, weight: float, before: dict[str, Any],
                  started: float) -> StepReport:
        after = self.admin.state()["versions"]
        verdict = Verdict("pass", ("promoted",), {})
        return self._step(weight, self.clock() - started, verdict, before, after, stable,
                          canary)

    def _roll_back(self, report: RolloutReport, step: StepReport, *,
                   switch_back: bool = False, started: float | None = None,
                   unload: bool = True) -> RolloutReport:
        """Every customer back on the previous version (counted by the gateway as a
        rollback, which its alert reads), the new version unloaded, the alert sent."""
        version, previous = report.version, report.previous
        reason = "; ".join(step.reasons)
        started = self.clock() if started is None else started
        if switch_back:  # blue-green: the new version was the stable one
            assert previous is not None
            self.admin.set_weights({previous: 100.0}, previous)
        self.admin.rollback(version, f"{step.status} at {step.weight:g} %: {reason}")
        report.rollback_s = self.clock() - started
        self.say(f"rolled back: version {version} takes no customer "
                 f"({1e3 * report.rollback_s:.0f} ms after the gate's verdict)")
        if unload:
            self.admin.unload(version)
        report.outcome = "rolled_back" if step.status == "fail" else "inconclusive"
        report.message = reason
        self._raise_alert(report)
        return report

    def _raise_alert(self, report: RolloutReport) -> None:
        if self.alert is not None:
            try:
                self.alert(report)
            except Exception as exc:  # the rollback stands whatever the alert does
                logger.error("could not send the rollback's alert: %s", exc)


def _only_version(loaded: Mapping[str, list[str]]) -> str | None:
    versions = {v for found in loaded.values() for v in found}
    return next(iter(versions)) if len(versions) == 1 else None
