"""The monitoring sidecar's command line (`python -m tritonkit.monitor.cli`); every option falls
back to an environment variable `TRITONKIT_MONITOR_*`, listed in `--help`::

    python -m tritonkit.monitor.cli --triton-url http://127.0.0.1:8000 --port 9108
    TRITONKIT_MONITOR_PROMETHEUS_URL=http://127.0.0.1:9090 python -m tritonkit.monitor.cli

`make up` runs the same service in-process beside tritonserver (tritonkit.serve.cli).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from tritonkit.errors import TritonKitError
from tritonkit.monitor.service import MonitorService, MonitorSettings

ENV_PREFIX = "TRITONKIT_MONITOR_"

#: (flag, settings field, type, help); the default is MonitorSettings' and the environment
#: variable is ENV_PREFIX + the flag's name (--triton-url: TRITONKIT_MONITOR_TRITON_URL).
OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("--triton-url", "triton_url", str, "Triton's HTTP endpoint: health probes and healing"),
    ("--metrics-url", "metrics_url", str,
     "Triton's Prometheus endpoint (default: the Triton URL's host, port 8002, /metrics)"),
    ("--prometheus-url", "prometheus_url", str,
     "read the counters from this Prometheus instead of Triton (summed over its replicas)"),
    ("--host", "host", str, "address the sidecar's HTTP server binds"),
    ("--port", "port", int, "port of /health /alerts /report /metrics (0: any free port)"),
    ("--interval-s", "interval_s", float, "seconds between evaluations"),
    ("--window-s", "window_s", float, "seconds of traffic each drift verdict judges"),
    ("--min-rows", "min_rows", int, "fewest rows in a window for drift verdicts"),
    ("--alerts-file", "alerts_file", Path, "alert rules (YAML)"),
    ("--profile", "profile_path", Path,
     "reference profile (default: artifacts/churn/<the spec's version>/reference_profile.json)"),
    ("--model", "model", str, "the ensemble to watch"),
    ("--alertmanager-url", "alertmanager_url", str,
     "Alertmanager's base URL: alerts go to its /api/v2/alerts"),
    ("--webhook-url", "webhook_url", str, "a URL that takes Alertmanager's v4 webhook payload"),
    ("--triton-admin-key", "admin_key", str,
     "the key of Triton's --http-restricted-api=model-repository:admin-key=<key>, to reload a "
     "step whose stub died (prefer the environment variable or --triton-admin-key-file)"),
    ("--health-interval-s", "health_interval_s", float, "seconds between health checks"),
    ("--probes", "probes", int, "real inferences per health check"),
    ("--latency-budget-ms", "latency_budget_ms", float,
     "the slowest health probe must answer within this"),
    ("--timeout-s", "timeout_s", float, "timeout of every HTTP call the sidecar makes"),
)


def _env(flag: str) -> str:
    return ENV_PREFIX + flag.removeprefix("--").upper().replace("-", "_")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = MonitorSettings()
    parser = argparse.ArgumentParser(
        description="Monitoring sidecar of the churn ensemble: drift verdicts from Triton's "
                    "binned counters, serving numbers, alerts, health checks that heal.")
    for flag, field, kind, text in OPTIONS:
        env = _env(flag)
        default = getattr(defaults, field)
        raw = os.environ.get(env)
        try:
            value = kind(raw) if raw not in (None, "") else default
        except ValueError:
            parser.error(f"{env}={raw!r} is not a valid {kind.__name__} (for {flag})")
        shown = "" if field == "admin_key" or default is None else f"; default {default}"
        parser.add_argument(flag, dest=field, type=kind, default=value,
                            help=f"{text} (env {env}{shown})")
    parser.add_argument("--triton-admin-key-file", type=Path,
                        default=os.environ.get(f"{ENV_PREFIX}TRITON_ADMIN_KEY_FILE"),
                        help="read the admin key from this file "
                             f"(env {ENV_PREFIX}TRITON_ADMIN_KEY_FILE)")
    heal = os.environ.get(f"{ENV_PREFIX}HEAL", "true").lower() not in ("0", "false", "no")
    parser.add_argument("--heal", action=argparse.BooleanOptionalAction, default=heal,
                        help="reload a step whose real inference fails with a 5xx "
                             f"(env {ENV_PREFIX}HEAL=true|false; default true)")
    parser.add_argument("--log-level", default=os.environ.get(f"{ENV_PREFIX}LOG_LEVEL", "INFO"),
                        help=f"logging level (env {ENV_PREFIX}LOG_LEVEL; default INFO)")
    args = parser.parse_args(argv)
    if args.triton_admin_key_file is not None:
        try:
            args.admin_key = args.triton_admin_key_file.read_text().strip()
        except OSError as exc:
            parser.error(f"cannot read --triton-admin-key-file {args.triton_admin_key_file}: "
                         f"{exc.strerror}")
    return args


def settings_from(args: argparse.Namespace) -> MonitorSettings:
    fields = {field: getattr(args, field) for _, field, _, _ in OPTIONS}
    return MonitorSettings(**fields, heal=args.heal)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per health probe otherwise
    stop = threading.Event()

    def _request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    try:
        service = MonitorService(settings_from(args)).start()
    except TritonKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    source = service.source.url
    print(f"monitoring {args.model} from {source}: {service.url}/health /alerts /report "
          "/metrics (Ctrl-C stops)", flush=True)
    try:
        stop.wait()
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
