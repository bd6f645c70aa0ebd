"""The gateway's command line: serve, and the keys and certificates it needs.

    python -m tritonkit.gateway.cli serve --triton-url 127.0.0.1:8001 --port 8080
    python -m tritonkit.gateway.cli api-key            # the development keys (make api-key)
    python -m tritonkit.gateway.cli add-key --name billing     # a new key, shown once
    python -m tritonkit.gateway.cli certs              # a self-signed pair (make certs)

Every `serve` option falls back to an environment variable TRITONKIT_GATEWAY_<OPTION>.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from tritonkit.errors import TritonKitError
from tritonkit.gateway.auth import add_key, ensure_dev_keys
from tritonkit.gateway.settings import (
    CERTS_DIR,
    DEFAULT_KEYS_FILE,
    GatewaySettings,
    production_problems,
)
from tritonkit.gateway.tls import make_self_signed

logger = logging.getLogger(__name__)
_ENV = "TRITONKIT_GATEWAY_"
#: One line of help per setting (the dataclass's field comments, kept here for --help).
_HELP = {
    "triton_url": "host:port of Triton: its gRPC port for grpc, HTTP port for http; several "
                  "replicas comma-separated (least outstanding requests first, a failed one "
                  "ejected, a call it did not run retried on another)",
    "protocol": "protocol to Triton: grpc or http (http costs the gateway less CPU per call)",
    "host": "address to bind",
    "port": "port to listen on",
    "tls_cert": "TLS certificate (PEM); with --tls-key the gateway serves HTTPS",
    "tls_key": "TLS private key (PEM)",
    "keys_file": "key store: JSON with the SHA-256 of each API key (required outside dev mode)",
    "dev_mode": "development mode: the development keys, plain HTTP; `make up` and `make "
                "gateway` use it. Outside it the gateway refuses development keys, an empty or "
                "unreadable key store, and plain HTTP without --plain-http",
    "plain_http": "serve plain HTTP outside dev mode (only behind a proxy that terminates TLS)",
    "docs": "serve /docs and /openapi.json",
    "metrics_port": "serve /metrics on this port (plain HTTP, internal) instead of the public "
                    "one",
    "header_timeout_s": "longest a request's headers may take to arrive, seconds (408)",
    "body_timeout_s": "longest a request's body may take to arrive after its headers, s (408)",
    "keep_alive_timeout_s": "idle seconds before a kept-alive connection is closed",
    "max_connections": "connections open at once; a request beyond gets 503 and Retry-After",
    "rate_limit_per_key": "customers per API key (a batch of n costs n), e.g. 500/second",
    "rate_limit_global": "customers for all keys together, e.g. 5000/second",
    "rate_limit_unauthenticated": "requests without a valid key (401s, /healthz, /readyz, "
                                  "/metrics, /docs) per client address, e.g. 20/second",
    "rate_limit_storage": "rate-limit counters: memory:// (per gateway process) or "
                          "async+redis://host:6379 (shared by every gateway)",
    "rate_limit_fail_open": "serve when the rate-limit store is unreachable (false: 503)",
    "triton_admin_url": "Triton's HTTP host:port for /admin/models/<name>/load and the version "
                        "loads, one per replica in --triton-url's order (default: "
                        "--triton-url when --protocol is http)",
    "triton_admin_key_file": "file with the key of Triton's restricted APIs, which the admin "
                             "reload sends",
    "triton_timeout_s": "deadline of one call to Triton, seconds",
    "coalesce": "coalesce concurrent /predict calls into one Triton request",
    "coalesce_max_wait_s": "longest a call waits for others to join its Triton request, s",
    "coalesce_max_rows": "most customers in one coalesced Triton request",
    "coalesce_max_in_flight": "Triton requests in flight from the coalescer before calls queue",
    "coalesce_max_pending_rows": "most customers the coalescer holds, queued or in flight; a "
                                 "/predict beyond gets 503 with Retry-After",
    "max_batch": "most customers in one /predict/batch request",
    "max_body_bytes": "largest request body, bytes (413 beyond)",
    "replica_eject_failures": "consecutive calls a replica cannot take (or 500s another "
                              "replica answers, or failed readiness checks) that eject it",
    "replica_health_interval_s": "seconds between health checks of each replica",
    "rollout_file": "JSON file with the rollout's weights ({\"weights\": {\"1\": 95, \"2\": "
                    "5}, \"stable\": \"1\"}), re-read when it changes",
    "breaker_failures": "consecutive Triton failures that open the circuit breaker",
    "breaker_reset_s": "cool-down of an open breaker before one probe, seconds",
    "fallback": "answer with the fallback model while Triton cannot (false: 503)",
    "ready_cache_s": "how long a /readyz inference is reused, seconds",
    "model_version": "version of the churn artefacts (schema, fallback model) to load",
}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    defaults = GatewaySettings()
    for field in dataclasses.fields(GatewaySettings):
        default: Any = getattr(defaults, field.name)
        env = _ENV + field.name.upper()
        kind: Any
        if isinstance(default, bool):
            kind = _bool
        elif isinstance(default, (int, float)):
            kind = type(default)
        elif field.name in ("tls_cert", "tls_key", "keys_file", "triton_admin_key_file",
                            "rollout_file"):
            kind = Path
        elif field.name == "metrics_port":
            kind = int
        else:
            kind = str
        if os.environ.get(env, "") != "":
            default = kind(os.environ[env])
        flag = f"--{field.name.replace('_', '-')}"
        text = f"{_HELP[field.name]} (env {env}; default: {default})"
        if kind is _bool:  # `--dev-mode` alone, or `--dev-mode false`
            parser.add_argument(flag, dest=field.name, type=kind, nargs="?", const=True,
                                default=default, metavar="true|false", help=text)
            continue
        parser.add_argument(flag, dest=field.name, type=kind, default=default,
                            choices=["grpc", "http"] if field.name == "protocol" else None,
                            help=text)
    parser.add_argument("--log-level", default=os.environ.get(_ENV + "LOG_LEVEL", "info"),
                        help="uvicorn and gateway log level (env TRITONKIT_GATEWAY_LOG_LEVEL)")
    parser.add_argument("--access-log", action="store_true",
                        help="log every request (path and status; keys are never logged)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The public /predict gateway in front of "
                                                 "Triton, and its keys and certificates.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve_options(commands.add_parser("serve", help="serve the gateway (foreground)"))
    keys = commands.add_parser("api-key", help="print the development keys, creating them on "
                                               "first use (make api-key)")
    keys.add_argument("--keys-file", type=Path, default=DEFAULT_KEYS_FILE)
    add = commands.add_parser("add-key", help="add a key to the store and print it once")
    add.add_argument("--name", required=True, help="who the key is for (in logs and limits)")
    add.add_argument("--role", choices=["caller", "admin"], default="caller")
    add.add_argument("--keys-file", type=Path, default=DEFAULT_KEYS_FILE)
    certs = commands.add_parser("certs", help="write a self-signed pair (make certs)")
    certs.add_argument("--out", type=Path, default=CERTS_DIR)
    certs.add_argument("--overwrite", action="store_true")
    return parser.parse_args(argv)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tritonkit.gateway.app import create_app
    from tritonkit.gateway.edge import server_config

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(GatewaySettings)}
    settings = GatewaySettings(**values)
    problems = production_problems(settings)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    if not settings.key_store.exists():
        logger.warning("no key store at %s: every /predict gets 401 (make api-key creates "
                       "the development keys)", settings.key_store)
    config = server_config(create_app(settings), settings, log_level=args.log_level,
                           access_log=args.access_log)
    # uvicorn re-raises the SIGINT it shut down on once it is done: that is a clean stop.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "api-key":
            keys = ensure_dev_keys(args.keys_file)
            print(f"development API key:   {keys['caller']}")
            print(f"development admin key: {keys['admin']}")
            print(f"(hashes in {args.keys_file}; send a key in the X-API-Key header)")
            return 0
        if args.command == "add-key":
            print(add_key(args.keys_file, name=args.name, role=args.role))
            print(f"(shown once: {args.keys_file} keeps only its hash; POST "
                  "/admin/keys/reload or a restart makes a running gateway take it)",
                  file=sys.stderr)
            return 0
        cert, key = make_self_signed(args.out, overwrite=args.overwrite)
        print(f"certificate {cert}\nkey         {key}")
        return 0
    except (TritonKitError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
