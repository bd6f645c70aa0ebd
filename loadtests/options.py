"""What the locustfiles send and where: their options, and the workload those select.

Importing this module registers `--ensembles`, `--customers`, `--drift-share`,
`--invalid-share` and `--grpc-url` with Locust (each with a `LOCUST_*` environment variable;
Locust's `--help` cannot list them, since it prints before reading the locustfile: see
loadtests/README.md) and builds the workload once they are parsed::

    import options                                   # in a locustfile
    payload = options.workload().pick(rng)           # in a user's task
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner

from workload import LoadTestError, Mix, Workload

logger = logging.getLogger(__name__)

#: Triton's default gRPC port, used with --host's hostname when --grpc-url is not given.
TRITON_GRPC_PORT = 8001

_state: dict[str, Any] = {"workload": None, "built_from": None}


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    """What to send and where: Locust's parser, each option with a `LOCUST_*` variable."""
    parser.add_argument(
        "--ensembles", default="", env_var="LOCUST_ENSEMBLES",
        help="comma-separated ensembles to call, each with its own held-out rows; "
             "default: every ensemble in configs/models.yaml")
    parser.add_argument(
        "--customers", default="", env_var="LOCUST_CUSTOMERS",
        help="rows (CSV or JSON of its features) for /predict's model, churn; "
             "default: artifacts/churn/<version>/test.csv")
    parser.add_argument(
        "--drift-share", type=float, default=0.0, env_var="LOCUST_DRIFT_SHARE",
        help="share of requests that are drifted: a tabular model's first numeric feature up "
             "half its held-out range (churn: tenure up 36 months), and in half of them a "
             "category unseen in training, which Triton refuses with 400")
    parser.add_argument(
        "--invalid-share", type=float, default=0.0, env_var="LOCUST_INVALID_SHARE",
        help="share of requests with a NaN or negative tenure, which Triton refuses with 400 "
             "(a success of its own request name, '<ensemble> [invalid, expect 400]')")
    parser.add_argument(
        "--grpc-url", default="", env_var="LOCUST_GRPC_URL",
        help=f"host:port of Triton's gRPC endpoint for the gRPC user; default: --host's "
             f"hostname and port {TRITON_GRPC_PORT}")


def grpc_url(environment: Environment) -> str:
    """--grpc-url, or --host's hostname with Triton's default gRPC port."""
    options = environment.parsed_options
    if options is not None and options.grpc_url:
        return str(options.grpc_url)
    hostname = urlsplit(environment.host or "").hostname or "127.0.0.1"
    return f"{hostname}:{TRITON_GRPC_PORT}"


def _selection(options: Any) -> tuple[Any, ...]:
    return (options.ensembles, options.customers, options.drift_share, options.invalid_share)


def build_workload(environment: Environment) -> Workload:
    """The workload the parsed options select (rebuilt when they change, as in the web UI).

    Raises:
        LoadTestError: a bad option or held-out rows that cannot be read.
    """
    options: Any = environment.parsed_options
    selection = _selection(options)
    if _state["built_from"] != selection:
        ensembles = [name.strip() for name in options.ensembles.split(",") if name.strip()]
        _state["workload"] = Workload.build(
            ensembles or None,
            Mix(drift_share=options.drift_share, invalid_share=options.invalid_share),
            Path(options.customers) if options.customers else None)
        _state["built_from"] = selection
    built: Workload = _state["workload"]
    return built


def workload() -> Workload:
    """The workload of this process (built when Locust starts)."""
    built: Workload | None = _state["workload"]
    if built is None:
        raise LoadTestError("the workload is not built: run this file with locust")
    return built


def prepare(environment: Environment, selected: Workload) -> None:
    """Build the bodies the selected user classes send (not on a master: it sends nothing).

    It yields to gevent between payloads, so that a worker keeps answering its master's
    heartbeats while it builds (seconds on a busy machine).
    """
    if isinstance(environment.runner, MasterRunner):
        return
    formats = sorted({f for user in environment.user_classes
                      if (f := getattr(user, "payload_format", None))})
    started = time.perf_counter()
    count = selected.prepare(formats, pause=gevent.sleep)
    logger.info("prepared %d payloads (%s) for %s in %.1f s", count, ", ".join(formats),
                ", ".join(selected.ensembles), time.perf_counter() - started)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    """Check the options and read the held-out rows before any user starts: a mistake stops
    Locust here, with its message, instead of failing every request. Then build the bodies,
    before the first user starts where Locust runs in one process."""
    if environment.parsed_options is None:
        return
    try:
        selected = build_workload(environment)
    except LoadTestError as exc:
        logger.error("%s", exc)
        sys.exit(1)
    prepare(environment, selected)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    """Take the options of the web UI's form (a no-op when nothing changed)."""
    if environment.parsed_options is None or isinstance(environment.runner, MasterRunner):
        return
    try:
        selected = build_workload(environment)
    except LoadTestError as exc:
        logger.error("%s", exc)
        return
    prepare(environment, selected)
