"""The rollout command: move the gateway's customers to a new model version, gated, with an
automatic rollback (`make rollout VERSION=2`, `tritonkit rollout --version 2`).

    python -m tritonkit.rollout.cli --version 2                        # canary 5 -> 25 -> 100 %
    python -m tritonkit.rollout.cli --version 2 --strategy blue-green  # switch; again to go back
    python -m tritonkit.rollout.cli --version 2 --strategy rolling     # replica by replica
    python -m tritonkit.rollout.cli --version 2 --report rollout.json --soak-s 120

The version's folder must be in the repository every Triton serves (`churn_packed/<version>/`,
e.g. rendered by `make build-engines` with the spec's `version` raised). Exit codes: 0 promoted
or switched; 1 rolled back (a gate failed: the alert is sent); 2 bad command line; 3
inconclusive (too few customers within --max-wait-s: rolled back, not judged); 4 the rollout
could not run (the gateway refused a step, the version did not load). Every option falls back
to TRITONKIT_ROLLOUT_<OPTION>.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tritonkit.gateway.settings import DEFAULT_KEYS_FILE, DEV_KEY_FILES
from tritonkit.monitor.alerts import Alert
from tritonkit.monitor.delivery import AlertmanagerSink
from tritonkit.rollout.engine import (
    GatewayAdmin,
    Rollout,
    RolloutFailed,
    RolloutPlan,
    RolloutReport,
)
from tritonkit.rollout.gates import GateThresholds

logger = logging.getLogger(__name__)
_ENV = "TRITONKIT_ROLLOUT_"
#: The development admin key `make up`'s gateway accepts (make api-key).
DEV_ADMIN_KEY_FILE = DEFAULT_KEYS_FILE.parent / DEV_KEY_FILES[1]


def _env(name: str, default: str) -> str:
    return os.environ.get(_ENV + name.upper(), "") or default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Roll a model version out through the "
                                                 "gateway: canary, blue-green or rolling, "
                                                 "gated, rolled back on a failed gate.")
    parser.add_argument("--version", required=os.environ.get(_ENV + "VERSION") is None,
                        default=os.environ.get(_ENV + "VERSION"),
                        help="the Triton model version to roll out (env TRITONKIT_ROLLOUT_"
                             "VERSION)")
    parser.add_argument("--strategy", choices=["canary", "blue-green", "rolling"],
                        default=_env("strategy", "canary"), help="default: canary")
    parser.add_argument("--gateway-url", default=_env("gateway_url", "http://127.0.0.1:8080"),
                        help="the gateway's base URL (default: make up's)")
    parser.add_argument("--admin-key-file", type=Path,
                        default=Path(_env("admin_key_file", str(DEV_ADMIN_KEY_FILE))),
                        help="a file holding a gateway admin key (default: the development "
                             "admin key of make api-key)")
    parser.add_argument("--cafile", default=_env("cafile", ""),
                        help="CA bundle for a gateway on HTTPS with a self-signed certificate")
    parser.add_argument("--steps", default=_env("steps", "5,25,100"),
                        help="canary weights in percent, rising to 100 (default 5,25,100)")
    parser.add_argument("--soak-s", type=float, default=float(_env("soak_s", "60")),
                        help="how long each step runs before its gate may pass (default 60)")
    parser.add_argument("--max-wait-s", type=float, default=float(_env("max_wait_s", "600")),
                        help="how long a step may wait for enough customers before the rollout "
                             "is inconclusive and rolled back (default 600)")
    parser.add_argument("--min-rows", type=int, default=int(_env("min_rows", "100")),
                        help="customers per side before errors and latency are judged "
                             "(default 100; drift needs 500)")
    parser.add_argument("--error-margin", type=float,
                        default=float(_env("error_margin", "0.01")),
                        help="error-rate points the new version may add (default 0.01)")
    parser.add_argument("--latency-ratio", type=float,
                        default=float(_env("latency_ratio", "1.5")),
                        help="p95 the new version may reach, times the stable one's (1.5)")
    parser.add_argument("--keep-previous", action="store_true",
                        help="canary: leave the previous version loaded after the promotion")
    parser.add_argument("--alertmanager-url", default=_env("alertmanager_url", ""),
                        help="Alertmanager to send the rollback's alert to (the gateway counts "
                             "every rollback too: gateway_rollout_rollbacks_total)")
    parser.add_argument("--report", type=Path, default=None,
                        help="write the rollout's report (steps, shares, gates) as JSON here")
    args = parser.parse_args(argv)
    try:
        args.steps = tuple(float(s) for s in str(args.steps).split(",") if s.strip())
    except ValueError:
        parser.error(f"--steps takes percentages such as 5,25,100, not {args.steps!r}")
    return args


def alert_sender(url: str, gateway_url: str) -> Callable[[RolloutReport], None]:
    """A callable sending a rollback's alert to Alertmanager at `url`."""
    sink = AlertmanagerSink(url)

    def send(report: RolloutReport) -> None:
        now = time.time()
        sink.send([Alert(
            labels={"alertname": "TritonGatewayRolloutRolledBack", "severity": "ticket",
                    "service": "gateway", "version": report.version,
                    "strategy": report.strategy},
            annotations={"summary": f"rollout of model version {report.version} "
                                    f"({report.strategy}) {report.outcome}",
                         "description": report.message[:1000]},
            starts_at=now, ends_at=None, generator_url=f"{gateway_url}/admin/rollout")], now)

    return send


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        key = args.admin_key_file.read_text().strip()
    except OSError as exc:
        print(f"error: cannot read the gateway admin key {args.admin_key_file}: {exc.strerror}"
              " (make api-key writes the development one)", file=sys.stderr)
        return 4
    try:
        plan = RolloutPlan(
            version=str(args.version), strategy=args.strategy, steps=args.steps,
            soak_s=args.soak_s, max_wait_s=args.max_wait_s, keep_previous=args.keep_previous,
            thresholds=GateThresholds(min_rows=args.min_rows, error_margin=args.error_margin,
                                      latency_ratio=args.latency_ratio))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    admin = GatewayAdmin(args.gateway_url, key, verify=args.cafile or True)
    alert = alert_sender(args.alertmanager_url, args.gateway_url) \
        if args.alertmanager_url else None
    try:
        report = Rollout(admin, plan, say=print, alert=alert).run()
    except RolloutFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    finally:
        admin.close()
    if args.report is not None:
        args.report.write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
