"""The monitoring sidecar's command line (`python -m tritonkit.monitor.cli`): its options are the
fields of `SidecarOptions` (pydantic-settings, `tritonkit.settings`), each described once, and
each falls back to an environment variable `TRITONKIT_MONITOR_<OPTION>`, listed in `--help`::

    python -m tritonkit.monitor.cli --triton-url http://127.0.0.1:8000 --port 9108
    TRITONKIT_MONITOR_PROMETHEUS_URL=http://127.0.0.1:9090 python -m tritonkit.monitor.cli

`make up` runs the same service in-process beside tritonserver (tritonkit.serve.cli).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tritonkit.errors import TritonKitError
from tritonkit.monitor.service import MonitorService
from tritonkit.monitor.settings import MonitorSettings
from tritonkit.settings import ServiceSettings, add_flags, settings_from

ENV_PREFIX = "TRITONKIT_MONITOR_"
#: The sidecar's defaults are MonitorSettings' (in-process runs share them).
_DEFAULTS = MonitorSettings()


class SidecarOptions(ServiceSettings):
    """The sidecar's command line: MonitorSettings' options (named as their flags: `profile`
    is `profile_path`, `triton_admin_key` is `admin_key`), the admin key's file, the log level."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)

    triton_url: str = Field(_DEFAULTS.triton_url,
                            description="Triton's HTTP endpoint: health probes and healing")
    metrics_url: str | None = Field(
        _DEFAULTS.metrics_url,
        description="Triton's Prometheus endpoint (default: the Triton URL's host, port 8002, "
                    "/metrics)")
    prometheus_url: str | None = Field(
        _DEFAULTS.prometheus_url,
        description="read the counters from this Prometheus instead of Triton (summed over its "
                    "replicas)")
    host: str = Field(_DEFAULTS.host, description="address the sidecar's HTTP server binds")
    port: int = Field(_DEFAULTS.port,
                      description="port of /health /alerts /report /metrics (0: any free port)")
    interval_s: float = Field(_DEFAULTS.interval_s, description="seconds between evaluations")
    window_s: float = Field(_DEFAULTS.window_s,
                            description="seconds of traffic each drift verdict judges")
    min_rows: int = Field(_DEFAULTS.min_rows,
                          description="fewest rows in a window for drift verdicts")
    alerts_file: Path = Field(_DEFAULTS.alerts_file, description="alert rules (YAML)")
    profile: Path | None = Field(
        _DEFAULTS.profile_path,
        description="reference profile (default: artifacts/churn/<the spec's "
                    "version>/reference_profile.json)")
    model: str = Field(_DEFAULTS.model, description="the ensemble to watch")
    alertmanager_url: str | None = Field(
        _DEFAULTS.alertmanager_url,
        description="Alertmanager's base URL: alerts go to its /api/v2/alerts")
    webhook_url: str | None = Field(
        _DEFAULTS.webhook_url, description="a URL that takes Alertmanager's v4 webhook payload")
    triton_admin_key: str | None = Field(
        _DEFAULTS.admin_key,
        description="the key of Triton's --http-restricted-api=model-repository:admin-key=<key>, "
                    "to reload a step whose stub died (prefer the environment variable or "
                    "--triton-admin-key-file)")
    triton_admin_key_file: Path | None = Field(
        None, description="read the admin key from this file")
    health_interval_s: float = Field(_DEFAULTS.health_interval_s,
                                     description="seconds between health checks")
    probes: int = Field(_DEFAULTS.probes, description="real inferences per health check")
    latency_budget_ms: float = Field(_DEFAULTS.latency_budget_ms,
                                     description="the slowest health probe must answer within "
                                                 "this")
    timeout_s: float = Field(_DEFAULTS.timeout_s,
                             description="timeout of every HTTP call the sidecar makes")
    heal: bool = Field(_DEFAULTS.heal,
                       description="reload a step whose real inference fails with a 5xx")
    log_level: str = Field("INFO", description="logging level")

    def monitor_settings(self) -> MonitorSettings:
        """The service's settings; the admin key read from its file when one is given.

        Raises:
            TritonKitError: the admin key file cannot be read.
        """
        key = self.triton_admin_key
        if self.triton_admin_key_file is not None:
            try:
                key = self.triton_admin_key_file.read_text().strip()
            except OSError as exc:
                raise TritonKitError(f"cannot read --triton-admin-key-file "
                                     f"{self.triton_admin_key_file}: {exc.strerror}") from exc
        return MonitorSettings(
            triton_url=self.triton_url, metrics_url=self.metrics_url,
            prometheus_url=self.prometheus_url, host=self.host, port=self.port,
            interval_s=self.interval_s, window_s=self.window_s, min_rows=self.min_rows,
            alerts_file=self.alerts_file, profile_path=self.profile, model=self.model,
            alertmanager_url=self.alertmanager_url, webhook_url=self.webhook_url, admin_key=key,
            health_interval_s=self.health_interval_s, probes=self.probes,
            latency_budget_ms=self.latency_budget_ms, timeout_s=self.timeout_s, heal=self.heal)


def parse_args(argv: list[str] | None = None) -> tuple[SidecarOptions, MonitorSettings]:
    """The options (flags, then TRITONKIT_MONITOR_* variables, then defaults) and the service's
    settings made of them; exits with the usage (2) on a value an option cannot take."""
    parser = argparse.ArgumentParser(
        description="Monitoring sidecar of the churn ensemble: drift verdicts from Triton's "
                    "binned counters, serving numbers, alerts, health checks that heal.")
    add_flags(parser, SidecarOptions)
    args = parser.parse_args(argv)
    try:
        options = settings_from(SidecarOptions, args)
        return options, options.monitor_settings()
    except TritonKitError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    options, settings = parse_args(argv)
    logging.basicConfig(level=options.log_level.upper(),
                        format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per health probe otherwise
    stop = threading.Event()

    def _request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    try:
        service = MonitorService(settings).start()
    except TritonKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    source = service.source.url
    print(f"monitoring {settings.model} from {source}: {service.url}/health /alerts /report "
          "/metrics (Ctrl-C stops)", flush=True)
    try:
        stop.wait()
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
