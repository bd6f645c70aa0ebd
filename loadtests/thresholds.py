"""Thresholds that decide a headless run's exit code: p95, p99 and the failure ratio.

Importing this module adds `--max-p95-ms`, `--max-p99-ms` and `--max-fail-ratio` (and their
`LOCUST_MAX_*` variables) and judges the whole run's statistics when Locust quits::

    locust -f loadtests/locustfile.py --headless -u 20 -t 30s --max-p95-ms 50 --max-fail-ratio 0.01
    echo $?    # 0 passed, 1 a request failed (no --max-fail-ratio), 3 a threshold broken

The percentiles are Locust's, which rounds times under 100 ms to whole milliseconds (and
coarser above): a threshold of 5 ms passes a true p95 of up to 5.5 ms.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Callable
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import StatsEntry

logger = logging.getLogger(__name__)

#: Exit code of a run that broke a threshold (Locust's own: 1 a request failed, 2 an error in
#: a locustfile).
THRESHOLD_EXIT_CODE = 3


@dataclasses.dataclass(frozen=True)
class Threshold:
    """One limit on the run's aggregated statistics."""

    option: str
    what: str
    unit: str
    measure: Callable[[StatsEntry], float]

    @property
    def attribute(self) -> str:
        return self.option[2:].replace("-", "_")


THRESHOLDS = (
    Threshold("--max-p95-ms", "p95", " ms", lambda s: s.get_response_time_percentile(0.95)),
    Threshold("--max-p99-ms", "p99", " ms", lambda s: s.get_response_time_percentile(0.99)),
    Threshold("--max-fail-ratio", "failure ratio", "", lambda s: s.fail_ratio),
)


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    """One option per threshold; empty (the default) means no limit."""
    texts = {"--max-p95-ms": "95th percentile of response times, in ms",
             "--max-p99-ms": "99th percentile of response times, in ms",
             "--max-fail-ratio": "ratio of failed requests to all requests (0 to 1)"}
    for threshold in THRESHOLDS:
        parser.add_argument(
            threshold.option, default="",
            env_var="LOCUST_" + threshold.attribute.upper(),
            help=f"threshold: exit {THRESHOLD_EXIT_CODE} when the run's "
                 f"{texts[threshold.option]} is above it (Locust rounds times under 100 ms to "
                 "whole ms)")


def limits(options: Any) -> dict[Threshold, float]:
    """The thresholds that are set, with their values.

    Raises:
        ValueError: a value is not a number of 0 or more; the message names the option.
    """
    out = {}
    for threshold in THRESHOLDS:
        text = str(getattr(options, threshold.attribute, "") or "").strip()
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{threshold.option} must be a number, not {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{threshold.option} must be a number of 0 or more, not {text!r}")
        out[threshold] = value
    return out


def judge(total: StatsEntry, set_limits: dict[Threshold, float]) -> list[str]:
    """A line per threshold, each starting with `ok` or `BROKEN`."""
    lines = []
    for threshold, value in set_limits.items():
        if total.num_requests == 0:
            lines.append(f"BROKEN {threshold.option} {value:g}: no request was made")
            continue
        measured = threshold.measure(total)
        verdict = "ok" if measured <= value else "BROKEN"
        shown = f"{measured:g}{threshold.unit}" if threshold.unit else f"{measured:.4f}"
        lines.append(f"{verdict} {threshold.option} {value:g}: {threshold.what} was {shown} "
                     f"over {total.num_requests} requests")
    return lines


@events.init.add_listener
def _check_options(environment: Environment, **_: Any) -> None:
    """Refuse a bad threshold when Locust starts, not when the run ends."""
    if environment.parsed_options is None:
        return
    try:
        limits(environment.parsed_options)
    except ValueError as exc:
        logger.error("%s", exc)
        sys.exit(1)


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    """Judge the aggregated statistics (on the master or the only process, never a worker)."""
    if environment.parsed_options is None or isinstance(environment.runner, WorkerRunner):
        return
    set_limits = limits(environment.parsed_options)
    if not set_limits:
        return
    total = environment.stats.total
    lines = judge(total, set_limits)
    for line in lines:
        (logger.error if line.startswith("BROKEN") else logger.info)("threshold %s", line)
    if any(line.startswith("BROKEN") for line in lines):
        environment.process_exit_code = THRESHOLD_EXIT_CODE
    elif (any(t.option == "--max-fail-ratio" for t in set_limits) and environment.runner
          and not environment.runner.exceptions):
        # Failures within --max-fail-ratio pass: without it Locust exits 1 on any failure.
        environment.process_exit_code = 0
