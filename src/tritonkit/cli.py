"""`tritonkit`: the package's command, one subcommand per long-running part.

    tritonkit build                       # models, variants, repositories, cards
    tritonkit serve --http-port 8000      # Triton and what runs beside it (what `make up` runs)
    tritonkit monitor --triton-url ...    # the monitoring sidecar alone (e.g. a remote Triton)
    tritonkit gateway serve ...           # the /predict gateway alone
    tritonkit rollout --version 2         # canary, blue-green or rolling, gated (make rollout)
    tritonkit secrets                     # keys, TLS pair and passwords for docker compose

Each subcommand is its module's own command line (`python -m tritonkit.serve.cli` …), with
every option documented in its `--help`. Predicting from a file is `scripts/predict.py`.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module with a `main(argv) -> int`, what it does)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build": ("tritonkit.builder.cli",
              "build, gate and render every model of the spec (make build-engines)"),
    "serve": ("tritonkit.serve.cli", "serve the embedded stack in the foreground (make up)"),
    "monitor": ("tritonkit.monitor.cli", "run the monitoring sidecar against a Triton"),
    "gateway": ("tritonkit.gateway.cli", "the /predict gateway, its keys and certificates"),
    "rollout": ("tritonkit.rollout.cli",
                "roll a model version out through the gateway, gated (make rollout)"),
    "secrets": ("tritonkit.serve.secrets",
                "the production stack's secrets for docker compose (make production-secrets)"),
}


def usage() -> str:
    lines = ["usage: tritonkit {" + ",".join(SUBCOMMANDS) + "} [options]", ""]
    lines += [f"  {name:<8} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "`tritonkit <subcommand> --help` lists its options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] not in SUBCOMMANDS:
        print(f"error: unknown subcommand {args[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[args[0]][0])
    return int(module.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
