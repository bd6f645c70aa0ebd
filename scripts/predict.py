#!/usr/bin/env python3
"""Predict churn for customers in a CSV or JSON file through the `churn` ensemble.

    python scripts/predict.py customers.csv --protocol grpc --url 127.0.0.1:8001
    python scripts/predict.py artifacts/churn/1/test.csv --limit 5 --packed
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from tritonkit.client.churn import ChurnClient
from tritonkit.client.command_line import (
    EXIT_BAD_INPUT,
    add_server_options,
    exit_on_failure,
    fail,
    server_url,
)
from tritonkit.client.customers import read_customers
from tritonkit.errors import CustomerError

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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, help="customers: CSV with Telco columns, or JSON list")
    add_server_options(parser)
    parser.add_argument("--limit", type=int, default=None, help="only the first N customers")
    parser.add_argument("--timeout-s", type=float, default=10.0,
                        help="per-request timeout in seconds")
    parser.add_argument("--packed", action="store_true",
                        help="call churn_packed: the same customers as two tensors (numeric, "
                             "categorical) instead of 19, which Triton handles for less")
    args = parser.parse_args()
    if args.limit is not None and args.limit < 0:
        parser.error(f"--limit must be 0 or more, not {args.limit}")
    url = server_url(parser, args)

    try:
        customers = read_customers(args.input, limit=args.limit)
    except OSError as exc:
        return fail(f"cannot read {args.input}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    except CustomerError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    client = ChurnClient(url, protocol=args.protocol, timeout_s=args.timeout_s,
                         packed=args.packed)
    with exit_on_failure(CustomerError), contextlib.closing(client):
        predictions = client.predict(customers)
    print(f"{'customer':<14} {'churn_probability':>17}  {'risk_level':<10} model_version")
    for p in predictions:
        print(f"{p.customer_id:<14} {p.churn_probability:>17.4f}  {p.risk_level:<10} "
              f"{p.model_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
