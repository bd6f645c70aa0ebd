#!/usr/bin/env python3
"""Predict churn for customers in a CSV or JSON file through the `churn` ensemble.

    python scripts/predict.py customers.csv --protocol grpc --url 127.0.0.1:8001
    python scripts/predict.py artifacts/churn/1/test.csv --limit 5 --packed
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tritonkit.client.churn import ChurnClient, read_customers
from tritonkit.errors import CustomerError, ServerError, ServerUnavailableError

#: Exit codes; argparse exits with 2 for a bad command line.
EXIT_BAD_INPUT = 1
EXIT_UNREACHABLE = 3
EXIT_SERVER_FAILED = 4
EPILOG = """\
exit codes:
  0  every customer was predicted
  1  bad input: the file is missing or is not customer CSV/JSON, a customer has a bad field
     (the error names the row and the field), or the server refused a customer (e.g. an
     unknown category)
  2  bad command line
  3  the server cannot be reached or did not answer in time: is `make up` running?
  4  the server failed on a valid request (e.g. the churn model is not loaded)
Every failure is one line on stderr, starting with "error:".
"""


def host_port(text: str) -> str:
    """A `host:port` URL (an `http://` prefix is dropped), or argparse's usage error."""
    url = text.strip().removeprefix("http://").rstrip("/")
    host, _, port = url.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port, e.g. 127.0.0.1:8000")
    return url


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, help="customers: CSV with Telco columns, or JSON list")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http",
                        help="KServe v2 protocol to use")
    parser.add_argument("--url", type=host_port, default=None,
                        help="host:port (default 127.0.0.1:8000 for http, :8001 for grpc; "
                             "env TRITONKIT_URL)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N customers")
    parser.add_argument("--timeout-s", type=float, default=10.0,
                        help="per-request timeout in seconds")
    parser.add_argument("--packed", action="store_true",
                        help="call churn_packed: the same customers as two tensors (numeric, "
                             "categorical) instead of 19, which Triton handles for less")
    args = parser.parse_args()
    if args.limit is not None and args.limit < 0:
        parser.error(f"--limit must be 0 or more, not {args.limit}")
    url = args.url
    if url is None and os.environ.get("TRITONKIT_URL"):
        try:
            url = host_port(os.environ["TRITONKIT_URL"])
        except argparse.ArgumentTypeError as exc:
            parser.error(f"TRITONKIT_URL: {exc}")
    url = url or ("127.0.0.1:8000" if args.protocol == "http" else "127.0.0.1:8001")

    try:
        customers = read_customers(args.input, limit=args.limit)
    except OSError as exc:
        return fail(f"cannot read {args.input}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    except CustomerError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    client = ChurnClient(url, protocol=args.protocol, timeout_s=args.timeout_s,
                         packed=args.packed)
    try:
        predictions = client.predict(customers)
    except CustomerError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except ServerUnavailableError as exc:
        return fail(str(exc), EXIT_UNREACHABLE)
    except ServerError as exc:
        return fail(str(exc), EXIT_BAD_INPUT if exc.bad_request else EXIT_SERVER_FAILED)
    finally:
        client.close()
    print(f"{'customer':<14} {'churn_probability':>17}  {'risk_level':<10} model_version")
    for p in predictions:
        print(f"{p.customer:<14} {p.churn_probability:>17.4f}  {p.risk_level:<10} "
              f"{p.model_version}")
    return 0


def fail(message: str, code: int) -> int:
    """Print `message` as one `error:` line on stderr and return the exit code."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
