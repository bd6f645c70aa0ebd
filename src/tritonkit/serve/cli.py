"""The serve command: run the embedded Triton stack in the foreground (what `make up` runs).

    python -m tritonkit.serve.cli --http-port 8000 --pid-file .cache/serve.pid
    python -m tritonkit.serve.cli --stop --pid-file .cache/serve.pid   # what `make down` runs
    python -m tritonkit.serve.cli --replicas 3 ...                      # make up REPLICAS=3
    python -m tritonkit.serve.cli --rolling-restart --pid-file ...      # make restart

Every setting is a field of `ServeSettings` (pydantic-settings, `tritonkit.settings`), described
once, and falls back to the environment variable TRITONKIT_<SETTING> (TRITONKIT_HTTP_PORT, …);
`--stop` and `--rolling-restart` are actions, flags only. The pid file names
the one serve CLI that `make down` stops; a second CLI with the same pid file refuses to start.
Beside tritonserver it runs the monitoring sidecar (in this process) and, when their ports are
given, Prometheus and Alertmanager (`tritonkit.serve.stack`). Triton's model-repository API
takes only requests with the admin key kept in `--admin-key-file` (made once if absent).
With `--replicas n` it runs n tritonservers (`tritonkit.serve.fleet`: ports + 100 per replica)
behind the one gateway, starts again one that dies, and restarts them one by one, each drained
at the gateway first, on SIGHUP (`--rolling-restart` sends it and waits for the round to end).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from types import FrameType

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tritonkit.client.customers import held_out_example, kserve_json_inputs
from tritonkit.errors import ServerInterrupted, ServerStartError, TritonKitError
from tritonkit.paths import CACHE, PROJECT_ROOT
from tritonkit.repository.layout import step_names
from tritonkit.serve.fleet import PORT_STRIDE, TritonFleet, replica_settings
from tritonkit.serve.pidfile import (
    claim_pid_file,
    release_pid_file,
    request_rolling_restart,
    rolling_status_file,
    stop_serve_cli,
)
from tritonkit.serve.server import ServerSettings, TritonServer
from tritonkit.serve.stack import EmbeddedStack, StackOptions
from tritonkit.settings import ServiceSettings, SettingsError, add_flags, settings_from

logger = logging.getLogger(__name__)


def _example_body() -> str:
    """A KServe v2 JSON request for churn: its first held-out customer."""
    try:
        row = held_out_example("churn")
    except (OSError, KeyError, TritonKitError) as exc:
        return f"(no example: {exc})"
    return json.dumps({"inputs": kserve_json_inputs(row)}, separators=(",", ":"))


def admin_key(path: Path) -> str:
    """The model-repository admin key in `path`, made once (mode 0600) when it is absent.

    Made by a hard link from a private temporary file, so two CLIs starting at once agree on
    one key and a reader never sees half of one.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(partial, path)
        partial.unlink()
    key = path.read_text().strip()
    if not key:
        raise ServerStartError(f"the admin key file {path} is empty: delete it and start again")
    return key


