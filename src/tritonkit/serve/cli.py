"""The serve command: run the embedded Triton stack in the foreground (what `make up` runs).

    python -m tritonkit.serve.cli --http-port 8000 --pid-file .cache/serve.pid
    python -m tritonkit.serve.cli --stop --pid-file .cache/serve.pid   # what `make down` runs
    python -m tritonkit.serve.cli --replicas 3 ...                      # make up REPLICAS=3
    python -m tritonkit.serve.cli --rolling-restart --pid-file ...      # make restart

Every option falls back to an environment variable (TRITONKIT_HTTP_PORT, …). The pid file names
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
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from types import FrameType

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

logger = logging.getLogger(__name__)


EXAMPLE_BODY = (
    '{"inputs":['
    '{"name":"tenure","shape":[1,1],"datatype":"FP32","data":[2]},'
    '{"name":"monthlycharges","shape":[1,1],"datatype":"FP32","data":[70.35]},'
    '{"name":"totalcharges","shape":[1,1],"datatype":"FP32","data":[140.7]},'
    '{"name":"seniorcitizen","shape":[1,1],"datatype":"INT32","data":[0]},'
    '{"name":"gender","shape":[1,1],"datatype":"BYTES","data":["Female"]},'
    '{"name":"partner","shape":[1,1],"datatype":"BYTES","data":["No"]},'
    '{"name":"dependents","shape":[1,1],"datatype":"BYTES","data":["No"]},'
    '{"name":"phoneservice","shape":[1,1],"datatype":"BYTES","data":["Yes"]},'
    '{"name":"multiplelines","shape":[1,1],"datatype":"BYTES","data":["No"]},'
    '{"name":"internetservice","shape":[1,1],"datatype":"BYTES","data":["Fiber optic"]},'
    '{"name":"onlinesecurity","shape":[1,1],"datatype":"BYTES","data":["No"]},'
    '{"name":"onlinebackup","shape":[1,1],"datatype":"BYTES","data":["No"]},'
    '{"name":"deviceprotection","shape":[1,1],"datatype":"BYTES","data":["No"]},'
    '{"name":"techsupport","shape":[1,1],"datatype":"BYTES","data":["No"]},'
    '{"name":"streamingtv","shape":[1,1],"datatype":"BYTES","data":["No"]},'
    '{"name":"streamingmovies","shape":[1,1],"datatype":"BYTES","data":["No"]},'
    '{"name":"contract","shape":[1,1],"datatype":"BYTES","data":["Month-to-month"]},'
    '{"name":"paperlessbilling","shape":[1,1],"datatype":"BYTES","data":["Yes"]},'
    '{"name":"paymentmethod","shape":[1,1],"datatype":"BYTES","data":["Electronic check"]}]}'
)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_port(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value else None


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "")
    return default if not value else value.lower() not in ("0", "false", "no", "off")


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the model repository with tritonserver.")
    parser.add_argument("--model-repository", type=Path,
                        default=Path(os.environ.get("TRITONKIT_MODEL_REPOSITORY",
                                                    PROJECT_ROOT / "model_repository")),
                        help="repository to serve (env TRITONKIT_MODEL_REPOSITORY)")
    parser.add_argument("--host", default=os.environ.get("TRITONKIT_HOST", "127.0.0.1"),
                        help="address to bind (env TRITONKIT_HOST)")
    parser.add_argument("--http-port", type=int, default=_env_int("TRITONKIT_HTTP_PORT", 8000),
                        help="KServe v2 HTTP port (env TRITONKIT_HTTP_PORT)")
    parser.add_argument("--grpc-port", type=int, default=_env_int("TRITONKIT_GRPC_PORT", 8001),
                        help="KServe v2 gRPC port (env TRITONKIT_GRPC_PORT)")
    parser.add_argument("--metrics-port", type=int,
                        default=_env_int("TRITONKIT_METRICS_PORT", 8002),
                        help="Prometheus /metrics port (env TRITONKIT_METRICS_PORT)")
    parser.add_argument("--start-timeout-s", type=float, default=120.0,
                        help="how long to wait for readiness before giving up")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="tritonserver log (default: a file in a temporary folder)")
    parser.add_argument("--pid-file", type=Path, default=os.environ.get("TRITONKIT_PID_FILE"),
                        help="write this CLI's PID here while it runs; refuse to start while it "
                             "names a running serve CLI (env TRITONKIT_PID_FILE; default: none)")
    parser.add_argument("--summary-latencies", action=argparse.BooleanOptionalAction,
                        default=_env_flag("TRITONKIT_SUMMARY_LATENCIES", True),
                        help="latency quantiles on /metrics, for the sidecar's p95 alert; they "
                             "cost tritonserver CPU under load (env TRITONKIT_SUMMARY_LATENCIES; "
                             "default on)")
    parser.add_argument("--admin-key-file", type=Path,
                        default=Path(os.environ.get("TRITONKIT_ADMIN_KEY_FILE",
                                                    CACHE / "triton-admin-key")),
                        help="the key Triton's model-repository API (load/unload) requires in "
                             "the header admin-key; made once if absent (env "
                             "TRITONKIT_ADMIN_KEY_FILE; default .cache/triton-admin-key)")
    parser.add_argument("--monitor", action=argparse.BooleanOptionalAction,
                        default=_env_flag("TRITONKIT_MONITOR", True),
                        help="run the monitoring sidecar in this process (env "
                             "TRITONKIT_MONITOR; default on)")
    parser.add_argument("--monitor-port", type=int, default=_env_int("TRITONKIT_MONITOR_PORT", 0),
                        help="the sidecar's /health /alerts /report /metrics port, 0 for any "
                             "free one (env TRITONKIT_MONITOR_PORT; default 0)")
    parser.add_argument("--prometheus-port", type=int,
                        default=_env_port("TRITONKIT_PROMETHEUS_PORT"),
                        help="start Prometheus (Debian's /usr/bin/prometheus) on this port with "
                             "monitoring/prometheus/ rules (env TRITONKIT_PROMETHEUS_PORT; "
                             "default: not started)")
    parser.add_argument("--alertmanager-port", type=int,
                        default=_env_port("TRITONKIT_ALERTMANAGER_PORT"),
                        help="start Alertmanager (Debian's prometheus-alertmanager) on this port "
                             "with monitoring/alertmanager/alertmanager.yml (env "
                             "TRITONKIT_ALERTMANAGER_PORT; default: not started)")
    parser.add_argument("--monitoring-dir", type=Path,
                        default=Path(os.environ.get("TRITONKIT_MONITORING_DIR",
                                                    CACHE / "monitoring")),
                        help="Prometheus' and Alertmanager's data and logs, one folder per port "
                             "(env TRITONKIT_MONITORING_DIR; default .cache/monitoring)")
    parser.add_argument("--gateway-port", type=int,
                        default=_env_int("TRITONKIT_GATEWAY_PORT", 0),
                        help="serve the public /predict gateway on this port in front of Triton "
                             "(env TRITONKIT_GATEWAY_PORT; 0: no gateway, the default; make up "
                             "passes GATEWAY_PORT=8080)")
    parser.add_argument("--cache-size-bytes", type=int,
                        default=_env_int("TRITONKIT_CACHE_SIZE_BYTES", 64 << 20),
                        help="Triton's response cache, for the models whose spec turns it on "
                             "(env TRITONKIT_CACHE_SIZE_BYTES; 0: off; default 64 MiB)")
    parser.add_argument("--replicas", type=int, default=_env_int("TRITONKIT_REPLICAS", 1),
                        help="tritonservers to run behind the gateway, replica i on the ports "
                             f"+ {PORT_STRIDE} x i; with more than one, a replica that exits "
                             "is started again (env TRITONKIT_REPLICAS; default 1)")
    parser.add_argument("--stop", action="store_true",
                        help="stop the serve CLI named in --pid-file, wait until it has exited, "
                             "and exit (what `make down` runs)")
    parser.add_argument("--rolling-restart", action="store_true",
                        help="ask the serve CLI named in --pid-file to restart its replicas one "
                             "by one (each drained at the gateway first), wait until it is done, "
                             "and exit (what `make restart` runs)")
    args = parser.parse_args(argv)
    if (args.stop or args.rolling_restart) and args.pid_file is None:
        parser.error("--stop and --rolling-restart need --pid-file (or TRITONKIT_PID_FILE)")
    if args.replicas < 1:
        parser.error(f"--replicas must be at least 1, not {args.replicas}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per health probe otherwise
    if args.stop:
        return stop_serve_cli(args.pid_file)
    if args.rolling_restart:
        return request_rolling_restart(args.pid_file)
    try:
        key = admin_key(args.admin_key_file)
    except (TritonKitError, OSError) as exc:
        print(f"error: cannot read or make the admin key {args.admin_key_file}: {exc}",
              file=sys.stderr)
        return 1
    try:
        fleet = TritonFleet(replica_settings(ServerSettings(
            model_repository=args.model_repository, host=args.host, http_port=args.http_port,
            grpc_port=args.grpc_port, metrics_port=args.metrics_port, log_file=args.log_file,
            summary_latencies=args.summary_latencies, admin_key=key,
            cache_size_bytes=args.cache_size_bytes,
        ), args.replicas), restart=args.replicas > 1, start_timeout_s=args.start_timeout_s)
    except TritonKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stack = StackOptions(monitor=args.monitor, monitor_port=args.monitor_port,
                         prometheus_port=args.prometheus_port,
                         alertmanager_port=args.alertmanager_port, admin_key=key,
                         admin_key_file=args.admin_key_file, workdir=args.monitoring_dir,
                         gateway_port=args.gateway_port)
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
    if args.pid_file is None:
        return serve(fleet, stack)
    try:
        claim_pid_file(args.pid_file)
    except TritonKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        return serve(fleet, stack, rolled_file=rolling_status_file(args.pid_file))
    finally:
        release_pid_file(args.pid_file)


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
    -d '{EXAMPLE_BODY}'
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
