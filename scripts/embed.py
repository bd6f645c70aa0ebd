#!/usr/bin/env python3
"""Embed texts through a text-embedding ensemble (`minilm`) and print them as JSON.

    python scripts/embed.py "How do I open a file?" "A for loop iterates."
    python scripts/embed.py --file texts.txt --protocol grpc --url 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tritonkit.client.embedding import (
    DEFAULT_MODEL,
    MAX_ROWS_PER_REQUEST,
    EmbeddingClient,
    TextError,
)
from tritonkit.errors import ServerError, ServerUnavailableError

#: Exit codes; argparse exits with 2 for a bad command line.
EXIT_BAD_INPUT = 1
EXIT_UNREACHABLE = 3
EXIT_SERVER_FAILED = 4
EPILOG = """\
output: one JSON object on stdout, {"model", "dimension", "embeddings": [{"text", "embedding"}]}
exit codes:
  0  every text was embedded
  1  bad input: the file is missing or not UTF-8, no texts, a text is empty (the error names
     its row), or the server refused a text
  2  bad command line
  3  the server cannot be reached or did not answer in time: is `make up` running?
  4  the server failed on a valid request (e.g. the model is not loaded)
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
    parser.add_argument("texts", nargs="*", help="texts to embed (or --file)")
    parser.add_argument("--file", type=Path, default=None,
                        help="a UTF-8 file with one text a line (blank lines are skipped)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the ensemble to call")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http",
                        help="KServe v2 protocol to use")
    parser.add_argument("--url", type=host_port, default=None,
                        help="host:port (default 127.0.0.1:8000 for http, :8001 for grpc; "
                             "env TRITONKIT_URL)")
    parser.add_argument("--batch-size", type=int, default=MAX_ROWS_PER_REQUEST,
                        help="texts per request (at most the model's max_batch_size)")
    parser.add_argument("--timeout-s", type=float, default=10.0,
                        help="per-request timeout in seconds")
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error(f"--batch-size must be 1 or more, not {args.batch_size}")
    url = args.url
    if url is None and os.environ.get("TRITONKIT_URL"):
        try:
            url = host_port(os.environ["TRITONKIT_URL"])
        except argparse.ArgumentTypeError as exc:
            parser.error(f"TRITONKIT_URL: {exc}")
    url = url or ("127.0.0.1:8000" if args.protocol == "http" else "127.0.0.1:8001")

    texts = list(args.texts)
    if args.file is not None:
        try:
            texts += [line for line in args.file.read_text(encoding="utf-8").splitlines()
                      if line.strip()]
        except OSError as exc:
            return fail(f"cannot read {args.file}: {exc.strerror or exc}", EXIT_BAD_INPUT)
        except UnicodeDecodeError as exc:
            return fail(f"{args.file} is not UTF-8 (byte offset {exc.start})", EXIT_BAD_INPUT)
    if not texts:
        return fail("no texts: give them as arguments or with --file", EXIT_BAD_INPUT)

    client = EmbeddingClient(url, protocol=args.protocol, model=args.model,
                             timeout_s=args.timeout_s, batch_size=args.batch_size)
    try:
        vectors = client.embed(texts)
    except TextError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except ServerUnavailableError as exc:
        return fail(str(exc), EXIT_UNREACHABLE)
    except ServerError as exc:
        return fail(str(exc), EXIT_BAD_INPUT if exc.bad_request else EXIT_SERVER_FAILED)
    finally:
        client.close()
    print(json.dumps({
        "model": args.model,
        "dimension": int(vectors.shape[1]),
        "embeddings": [{"text": t, "embedding": [round(float(x), 7) for x in v]}
                       for t, v in zip(texts, vectors, strict=True)],
    }))
    return 0


def fail(message: str, code: int) -> int:
    """Print `message` as one `error:` line on stderr and return the exit code."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