class ServeSettings(ServiceSettings):
    """What `make up` runs: tritonserver and what runs beside it (TRITONKIT_* variables)."""

    model_config = SettingsConfigDict(env_prefix="TRITONKIT_")

    model_repository: Path = Field(PROJECT_ROOT / "model_repository",
                                   description="repository to serve")
    host: str = Field("127.0.0.1", description="address to bind")
    http_port: int = Field(8000, description="KServe v2 HTTP port")
    grpc_port: int = Field(8001, description="KServe v2 gRPC port")
    metrics_port: int = Field(8002, description="Prometheus /metrics port")
    start_timeout_s: float = Field(120.0,
                                   description="how long to wait for readiness before giving up")
    log_file: Path | None = Field(
        None, description="tritonserver log (default: a file in a temporary folder)")
    pid_file: Path | None = Field(
        None, description="write this CLI's PID here while it runs; refuse to start while it "
                          "names a running serve CLI (default: none)")
    summary_latencies: bool = Field(
        True, description="latency quantiles on /metrics, for the sidecar's p95 alert; they "
                          "cost tritonserver CPU under load")
    admin_key_file: Path = Field(
        CACHE / "triton-admin-key",
        description="the key Triton's model-repository API (load/unload) requires in the header "
                    "admin-key; made once if absent")
    monitor: bool = Field(True, description="run the monitoring sidecar in this process")
    monitor_port: int = Field(
        0, description="the sidecar's /health /alerts /report /metrics port, 0 for any free one")
    prometheus_port: int | None = Field(
        None, description="start Prometheus (Debian's /usr/bin/prometheus) on this port with "
                          "monitoring/prometheus/ rules (default: not started)")
    alertmanager_port: int | None = Field(
        None, description="start Alertmanager (Debian's prometheus-alertmanager) on this port "
                          "with monitoring/alertmanager/alertmanager.yml (default: not started)")
    monitoring_dir: Path = Field(
        CACHE / "monitoring",
        description="Prometheus' and Alertmanager's data and logs, one folder per port")
    gateway_port: int = Field(
        0, description="serve the public /predict gateway on this port in front of Triton (0: "
                       "no gateway; make up passes GATEWAY_PORT=8080)")
    cache_size_bytes: int = Field(
        64 << 20, description="Triton's response cache, for the models whose spec turns it on "
                              "(0: off)")
    replicas: int = Field(
        1, description=f"tritonservers to run behind the gateway, replica i on the ports + "
                       f"{PORT_STRIDE} x i; with more than one, a replica that exits is "
                       "started again")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The actions (`stop`, `rolling_restart`) and `settings`: flags, then TRITONKIT_*
    variables, then defaults; exits with the usage (2) on a value a setting cannot take."""
    parser = argparse.ArgumentParser(description="Serve the model repository with tritonserver.")
    add_flags(parser, ServeSettings)
    parser.add_argument("--stop", action="store_true",
                        help="stop the serve CLI named in --pid-file, wait until it has exited, "
                             "and exit (what `make down` runs)")
    parser.add_argument("--rolling-restart", action="store_true",
                        help="ask the serve CLI named in --pid-file to restart its replicas one "
                             "by one (each drained at the gateway first), wait until it is done, "
                             "and exit (what `make restart` runs)")
    args = parser.parse_args(argv)
    try:
        settings = settings_from(ServeSettings, args)
    except SettingsError as exc:
        parser.error(str(exc))
    if (args.stop or args.rolling_restart) and settings.pid_file is None:
        parser.error("--stop and --rolling-restart need --pid-file (or TRITONKIT_PID_FILE)")
    if settings.replicas < 1:
        parser.error(f"--replicas must be at least 1, not {settings.replicas}")
    return argparse.Namespace(settings=settings, stop=args.stop,
                              rolling_restart=args.rolling_restart)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings: ServeSettings = args.settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per health probe otherwise
    pid_file = settings.pid_file
    if args.stop:
        assert pid_file is not None
        return stop_serve_cli(pid_file)
    if args.rolling_restart:
        assert pid_file is not None
        return request_rolling_restart(pid_file)
    try:
        key = admin_key(settings.admin_key_file)
    except (TritonKitError, OSError) as exc:
        print(f"error: cannot read or make the admin key {settings.admin_key_file}: {exc}",
              file=sys.stderr)
        return 1
    try:
        fleet = TritonFleet(replica_settings(ServerSettings(
            model_repository=settings.model_repository, host=settings.host,
            http_port=settings.http_port, grpc_port=settings.grpc_port,
            metrics_port=settings.metrics_port, log_file=settings.log_file,
            summary_latencies=settings.summary_latencies, admin_key=key,
            cache_size_bytes=settings.cache_size_bytes,
        ), settings.replicas), restart=settings.replicas > 1,
            start_timeout_s=settings.start_timeout_s)
    except TritonKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stack = StackOptions(monitor=settings.monitor, monitor_port=settings.monitor_port,
                         prometheus_port=settings.prometheus_port,
                         alertmanager_port=settings.alertmanager_port, admin_key=key,
                         admin_key_file=settings.admin_key_file,
                         workdir=settings.monitoring_dir, gateway_port=settings.gateway_port)
    # SIGTERM (make down, a supervisor) and Ctrl-C only set a flag that start() and wait()
    # poll; the shutdown itself runs here, in the main flow. Installed before the pid file is
    # written, so a `make down` at any moment gets a clean stop.
    def _request_stop(signum: int, frame: FrameType | None) -> None:
        fleet.request_stop()

    def _request_rolling(signum: int, frame: FrameType | None) -> None:
        fleet.request_rolling_restart()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGHUP, _request_rolling)
    if pid_file is None:
        return serve(fleet, stack)
    try:
        claim_pid_file(pid_file)
    except TritonKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        return serve(fleet, stack, rolled_file=rolling_status_file(pid_file))
    finally:
        release_pid_file(pid_file)


def serve(fleet: TritonFleet | TritonServer, stack_options: StackOptions | None = None,
          start_timeout_s: float | None = None, rolled_file: Path | None = None) -> int:
    """Start the replicas and the monitoring stack beside them, serve until a stop is
    requested or (one replica) tritonserver exits; returns the exit code."""
    if isinstance(fleet, TritonServer):
        fleet = TritonFleet([fleet.settings], restart=False,
                            start_timeout_s=start_timeout_s or 120.0)
    try:
        fleet.start()
    except ServerInterrupted:
        return 0
    except TritonKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stack = EmbeddedStack(fleet.primary, stack_options or StackOptions(monitor=False),
                          replicas=fleet.servers).start()
    try:
        return _serve_started(fleet, stack, rolled_file)
    finally:
        stack.stop()


def _ensembles(repository: Path) -> list[str]:
    """What clients call in a model repository: its ensembles, and the packed entry point of
    each where it has one (on a fused target a python step, not an ensemble)."""
    ensembles = sorted(config.parent.name for config in repository.glob("*/config.pbtxt")
                       if 'platform: "ensemble"' in config.read_text())
    packed = [step_names(e)["packed"] for e in ensembles
              if (repository / step_names(e)["packed"] / "config.pbtxt").exists()]
    return sorted({*ensembles, *packed})


def _serve_started(fleet: TritonFleet, stack: EmbeddedStack, rolled_file: Path | None) -> int:
    server = fleet.primary
    monitoring = stack.banner()
    ensembles = _ensembles(server.settings.model_repository)
    text_body = ('{"inputs":[{"name":"text","shape":[1,1],"datatype":"BYTES",'
                 '"data":["How do I open a file?"]}]}')
    text_example = (f"  curl -s {server.http_url}/v2/models/minilm/infer "
                    f"-H 'Content-Type: application/json' \\\n    -d '{text_body}'\n"
                    if "minilm" in ensembles else "")
    others = "".join(f"\n  replica {i}  {r.http_url}   gRPC {r.grpc_url}   metrics "
                     f"{r.metrics_url}   log {r.log_file}"
                     for i, r in enumerate(fleet.servers) if i)
    replicas = (f"\n  {len(fleet.servers)} replicas behind the gateway (`make restart` restarts "
                f"them one by one); replica 0:" if others else "")
    print(f"""
