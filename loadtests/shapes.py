"""Load shapes: ramp, step, spike and soak, chosen with `--shape` (or LOCUST_SHAPE).

Each shape reads Locust's own options: `-u` is its peak number of users, `-r` how fast users
are started, `-t` its duration (a default per shape without it)::

    locust -f loadtests/locustfile.py --headless --shape spike -u 60 -t 2m

Locust runs the first shape class it finds in a locustfile, and reads the locustfile before it
parses the command line; so a locustfile exposes only the shape that `selected()` picks from
the command line (or none: plain `-u/-r/-t`), and the option is registered here for `--help`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

from locust import LoadTestShape, events

SHAPE_ENV = "LOCUST_SHAPE"
DEFAULT_STEPS = 5


class _Shape(LoadTestShape):
    """A shape over `-t` seconds that peaks at `-u` users."""

    abstract = True
    use_common_options = True  # -u, -r and -t reach the shape (and the web UI's form)
    summary: ClassVar[str] = ""
    default_duration_s: ClassVar[float] = 60.0

    def _options(self) -> tuple[int, float, float]:
        """(peak users, spawn rate, duration in s) from -u, -r and -t."""
        options = self.runner.environment.parsed_options if self.runner else None
        peak = max(1, int(getattr(options, "num_users", None) or 1))
        rate = float(getattr(options, "spawn_rate", None) or peak)
        duration = float(getattr(options, "run_time", None) or self.default_duration_s)
        return peak, rate, duration

    def tick(self) -> tuple[int, float] | None:
        peak, rate, duration = self._options()
        elapsed = self.get_run_time()
        if elapsed >= duration:
            return None
        return self.users_at(elapsed / duration, peak, rate)

    def users_at(self, progress: float, peak: int, rate: float) -> tuple[int, float]:
        """(users, spawn rate) at `progress` (0 to 1) through the run."""
        raise NotImplementedError


class RampShape(_Shape):
    summary = "users grow linearly from 1 to -u over -t (where does latency bend?)"

    def users_at(self, progress: float, peak: int, rate: float) -> tuple[int, float]:
        return max(1, math.ceil(peak * progress)), max(rate, float(peak))


class StepShape(_Shape):
    summary = "-u in --shape-steps equal steps, each held for an equal part of -t"

    def users_at(self, progress: float, peak: int, rate: float) -> tuple[int, float]:
        options = self.runner.environment.parsed_options if self.runner else None
        steps = max(1, int(getattr(options, "shape_steps", None) or DEFAULT_STEPS))
        step = min(steps - 1, int(progress * steps))
        return max(1, math.ceil(peak * (step + 1) / steps)), max(rate, float(peak))


class SpikeShape(_Shape):
    summary = "a fifth of -u for 2/5 of -t, all -u at once for 1/5, then a fifth again"

    def users_at(self, progress: float, peak: int, rate: float) -> tuple[int, float]:
        base = max(1, peak // 5)
        return (peak if 0.4 <= progress < 0.6 else base), float(peak)


class SoakShape(_Shape):
    summary = "-u users held for -t (default 30 min): leaks, drift alerts, slow degradation"
    default_duration_s = 1800.0

    def users_at(self, progress: float, peak: int, rate: float) -> tuple[int, float]:
        return peak, rate


SHAPES: dict[str, type[_Shape]] = {
    "ramp": RampShape, "step": StepShape, "spike": SpikeShape, "soak": SoakShape,
}


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    """--shape and --shape-steps, for `--help` and their check (`selected` acts on them)."""
    parser.add_argument(
        "--shape", default="", choices=["", *SHAPES], env_var=SHAPE_ENV,
        include_in_web_ui=False,
        help="load shape, -u its peak and -t its duration: "
             + "; ".join(f"{name}: {cls.summary}" for name, cls in SHAPES.items()))
    parser.add_argument(
        "--shape-steps", type=int, default=DEFAULT_STEPS, env_var="LOCUST_SHAPE_STEPS",
        include_in_web_ui=False, help="number of steps of --shape step")


def selected(argv: Sequence[str] | None = None,
             environ: dict[str, str] | None = None) -> type[LoadTestShape] | None:
    """The shape class that --shape (or LOCUST_SHAPE) names, None for none.

    Read from the raw command line: Locust imports the locustfile before parsing it.
    """
    argv = sys.argv[1:] if argv is None else argv
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--shape", default=environ.get(SHAPE_ENV, ""))
    name = parser.parse_known_args(list(argv))[0].shape
    return SHAPES.get(name) if name else None
