"""The gateway's command line: serve, and the keys and certificates it needs.

    python -m tritonkit.gateway.cli serve --triton-url 127.0.0.1:8000 --port 8080
    python -m tritonkit.gateway.cli api-key            # the development keys (make api-key)
    python -m tritonkit.gateway.cli add-key --name billing     # a new key, shown once
    python -m tritonkit.gateway.cli certs              # a self-signed pair (make certs)

Every `serve` option is a field of `GatewaySettings`, whose description is its `--help`, and
falls back to the environment variable TRITONKIT_GATEWAY_<OPTION> (`tritonkit.settings`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from tritonkit.errors import TritonKitError
from tritonkit.gateway.auth import add_key, ensure_dev_keys
from tritonkit.gateway.settings import (
    CERTS_DIR,
    DEFAULT_KEYS_FILE,
    GatewaySettings,
    production_problems,
)
from tritonkit.gateway.tls import make_self_signed
from tritonkit.settings import add_flags, settings_from

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The public /predict gateway in front of "
                                                 "Triton, and its keys and certificates.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_flags(commands.add_parser("serve", help="serve the gateway (foreground)"),
              GatewaySettings)
    keys = commands.add_parser("api-key", help="print the development keys, creating them on "
                                               "first use (make api-key)")
    keys.add_argument("--keys-file", type=Path, default=DEFAULT_KEYS_FILE,
                      help="the development key store (default: %(default)s)")
    add = commands.add_parser("add-key", help="add a key to the store and print it once")
    add.add_argument("--name", required=True, help="who the key is for (in logs and limits)")
    add.add_argument("--role", choices=["caller", "admin"], default="caller",
                     help="caller: /predict; admin: /admin too (default: caller)")
    add.add_argument("--keys-file", type=Path, default=DEFAULT_KEYS_FILE,
                     help="the key store to add to (default: %(default)s)")
    certs = commands.add_parser("certs", help="write a self-signed pair (make certs)")
    certs.add_argument("--out", type=Path, default=CERTS_DIR,
                       help="folder for the pair (default: %(default)s)")
    certs.add_argument("--overwrite", action="store_true", help="replace an existing pair")
    return parser.parse_args(argv)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tritonkit.gateway.app import gateway_app
    from tritonkit.gateway.core import Gateway
    from tritonkit.gateway.edge import server_config

    settings = settings_from(GatewaySettings, args)
    problems = production_problems(settings)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    if not settings.key_store.exists():
        logger.warning("no key store at %s: every /predict gets 401 (make api-key creates "
                       "the development keys)", settings.key_store)
    gateway = Gateway(settings)
    config = server_config(gateway_app(gateway), gateway, log_level=settings.log_level,
                           access_log=settings.access_log)
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
