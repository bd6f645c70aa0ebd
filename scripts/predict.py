#!/usr/bin/env python3
"""Predict churn for customers in a CSV or JSON file through the `churn` ensemble.

    python scripts/predict.py customers.csv --protocol grpc --url 127.0.0.1:8001
    python scripts/predict.py artifacts/churn/1/test.csv --limit 5
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tritonclient.utils import InferenceServerException

from tritonkit.client.churn import ChurnClient, read_customers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="customers: CSV with Telco columns, or JSON list")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http",
                        help="KServe v2 protocol to use")
    parser.add_argument("--url", default=None,
                        help="host:port (default 127.0.0.1:8000 for http, :8001 for grpc; "
                             "env TRITONKIT_URL)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N customers")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per-request timeout")
    args = parser.parse_args()
    url = args.url or os.environ.get("TRITONKIT_URL") or (
        "127.0.0.1:8000" if args.protocol == "http" else "127.0.0.1:8001")

    customers = read_customers(args.input)[: args.limit]
    client = ChurnClient(url, protocol=args.protocol, timeout_s=args.timeout_s)
    try:
        predictions = client.predict(customers)
    except (InferenceServerException, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"{'customer':<14} {'churn_probability':>17}  {'risk_level':<10} model_version")
    for p in predictions:
        print(f"{p.customer:<14} {p.churn_probability:>17.4f}  {p.risk_level:<10} "
              f"{p.model_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