Triton is serving {", ".join(f"`{e}`" for e in ensembles)} (Ctrl-C stops it){replicas}
  HTTP     {server.http_url}   (KServe v2)
  gRPC     {server.grpc_url}
  metrics  {server.metrics_url}
  log      {server.log_file}{others}
{monitoring + chr(10) if monitoring else ""}
Try it:
  curl -s {server.http_url}/v2/models/churn/infer -H 'Content-Type: application/json' \\
    -d '{_example_body()}'
{text_example}""", flush=True)
    def rolled(done: list[int]) -> None:
        if rolled_file is not None:
            rolled_file.write_text(f"restarted replica(s) {', '.join(map(str, done))} one by "
                                   "one\n")

    code = fleet.wait(drain=stack.drain, enable=stack.enable, on_rolled=rolled)
    stack.stop()  # before tritonserver: the sidecar would see it go and complain
    if code is None:
        logger.info("stopping tritonserver")
    fleet.stop()  # also closes the log when tritonserver exited by itself
    if code is None:
        return 0
    # Even an exit code of 0 is a failure here: nothing asked tritonserver to stop.
    # 40 lines: an unload under the sidecar's probes of every entry point logs ~20 of its own
    print(f"error: tritonserver exited by itself with code {code}; last log lines:\n"
          f"{server.log_tail(40)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
