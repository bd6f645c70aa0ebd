"""The serve command: run the embedded Triton stack in the foreground (what `make up` runs).

    python -m tritonkit.serve.cli --http-port 8000 --grpc-port 8001 --metrics-port 8002

Every option falls back to an environment variable (TRITONKIT_HTTP_PORT, …).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from tritonkit.errors import ServerInterrupted, TritonKitError
from tritonkit.paths import PROJECT_ROOT
from tritonkit.serve.server import ServerSettings, TritonServer

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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    server = TritonServer(ServerSettings(
        model_repository=args.model_repository, host=args.host, http_port=args.http_port,
        grpc_port=args.grpc_port, metrics_port=args.metrics_port, log_file=args.log_file,
    ))
    # SIGTERM (make down, a supervisor) and Ctrl-C only set a flag that start() and wait()
    # poll; the shutdown itself runs here, in the main flow.
    def _request_stop(signum: int, frame: FrameType | None) -> None:
        server.request_stop()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    try:
        server.start(timeout_s=args.start_timeout_s)
    except ServerInterrupted:
        return 0
    except TritonKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"""
Triton is serving the `churn` ensemble (Ctrl-C stops it)
  HTTP     {server.http_url}   (KServe v2)
  gRPC     {server.grpc_url}
  metrics  {server.metrics_url}
  log      {server.log_file}

Try it:
  curl -s {server.http_url}/v2/models/churn/infer -H 'Content-Type: application/json' \\
    -d '{EXAMPLE_BODY}'
""", flush=True)
    code = server.wait()
    if code is None:
        logger.info("stopping tritonserver")
        server.stop(check=False)
        return 0
    print(f"tritonserver exited by itself with code {code}; log:\n{server.log_tail()}",
          file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
